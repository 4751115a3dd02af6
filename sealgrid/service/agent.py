"""The household agent, written once: the CLI, the demo, the benchmark and the security
battery all bid and read results through it.

One period of a household, in order:

1. read the market from the servers' signed ``MarketInfo`` (:meth:`Client.market`) and check
   the bid against its rules (:func:`~sealgrid.mechanism.bids.check_bid`);
2. :meth:`HouseholdAgent.prepare`: split the bid into one share payload per server
   (:mod:`sealgrid.protocol.encoding`) under a fresh one-time pseudonym, and keep the
   pseudonym in the durable :class:`PseudonymStore` *before* anything is sent, so the result
   can be fetched after a crash;
3. :meth:`HouseholdAgent.obtain`: every server's blind signature on the pseudonym (its tokens);
4. :meth:`HouseholdAgent.submit`: each server's share, signed by the pseudonym, each receipt
   checked;
5. :meth:`HouseholdAgent.result`: every server's share of ``q·V/L`` (the bid's accepted
   quantity times its side's rationing ratio, as a field element; ``D(k*)``, ``S(k*)`` and
   ``V`` stay secret), rebuilt (the shares must lie on one polynomial); with its own ``q`` the
   household rebuilds the exact ratio and applies the market's one rationing rule
   (:func:`sealgrid.mechanism.auction.traded_wh`); the issuer keys the pseudonym was served
   under are compared with those every server published.

Suppliers and grid operators read their totals with :func:`read_totals`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.auction import traded_wh
from sealgrid.mechanism.bids import Bid, BidRejected, Side, check_bid
from sealgrid.mechanism.market import Market
from sealgrid.protocol import encoding
from sealgrid.service import wire
from sealgrid.service.client import BidOutcome, Client, HouseholdClient, ServiceError
from sealgrid.service.household import Pseudonym
from sealgrid.service.keys import (
    TRUST,
    DataDirError,
    Registry,
    household_profile,
    load_signing_key,
    write_private,
)
from sealgrid.service.schedule import iso, parse_time
from sealgrid.service.wire import MarketInfo, Outcome, OutputShares, Receipt


class AgentError(Exception):
    """The household agent cannot go on (no such pseudonym, servers that disagree, …)."""


def encode_payloads(bid: Bid, market: Market, parties: int) -> list[bytes]:
    """Split one checked bid into one share payload per server (index = server)."""
    shares = encoding.encode_bid(
        bid.side is Side.BUY,
        bid.quantity_wh,
        bid.level,
        market.supplier_index(bid.supplier),
        encoding.Layout.of(market),
        parties=parties,
    )
    return [s.to_bytes() for s in shares]


def reconstruct(shares: Sequence[OutputShares]) -> list[int]:
    """Rebuild output values from every server's signed output share, checking they agree.

    Raises:
        AgentError: the shares are malformed or do not lie on one polynomial (a server lied).
    """
    try:
        values: list[int] = encoding.reconstruct(
            [encoding.OutputShare.from_bytes(s.shares) for s in shares]
        )
    except (ValueError, BidRejected) as exc:
        raise AgentError(f"the servers' shares do not agree: {exc}") from exc
    return values


def outcome_of(public: str) -> Outcome | None:
    """Read the public outcome a server signed (``PeriodStatement.outcome``,
    ``OutputShares.public``); None when there is none yet.

    Raises:
        AgentError: it is not a valid ``Outcome`` message.
    """
    if not public:
        return None
    try:
        return wire.decode(Outcome, public.encode())
    except wire.WireError as exc:
        raise AgentError(f"the public outcome is malformed: {exc}") from None


def joint_status(shares: Sequence[OutputShares]) -> str:
    """Every server's status of one output, joined (``cleared``, or e.g. ``cleared/pending``)."""
    return "/".join(sorted({s.status for s in shares}))


# --------------------------------------------------------------------------- the store


@dataclass
class PseudonymRecord:
    """What a household keeps of one period: the pseudonym key, the tokens fetched ahead for
    it, and, once it has bid, the bid's side and quantity (to read its own result)."""

    period: str
    key: Ed25519PrivateKey
    side: Side | None
    quantity_wh: int | None
    issuers: dict[int, bytes] = field(default_factory=dict)  # server -> SHA-256 of its key
    tokens: dict[int, bytes] = field(default_factory=dict)  # server -> unblinded signature

    def pseudonym(self) -> Pseudonym:
        """The pseudonym with the tokens kept for it."""
        return Pseudonym(self.period, self.key, dict(self.tokens), dict(self.issuers))


class PseudonymStore:
    """A household's one-time pseudonyms, one private file (mode 0600) per period.

    ``DIR/households/<household>.pseudonyms/<period without colons>.json`` holding the
    pseudonym's key seed, the bid's side and the digests of the issuer keys it was served
    under. Nothing here names the household to a server: the folder is the household's own.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @classmethod
    def of(cls, data_dir: Path, household: str) -> PseudonymStore:
        """The store of ``household`` in a data directory of ``sealgrid init``."""
        return cls(Path(data_dir) / "households" / f"{household}.pseudonyms")

    def path(self, period: str) -> Path:
        """The file of ``period``'s pseudonym."""
        return self.folder / (period.replace(":", "") + ".json")

    def save(self, record: PseudonymRecord) -> None:
        """Write (or rewrite) the record of its period."""
        seed = record.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        data = {
            "period": record.period,
            "seed": wire.b64e(seed),
            "side": record.side.value if record.side is not None else None,
            "quantity_wh": record.quantity_wh,
            "tokens": {str(i): wire.b64e(t) for i, t in sorted(record.tokens.items())},
            "issuers": {str(i): wire.b64e(d) for i, d in sorted(record.issuers.items())},
        }
        write_private(self.path(record.period), json.dumps(data).encode())

    def load(self, period: str) -> PseudonymRecord:
        """Read the record of ``period``.

        Raises:
            AgentError: no bid for that period on record here, or an unreadable record.
        """
        try:
            data = json.loads(self.path(period).read_text())
            key = Ed25519PrivateKey.from_private_bytes(wire.b64d(data["seed"]))
            issuers = {int(i): wire.b64d(d) for i, d in data.get("issuers", {}).items()}
            tokens = {int(i): wire.b64d(t) for i, t in data.get("tokens", {}).items()}
            side = None if data.get("side") is None else Side(data["side"])
            quantity = None if data.get("quantity_wh") is None else int(data["quantity_wh"])
            return PseudonymRecord(data["period"], key, side, quantity, issuers, tokens)
        except OSError:
            raise AgentError(f"no bid for {period} on record here") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentError(f"the record of {period} is unreadable: {exc}") from None


# --------------------------------------------------------------------------- the agent


@dataclass
class PreparedBid:
    """One checked bid made ready to send: its pseudonym and one payload per server."""

    bid: Bid
    pseudonym: Pseudonym
    payloads: list[bytes]


@dataclass(frozen=True)
class HouseholdResult:
    """What a household learns of its own bid in one period.

    ``status``: every server's status joined (``cleared`` when all agree it cleared);
    ``traded_wh`` is set when the bid cleared (0 when it was not accepted);
    ``issuer_keys_match`` None while a server's statement is missing.
    """

    period: str
    status: str
    outcome: Outcome | None
    accepted: bool | None
    traded_wh: Fraction | None
    issuer_keys_match: bool | None


class HouseholdAgent:
    """One household: its key, its supplier, its pseudonym store, and a client of the servers."""

    def __init__(
        self,
        client: HouseholdClient,
        supplier: str,
        store: PseudonymStore,
        market: tuple[MarketInfo, Market] | None = None,
    ) -> None:
        self.client = client
        self.supplier = supplier
        self.store = store
        self._market = market  # read from the servers on first use when not given

    @classmethod
    def from_data_dir(
        cls,
        data_dir: Path,
        household: str,
        *,
        registry: Registry | None = None,
        session: aiohttp.ClientSession | None = None,
        market: tuple[MarketInfo, Market] | None = None,
    ) -> HouseholdAgent:
        """The agent of ``household`` in a data directory of ``sealgrid init``.

        Raises:
            DataDirError: the registry, the household's key or its profile is missing.
        """
        data_dir = Path(data_dir)
        registry = registry or Registry.load(data_dir / "registry.json")
        key = load_signing_key(data_dir / "households" / f"{household}.key")
        supplier = household_profile(data_dir, household)["supplier"]
        client = HouseholdClient(registry, data_dir / TRUST, household, key, session)
        return cls(client, supplier, PseudonymStore.of(data_dir, household), market)

    @property
    def household(self) -> str:
        """The household's id."""
        return self.client.household

    async def __aenter__(self) -> HouseholdAgent:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def market(self) -> tuple[MarketInfo, Market]:
        """The market as server 0 publishes it (read once, then kept)."""
        if self._market is None:
            self._market = await self.client.market()
        return self._market

    async def check(self, side: str, quantity_kwh: Any, price: Any) -> Bid:
        """Check a bid given at the edge (kWh, currency per kWh) against the market's rules.

        Raises:
            AgentError: the bid breaks one or more rules (each named in the message).
        """
        _, market = await self.market()
        bid, errors = check_bid(market, self.household, side, quantity_kwh, price, self.supplier)
        if bid is None:
            raise AgentError("; ".join(str(e) for e in errors))
        return bid

    async def prepare(self, bid: Bid, period: str | None = None) -> PreparedBid:
        """Encode ``bid`` for ``period`` (default: the first open one) under the pseudonym whose
        tokens were fetched ahead, or a fresh one; the store keeps it before anything is sent.

        Raises:
            AgentError: this household has already bid for the period.
        """
        info, market = await self.market()
        period = period or info.first_open_period
        record = self._record(period)
        if record.side is not None:
            raise AgentError(f"a bid for {period} is already on record here (one per period)")
        record.side, record.quantity_wh = bid.side, bid.quantity_wh
        self.store.save(record)
        payloads = encode_payloads(bid, market, self.client.servers)
        return PreparedBid(bid, record.pseudonym(), payloads)

    async def fetch_tokens(self, periods: int) -> list[str]:
        """Fetch ahead the tokens of the next ``periods`` open periods (a fresh pseudonym each,
        every server's blind signature, over connections used for nothing else) and keep them,
        so that a bid later is not next to its issuance in time or connection.

        Returns:
            The periods that now hold a token from every server.

        Raises:
            ServiceError: a server could not be reached or answered what does not verify.
        """
        info = await self.client.market_info(0)  # now, not when the market was first read
        first = parse_time(info.first_open_period)
        done = []
        for k in range(periods):
            period = iso(first + dt.timedelta(seconds=k * info.period_seconds))
            record = self._record(period)
            pseudonym = record.pseudonym()
            if record.side is None:  # a period already bid in keeps what it has
                await self._obtain(record, pseudonym)
            if len(pseudonym.tokens) == self.client.servers:
                done.append(period)
        return done

    def _record(self, period: str) -> PseudonymRecord:
        """The kept record of ``period``, or a fresh pseudonym's (not yet saved)."""
        try:
            return self.store.load(period)
        except AgentError:
            return PseudonymRecord(period, Pseudonym.fresh(period).key, None, None)

    async def _obtain(self, record: PseudonymRecord, pseudonym: Pseudonym
                      ) -> dict[int, BidRejected]:
        """Every token ``pseudonym`` lacks, over fresh connections closed after each request,
        kept in ``record``; nothing is asked when it has them all."""
        if len(pseudonym.tokens) == self.client.servers:
            return {}
        issuing = self.client.fresh()
        async with issuing:
            refusals = await issuing.obtain(pseudonym)
        record.tokens, record.issuers = dict(pseudonym.tokens), dict(pseudonym.issuers)
        self.store.save(record)
        return refusals

    async def obtain(self, prepared: PreparedBid) -> dict[int, BidRejected]:
        """Get every missing token of the pseudonym (fresh connections); return refusals."""
        p = prepared.pseudonym
        return await self._obtain(self.store.load(p.period), p)

    async def submit(
        self,
        prepared: PreparedBid,
        *,
        servers: Sequence[int] | None = None,
        latency: list[float] | None = None,
    ) -> tuple[dict[int, Receipt], dict[int, BidRejected]]:
        """Send each server (or only ``servers``) its share; return receipts and refusals."""
        return await self.client.submit(
            prepared.pseudonym, prepared.payloads, servers=servers, latency=latency
        )

    async def send(self, prepared: PreparedBid) -> BidOutcome:
        """Obtain the tokens, then submit every share."""
        refusals = await self.obtain(prepared)
        receipts, more = await self.submit(prepared)
        return BidOutcome(prepared.pseudonym, receipts, {**refusals, **more})

    async def bid(self, bid: Bid, period: str | None = None) -> BidOutcome:
        """Prepare and send one checked bid."""
        return await self.send(await self.prepare(bid, period))

    async def result(self, period: str) -> HouseholdResult:
        """Fetch, rebuild and check this household's result for ``period``.

        Raises:
            AgentError: no bid on record, the servers' shares do not agree, or a server
                issued the pseudonym's token under a key it did not publish (it singled the
                household out).
            ServiceError: a server could not be reached or answered what does not verify.
        """
        record = self.store.load(period)
        if record.quantity_wh is None:
            raise AgentError(f"no bid for {period} on record here (only its tokens)")
        pseudonym = record.pseudonym()
        shares = await self.client.result(pseudonym)
        issuers_ok = await self.client.issuers_match(pseudonym)
        if issuers_ok is False:
            raise AgentError("a server issued this pseudonym under a key it did not publish")
        status = joint_status(shares)
        outcome = outcome_of(shares[0].public)
        accepted: bool | None = None
        traded: Fraction | None = None
        if status == "cleared":
            (output,) = reconstruct(shares)
            accepted = output != 0
            traded = traded_from_output(output, record.quantity_wh)
        return HouseholdResult(period, status, outcome, accepted, traded, issuers_ok)


def traded_from_output(output: int, accepted_wh: int) -> Fraction:
    """What an accepted quantity (a bid's, or a supplier's total on one side) traded, exactly,
    from its rebuilt output ``accepted·V/L`` (0: nothing accepted).

    Raises:
        AgentError: the output is not the accepted quantity times a rationing ratio.
    """
    if not output:
        return Fraction(0)
    try:
        ratio = encoding.side_ratio(output, accepted_wh)
    except ValueError as exc:
        raise AgentError(f"the rebuilt output is not a rationed amount: {exc}") from None
    return traded_wh(accepted_wh, ratio.numerator, ratio.denominator)


@dataclass(frozen=True)
class Totals:
    """A supplier's (or grid operator's) totals for one period."""

    period: str
    status: str
    outcome: Outcome | None
    bought_wh: Fraction | None
    sold_wh: Fraction | None


async def read_totals(
    client: Client, role: str, subject: str, period: str, key: Ed25519PrivateKey
) -> Totals:
    """Fetch a supplier's traded totals (or a grid operator's region totals) for ``period``.

    A supplier gets every server's shares of its customers' accepted totals and of the same
    totals times their side's rationing ratio (so it rebuilds the exact ratio, as each
    rationed customer can); an operator the region's traded volume ``V``, which is not public.

    Raises:
        AgentError: the servers' shares do not agree.
        ServiceError: a server could not be reached or answered what does not verify.
    """
    shares = await client.outputs(role, subject, period, key)
    status = joint_status(shares)
    outcome = outcome_of(shares[0].public)
    bought = sold = None
    if status == "cleared":
        values = reconstruct(shares)
        if role == "operator" and len(values) == 1:
            bought = sold = Fraction(values[0])
        elif role == "supplier" and len(values) == 4:
            q_bought, r_bought, q_sold, r_sold = values
            bought = traded_from_output(r_bought, q_bought)
            sold = traded_from_output(r_sold, q_sold)
        else:
            raise AgentError(f"the servers sent {len(values)} values for a {role}")
    return Totals(period, status, outcome, bought, sold)


__all__ = [
    "AgentError",
    "DataDirError",
    "HouseholdAgent",
    "HouseholdResult",
    "PreparedBid",
    "PseudonymRecord",
    "PseudonymStore",
    "ServiceError",
    "Totals",
    "encode_payloads",
    "outcome_of",
    "read_totals",
    "reconstruct",
]
