"""The household agent, written once: the CLI, the demo, the benchmark and the security
battery all bid and read results through it.

One period of a household, in order:

1. read the market from the servers' signed ``MarketInfo`` (:meth:`Client.market`) and check
   the bid against its rules (:func:`~sealgrid.mechanism.bids.check_bid`);
2. :meth:`HouseholdAgent.prepare`: split the bid into one share payload per server
   (:mod:`sealgrid.protocol.encoding`) under a fresh one-time pseudonym, and keep the
   pseudonym in the durable :class:`PseudonymStore` *before* anything is sent, so the result
   can be fetched after a crash;
3. :meth:`HouseholdAgent.obtain`: every server's token for the pseudonym (a VOPRF evaluation);
4. :meth:`HouseholdAgent.submit`: each server's share, signed by the pseudonym, each receipt
   checked;
5. :meth:`HouseholdAgent.result`: every server's share of ``q·V/L`` (the bid's accepted
   quantity times its side's rationing ratio, as a field element; ``D(k*)``, ``S(k*)`` and
   ``V`` stay secret), rebuilt (the shares must lie on one polynomial); with its own ``q`` the
   household rebuilds the exact ratio and applies the market's one rationing rule
   (:func:`sealgrid.mechanism.auction.traded_wh`); the issuer keys the pseudonym was served
   under are compared with those every server published.

Suppliers and grid operators read their totals with :func:`read_totals`.

The running market also settles every household from its smart meter (SPEC §7):

* **Credential.** Each household makes once a random credential ``κ`` (a field element,
  :class:`Credential`), kept 0600 in its own store with fixed Shamir shares per server. It
  enrols each server's share (signed by the household key) in the named session it opens to
  fetch tokens, once per server; every bid carries ``(h, κ)`` in its shares, so the servers can
  bind a pseudonymous result to the household's meter after an oblivious shuffle, and nobody
  but the household can have a bid settled on its account.
* **Meter readings.** :meth:`HouseholdAgent.read_meter` builds the household's claim for one
  period (:class:`~sealgrid.protocol.billing.Claim`: its import and export, and its settled
  energy from its own result, kept in the store once fetched), shares it and sends each server
  its share signed by the meter key, over connections of their own.
* **Billing outputs.** :func:`read_billing` fetches a statement, bill or DSO/TSO total from
  every server, checks signatures and that the public parts agree, and rebuilds the integers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.auction import traded_wh
from sealgrid.mechanism.bids import Bid, BidRejected, Reason, Side, check_bid
from sealgrid.mechanism.market import Market
from sealgrid.protocol import encoding
from sealgrid.protocol import field as F
from sealgrid.protocol.billing import DEFAULT_READING_BITS, Claim, ClaimLayout, share_claim
from sealgrid.service import wire
from sealgrid.service.bills import Rebuilt
from sealgrid.service.client import BidOutcome, Client, HouseholdClient, ServiceError
from sealgrid.service.household import Pseudonym
from sealgrid.service.keys import (
    TRUST,
    DataDirError,
    Registry,
    household_profile,
    load_signing_key,
    meter_key_path,
    supplier_participant,
    write_private,
)
from sealgrid.service.schedule import Schedule, iso, parse_time, utc_now
from sealgrid.service.wire import MarketInfo, Outcome, OutputShares, ReadingReceipt, Receipt


class AgentError(Exception):
    """The household agent cannot go on (no such pseudonym, servers that disagree, …)."""


class NotYetSettled(AgentError):
    """A billing output asked while some servers have settled its periods and others not yet:
    ask again shortly."""


def encode_payloads(
    bid: Bid, market: Market, parties: int, identity: tuple[int, int] = (0, 0)
) -> list[bytes]:
    """Split one checked bid into one share payload per server (index = server).

    ``identity``: the household's registry index and credential ``κ`` (the agent's bids carry
    them; ``(0, 0)`` is a bid no settlement can bind to a household).
    """
    shares = encoding.encode_bid(
        bid.side is Side.BUY,
        bid.quantity_wh,
        bid.level,
        market.supplier_index(bid.supplier),
        encoding.Layout.of(market),
        parties=parties,
        identity=identity,
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
    tokens: dict[int, bytes] = field(default_factory=dict)  # server -> its VOPRF output
    #: the bid's final result once fetched: every server's status joined, and the rebuilt
    #: output ``q·V/L`` (a field element) when it cleared; None before
    result_status: str | None = None
    result_output: int | None = None

    def pseudonym(self) -> Pseudonym:
        """The pseudonym with the tokens kept for it."""
        return Pseudonym(self.period, self.key, dict(self.tokens), dict(self.issuers))


#: The format of a household's kept files (pseudonym records, the credential), written into
#: each as ``"v"``. A file without one is of the first format, which this one reads as it is;
#: a file of a newer format is refused with a message naming it, never rewritten.
RECORD_VERSION = 1


def _check_version(data: Any, what: str) -> None:
    """Refuse a kept file of a format newer than :data:`RECORD_VERSION`."""
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    found = data.get("v", 1)
    if not isinstance(found, int) or found < 1:
        raise ValueError(f"format version {found!r} is not a version")
    if found > RECORD_VERSION:
        raise AgentError(f"{what} is of format {found}, written by a newer sealgrid; this one"
                         f" reads formats up to {RECORD_VERSION} (upgrade sealgrid)")


class PseudonymStore:
    """A household's one-time pseudonyms, one private file (mode 0600) per period.

    ``DIR/households/<household>.pseudonyms/<period without colons>.json`` holding the
    pseudonym's key seed, the bid's side and the digests of the issuer keys it was served
    under, and its result once final. Nothing here names the household to a server: the
    folder is the household's own. The household's settlement credential is kept there too
    (:data:`CREDENTIAL_FILE`, see :class:`Credential`).
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
        data: dict[str, Any] = {
            "v": RECORD_VERSION,
            "period": record.period,
            "seed": wire.b64e(seed),
            "side": record.side.value if record.side is not None else None,
            "quantity_wh": record.quantity_wh,
            "tokens": {str(i): wire.b64e(t) for i, t in sorted(record.tokens.items())},
            "issuers": {str(i): wire.b64e(d) for i, d in sorted(record.issuers.items())},
        }
        if record.result_status is not None:
            data["result"] = {"status": record.result_status, "output": record.result_output}
        write_private(self.path(record.period), json.dumps(data).encode())

    def load(self, period: str) -> PseudonymRecord:
        """Read the record of ``period``.

        Raises:
            AgentError: no bid for that period on record here, or an unreadable record.
        """
        try:
            data = json.loads(self.path(period).read_text())
            _check_version(data, f"the record of {period}")
            key = Ed25519PrivateKey.from_private_bytes(wire.b64d(data["seed"]))
            issuers = {int(i): wire.b64d(d) for i, d in data.get("issuers", {}).items()}
            tokens = {int(i): wire.b64d(t) for i, t in data.get("tokens", {}).items()}
            side = None if data.get("side") is None else Side(data["side"])
            quantity = None if data.get("quantity_wh") is None else int(data["quantity_wh"])
            result = data.get("result") or {}
            status = None if result.get("status") is None else str(result["status"])
            output = None if result.get("output") is None else int(result["output"])
            return PseudonymRecord(data["period"], key, side, quantity, issuers, tokens,
                                   status, output)
        except OSError:
            raise AgentError(f"no bid for {period} on record here") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentError(f"the record of {period} is unreadable: {exc}") from None

    @property
    def credential_path(self) -> Path:
        """The household's credential file (:class:`Credential`)."""
        return self.folder / CREDENTIAL_FILE

    def credential(self, parties: int) -> Credential:
        """The household's credential for ``parties`` servers: the kept one, or a fresh one
        made and kept now (the first writer wins; a credential is never replaced).

        Raises:
            AgentError: the kept credential is unreadable or made for another number of
                servers.
        """
        path = self.credential_path
        if not path.exists():
            fresh = Credential.fresh(parties)
            tmp = path.with_name(f"{CREDENTIAL_FILE}.{secrets.token_hex(8)}.tmp")
            write_private(tmp, fresh.to_json().encode())
            try:
                os.link(tmp, path)  # fails when another process kept one first
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        try:
            found = Credential.from_json(path.read_text())
        except OSError as exc:
            raise AgentError(f"cannot read the credential {path}: {exc}") from None
        if len(found.shares) != parties:
            raise AgentError(
                f"the credential {path} was made for {len(found.shares)} servers, the "
                f"registry has {parties}"
            )
        return found

    def save_credential(self, credential: Credential) -> None:
        """Rewrite the kept credential (to remember enrolments), atomically."""
        path = self.credential_path
        tmp = path.with_name(f"{CREDENTIAL_FILE}.{secrets.token_hex(8)}.tmp")
        write_private(tmp, credential.to_json().encode())
        os.replace(tmp, path)


#: The credential's file in a household's store.
CREDENTIAL_FILE = "credential.json"


@dataclass(frozen=True)
class Credential:
    """A household's settlement credential ``κ`` (a field element in ``[1, p)``) and its
    fixed Shamir shares (degree ``t``, server ``i`` at point ``i + 1``).

    Made once and kept; each server is sent only its own share (:class:`~sealgrid.service.
    wire.Enrolment`), never ``κ``. ``enrolled`` maps each server that acknowledged its share
    to the SHA-256 it signed.
    """

    kappa: int
    shares: tuple[int, ...]
    enrolled: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def fresh(cls, parties: int) -> Credential:
        """A new random credential shared among ``parties`` servers."""
        kappa = 1 + secrets.randbelow(F.MODULUS - 1)
        t = encoding.threshold(parties)
        coeffs = [np.array([secrets.randbelow(F.MODULUS)], dtype=F.U64) for _ in range(t)]
        shares = F.share(np.array([kappa], dtype=F.U64), t, parties, coeffs)
        return cls(kappa, tuple(int(s[0]) for s in shares))

    def share_bytes(self, server: int) -> bytes:
        """Server ``server``'s share as sent: one field element, 8 bytes little-endian."""
        return np.asarray([self.shares[server]], dtype="<u8").tobytes()

    def check(self) -> None:
        """Check that ``κ`` is a credential and the shares lie on one polynomial through it.

        Raises:
            ValueError: they do not.
        """
        if not 1 <= self.kappa < F.MODULUS or not all(0 <= s < F.MODULUS for s in self.shares):
            raise ValueError("a value lies outside the field")
        t = encoding.threshold(len(self.shares))
        rebuilt = F.reconstruct([np.array([s], dtype=F.U64) for s in self.shares], t)
        if int(rebuilt[0]) != self.kappa:
            raise ValueError("the shares do not rebuild the credential")

    def to_json(self) -> str:
        """The kept form."""
        return json.dumps({
            "v": RECORD_VERSION, "kappa": self.kappa, "shares": list(self.shares),
            "enrolled": {str(i): d.hex() for i, d in sorted(self.enrolled.items())},
        })

    @classmethod
    def from_json(cls, text: str) -> Credential:
        """Read and check the kept form.

        Raises:
            AgentError: unreadable, or shares that do not rebuild ``κ``.
        """
        try:
            data = json.loads(text)
            _check_version(data, "the kept credential")
            found = cls(int(data["kappa"]), tuple(int(s) for s in data["shares"]),
                        {int(i): bytes.fromhex(d) for i, d in data.get("enrolled", {}).items()})
            found.check()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AgentError(f"the kept credential is unreadable: {exc}") from None
        return found


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
    """One household: its key, its supplier, its pseudonym store, and a client of the servers
    (and its smart meter's key, when the household's directory holds it)."""

    def __init__(
        self,
        client: HouseholdClient,
        supplier: str,
        store: PseudonymStore,
        market: tuple[MarketInfo, Market] | None = None,
        *,
        meter_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.client = client
        self.supplier = supplier
        self.store = store
        self.meter_key = meter_key
        self._market = market  # read from the servers on first use when not given
        #: the servers that refused the credential at the last enrolment, with their reasons
        self.enrolment_refusals: dict[int, BidRejected] = {}

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
        meter = meter_key_path(data_dir, household)
        meter_key = load_signing_key(meter) if meter.exists() else None
        return cls(client, supplier, PseudonymStore.of(data_dir, household), market,
                   meter_key=meter_key)

    @classmethod
    def for_supplier(
        cls,
        data_dir: Path,
        supplier: str,
        *,
        registry: Registry | None = None,
        session: aiohttp.ClientSession | None = None,
        market: tuple[MarketInfo, Market] | None = None,
    ) -> HouseholdAgent:
        """The agent of supplier ``supplier`` bidding in the market itself (paper mustafa2016
        §III-C): under its own key, as the bidder ``@ID``, with its own tokens, pseudonyms
        and credential kept in ``suppliers/ID.pseudonyms``; its bids name itself; no meter
        (its position is settled at the clearing price and shows in its own bill).

        Raises:
            DataDirError: the registry or the supplier's key is missing.
        """
        data_dir = Path(data_dir)
        registry = registry or Registry.load(data_dir / "registry.json")
        if supplier not in registry.suppliers:
            raise DataDirError(f"no supplier {supplier!r} in the registry")
        key = load_signing_key(data_dir / "suppliers" / f"{supplier}.key")
        bidder = supplier_participant(supplier)
        client = HouseholdClient(registry, data_dir / TRUST, bidder, key, session)
        store = PseudonymStore(data_dir / "suppliers" / f"{supplier}.pseudonyms")
        return cls(client, supplier, store, market)

    @property
    def household(self) -> str:
        """The bidder's id (a household's, or ``@ID`` for a supplier bidding itself)."""
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
        identity = self.identity()
        record.side, record.quantity_wh = bid.side, bid.quantity_wh
        self.store.save(record)
        payloads = encode_payloads(bid, market, self.client.servers, identity)
        return PreparedBid(bid, record.pseudonym(), payloads)

    def credential(self) -> Credential:
        """This household's credential (made and kept on first use)."""
        return self.store.credential(self.client.servers)

    def identity(self) -> tuple[int, int]:
        """What every bid of this household carries: ``(h, κ)``, its registry index and its
        credential.

        Raises:
            AgentError: the household is not in the registry.
        """
        try:
            index = self.client.registry.participant_index(self.household)
        except KeyError as exc:
            raise AgentError(str(exc.args[0])) from None
        return index, self.credential().kappa

    async def enrol(self, client: HouseholdClient | None = None, *, again: bool = False
                    ) -> tuple[dict[int, bytes], dict[int, BidRejected]]:
        """Send every server its share of the credential (only those that have not yet
        acknowledged it, unless ``again``), over ``client`` (default: fresh connections), and
        remember each acknowledgement.

        Returns:
            Every server's acknowledged share digest (kept or new), and the refusals.

        Raises:
            ServiceError: a server could not be reached or its acknowledgement does not
                verify.
        """
        credential = self.credential()
        wanted = [i for i in range(self.client.servers) if again or i not in credential.enrolled]
        refusals: dict[int, BidRejected] = {}
        if wanted:
            shares = {i: credential.share_bytes(i) for i in wanted}
            if client is None:
                named = self.client.fresh()
                async with named:
                    acks, refusals = await named.enrol(shares)
            else:  # inside a bid's named session: a server that is down is enrolled later
                acks, refusals = await client.enrol(shares, quiet_unreachable=True)
            if acks:
                enrolled = {**credential.enrolled,
                            **{i: a.share_sha256 for i, a in acks.items()}}
                for i in refusals:
                    enrolled.pop(i, None)
                credential = Credential(credential.kappa, credential.shares, enrolled)
                self.store.save_credential(credential)
        self.enrolment_refusals = refusals
        return dict(credential.enrolled), refusals

    def enrolled_everywhere(self) -> bool:
        """Whether every server has acknowledged the credential (as far as kept here)."""
        return len(self.credential().enrolled) == self.client.servers

    async def fetch_tokens(self, periods: int) -> list[str]:
        """Fetch ahead the tokens of the next ``periods`` open periods (a fresh pseudonym each,
        every server's evaluation, in one request per server over connections used for
        nothing else) and keep them, so that a bid later is not next to its issuance in time or
        connection.

        Returns:
            The periods that now hold a token from every server.

        Raises:
            ServiceError: a server could not be reached or answered what does not verify.
        """
        info = await self.client.market_info(0)  # now, not when the market was first read
        first = parse_time(info.first_open_period)
        records = []
        for k in range(periods):
            record = self._record(iso(first + dt.timedelta(seconds=k * info.period_seconds)))
            if record.side is None:  # a period already bid in keeps what it has
                records.append(record)
        pseudonyms = [r.pseudonym() for r in records]
        await self._obtain(records, pseudonyms)
        return [p.period for p in pseudonyms if len(p.tokens) == self.client.servers]

    def _record(self, period: str) -> PseudonymRecord:
        """The kept record of ``period``, or a fresh pseudonym's (not yet saved)."""
        try:
            return self.store.load(period)
        except AgentError:
            return PseudonymRecord(period, Pseudonym.fresh(period).key, None, None)

    async def _obtain(self, records: Sequence[PseudonymRecord], pseudonyms: Sequence[Pseudonym],
                      unreachable: dict[int, str] | None = None,
                      ahead: Sequence[Pseudonym] = ()) -> dict[int, BidRejected]:
        """Every token the ``pseudonyms`` lack (one request per server for all their
        periods), over connections of their own (one per server), kept in their ``records``;
        in the same named session, the credential's enrolment with every server that has not
        acknowledged it. Nothing is asked when nothing is missing. Refusals by server (an
        enrolment's before a token's). ``ahead``: pseudonyms of other periods whose tokens
        come in the same requests, kept by the caller (in them), not in the store."""
        tokens = any(len(p.tokens) < self.client.servers for p in (*pseudonyms, *ahead))
        enrol = not self.enrolled_everywhere()
        if not tokens and not enrol:
            return {}
        refusals: dict[int, BidRejected] = {}
        enrolment: dict[int, BidRejected] = {}
        issuing = self.client.fresh()
        async with issuing:
            if enrol:
                _, enrolment = await self.enrol(issuing)
            if tokens:
                refusals = await issuing.obtain_many([*pseudonyms, *ahead], unreachable)
        if tokens:
            for record, pseudonym in zip(records, pseudonyms, strict=True):
                record.tokens, record.issuers = dict(pseudonym.tokens), dict(pseudonym.issuers)
                self.store.save(record)
        return {**refusals, **enrolment}

    async def obtain(self, prepared: PreparedBid, unreachable: dict[int, str] | None = None,
                     ahead: Sequence[Pseudonym] = ()) -> dict[int, BidRejected]:
        """Get every missing token of the pseudonym (fresh connections); return refusals
        (``unreachable`` collects the servers that could not be reached, when given).
        ``ahead``: pseudonyms of other periods whose tokens come in the same request to each
        server (kept in them, not in the store; ``sealgrid bench service --token-periods``)."""
        p = prepared.pseudonym
        return await self._obtain([self.store.load(p.period)], [p], unreachable, ahead)

    async def submit(
        self,
        prepared: PreparedBid,
        *,
        servers: Sequence[int] | None = None,
        latency: list[float] | None = None,
        unreachable: dict[int, str] | None = None,
    ) -> tuple[dict[int, Receipt], dict[int, BidRejected]]:
        """Send each server (or only ``servers``) its share; return receipts and refusals."""
        return await self.client.submit(
            prepared.pseudonym, prepared.payloads, servers=servers, latency=latency,
            unreachable=unreachable,
        )

    async def send(self, prepared: PreparedBid, *, retry: bool = True) -> BidOutcome:
        """Obtain the tokens, then submit every share; a server that cannot be reached is
        tried again, with backoff (0.5 s doubling to 4 s), until shortly before the period's
        gate closure (``retry``): its token, once obtained, is kept, and the servers that
        already gave a receipt are not asked again. What is still missing at the end is in
        the outcome's ``unreachable``."""
        unreachable: dict[int, str] = {}
        refusals = await self.obtain(prepared, unreachable)
        receipts, more = await self.submit(prepared, unreachable=unreachable)
        refusals.update(more)
        if retry and unreachable:
            _, market = await self.market()
            schedule = Schedule(market.period_seconds)
            gate = schedule.gate_closure(schedule.parse_period(prepared.pseudonym.period))
            delay = 0.5
            while unreachable:
                left = (gate - utc_now()).total_seconds() - 0.5
                if left <= 0:
                    break
                await asyncio.sleep(min(delay, left))
                delay = min(2 * delay, 4.0)
                missing = sorted(unreachable)
                unreachable = {}
                refusals.update(await self.obtain(prepared, unreachable))
                got, more = await self.submit(
                    prepared, servers=[i for i in missing if i not in unreachable],
                    unreachable=unreachable)
                receipts.update(got)
                refusals.update(more)
                for i in missing:  # a server still down keeps its earlier reason
                    if i not in receipts and i not in refusals and i not in unreachable:
                        unreachable[i] = "no token"
        return BidOutcome(prepared.pseudonym, receipts, refusals, unreachable)

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
        output: int | None = None
        if status == "cleared":
            (output,) = reconstruct(shares)
            accepted = output != 0
            traded = traded_from_output(output, record.quantity_wh)
        if final_status(status) and record.result_status is None:
            record.result_status, record.result_output = status, output
            self.store.save(record)  # what the meter's claim for the period is built from
        return HouseholdResult(period, status, outcome, accepted, traded, issuers_ok)

    async def claim(self, period: str, import_wh: int, export_wh: int) -> Claim:
        """This household's honest claim for ``period``: its meter's import and export, and
        what it traded there: its bid's side and settled energy from its own result (kept
        once fetched; fetched now when not), or nothing when it did not bid.

        Raises:
            AgentError: it bid but its result is not final yet (the reading must wait for
                it), or the servers' shares disagree.
            ServiceError: a server could not be reached or answered what does not verify.
        """
        try:
            record = self.store.load(period)
        except AgentError:
            record = None
        if record is None or record.quantity_wh is None or record.side is None:
            return Claim.of(False, 0, Fraction(1), import_wh, export_wh)
        if record.result_status is None:
            got = await self.result(period)
            if not final_status(got.status):
                raise AgentError(
                    f"the result of {period} is not available yet ({got.status}): this "
                    "household bid in the period, and its reading must wait for the result "
                    "(the claim carries what the bid traded)"
                )
            record = self.store.load(period)
        return claim_of(record, import_wh, export_wh)

    async def read_meter(self, period: str, import_wh: int, export_wh: int) -> ReadingOutcome:
        """Send the meter's reading of ``period``: the claim shared, one share to each
        server signed by the meter key, over connections of their own; each receipt checked.

        Raises:
            AgentError: no meter key here, a reading out of range, or the result the claim
                needs is not available yet.
            ServiceError: a server could not be reached or answered what does not verify.
        """
        if self.meter_key is None:
            raise AgentError(f"no smart-meter key for household {self.household} here")
        _, market = await self.market()
        layout = ClaimLayout.of(market.max_quantity_wh)
        for what, wh in (("import", import_wh), ("export", export_wh)):
            check_reading(what, wh, layout.max_reading_wh())
        claim = await self.claim(period, import_wh, export_wh)
        try:
            shares = share_claim(claim, layout, self.client.servers)
        except ValueError as exc:
            raise AgentError(f"the claim does not fit the market's layout: {exc}") from None
        payloads = {i: np.asarray(v, dtype="<u8").tobytes() for i, v in enumerate(shares)}
        meter = self.client.fresh()
        async with meter:
            receipts, refusals = await meter.send_readings(period, payloads, self.meter_key)
        return ReadingOutcome(period, claim, receipts, refusals)

    async def statement(self, cycle: str) -> Rebuilt:
        """This household's statement of a billing cycle, rebuilt from every server."""
        named = self.client.fresh()
        async with named:
            return await read_billing(named, "statement", self.household, cycle, self.client.key)


#: A household result's statuses (every server's joined) after which it never changes.
FINAL_STATUSES = frozenset({"cleared", "no_trade", "failed", "invalid", "excluded",
                            "not_on_every_server", "unknown"})


def final_status(status: str) -> bool:
    """Whether a joined result status is final: no server says ``pending`` (or anything new);
    a mixture of final statuses (a bid some servers never received) is final too."""
    return all(part in FINAL_STATUSES for part in status.split("/"))


def claim_of(record: PseudonymRecord, import_wh: int, export_wh: int) -> Claim:
    """The honest claim of a household whose record of the period holds its bid's final
    result: on a cleared period, its quantity when accepted and the side's rationing ratio
    rebuilt from the output; nothing traded otherwise.

    Raises:
        AgentError: no final result kept, or a result that is not a rationed amount.
    """
    sell = record.side is Side.SELL
    status = record.result_status
    if status is None or not final_status(status):
        raise AgentError(f"no final result of {record.period} is kept here")
    if status == "cleared" and record.result_output and record.quantity_wh:
        try:
            ratio = encoding.side_ratio(record.result_output, record.quantity_wh)
        except ValueError as exc:
            raise AgentError(f"the kept output is not a rationed amount: {exc}") from None
        return Claim.of(sell, record.quantity_wh, ratio, import_wh, export_wh)
    if "cleared" in status.split("/") and status != "cleared":
        raise AgentError(f"the servers disagree on the result of {record.period} ({status})")
    return Claim.of(sell, 0, Fraction(1), import_wh, export_wh)


#: The largest import or export a reading carries (Wh), whatever the market's bids.
MAX_READING_WH = (1 << DEFAULT_READING_BITS) - 1


def check_reading(what: str, wh: int, max_wh: int = MAX_READING_WH) -> int:
    """Check one reading in whole Wh.

    Raises:
        AgentError: below 0 or above ``max_wh`` (``reading_out_of_range``).
    """
    if not 0 <= wh <= max_wh:
        raise AgentError(str(BidRejected(
            Reason.READING_OUT_OF_RANGE,
            f"{what} {Decimal(wh) / 1000} kWh; allowed 0 … {Decimal(max_wh) / 1000} kWh",
        )))
    return wh


def reading_wh(what: str, text: str, max_wh: int = MAX_READING_WH) -> int:
    """A reading given at the edge in kWh (at most three decimals), in whole Wh.

    Raises:
        AgentError: not a number, negative, not whole Wh or above ``max_wh``
            (``reading_out_of_range``, naming the rule and the allowed range).
    """
    allowed = f"allowed 0 … {Decimal(max_wh) / 1000} kWh in steps of 0.001 kWh"
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise AgentError(str(BidRejected(
            Reason.READING_OUT_OF_RANGE, f"{what} {text!r} is not a number of kWh; {allowed}")))
    wh = value * 1000
    if wh != wh.to_integral_value():
        raise AgentError(str(BidRejected(
            Reason.READING_OUT_OF_RANGE, f"{what} {text} kWh is not whole Wh; {allowed}")))
    if not 0 <= wh <= max_wh:
        raise AgentError(str(BidRejected(
            Reason.READING_OUT_OF_RANGE, f"{what} {text} kWh; {allowed}")))
    return int(wh)


@dataclass(frozen=True)
class ReadingOutcome:
    """What each server said to one meter reading: a verified receipt or a refusal."""

    period: str
    claim: Claim
    receipts: dict[int, ReadingReceipt]
    refusals: dict[int, BidRejected]


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


def rebuild_billing(shares: Sequence[OutputShares]) -> Rebuilt:
    """Rebuild a billing output (statement, bill, DSO or TSO totals) from every server's
    signed share (already checked to be that server's, for the role, subject and cycle asked).

    The public parts must be one text on every server; the shares raw little-endian u64
    field elements of one length, lying on one polynomial of degree ``t`` (server ``i`` at
    point ``i + 1``); the values are read as signed integers.

    Raises:
        AgentError: public parts that differ or are no JSON object, malformed shares, or
            shares that do not agree (a server lied).
    """
    ordered = sorted(shares, key=lambda s: s.server)
    if [s.server for s in ordered] != list(range(len(ordered))) or len(ordered) < 3:
        raise AgentError("need exactly one output share from every server (at least 3)")
    publics = {s.public for s in ordered}
    if len(publics) != 1:
        if len({s.status for s in ordered}) > 1:  # some servers have settled it, some not yet
            raise NotYetSettled("the servers have not all settled this yet ("
                                + ", ".join(f"server {s.server}: {s.status}" for s in ordered)
                                + "); ask again shortly")
        raise AgentError("the servers' public parts of the output differ: "
                         + ", ".join(f"server {s.server}: {s.public!r}" for s in ordered))
    try:
        public = json.loads(ordered[0].public)
    except ValueError:
        public = None
    if not isinstance(public, dict):
        raise AgentError("the output's public part is not a JSON object")
    sizes = {len(s.shares) for s in ordered}
    if len(sizes) != 1 or sizes.pop() % 8:
        raise AgentError("the servers' output shares are malformed (lengths differ or are "
                         "not whole field elements)")
    arrays = [np.frombuffer(s.shares, dtype="<u8").astype(F.U64) for s in ordered]
    if any(bool((a >= np.uint64(F.MODULUS)).any()) for a in arrays):
        raise AgentError("an output share lies outside the field")
    try:
        values = F.reconstruct(arrays, encoding.threshold(len(arrays)))
    except ValueError as exc:
        raise AgentError(f"the servers' output shares do not agree: {exc}") from None
    return Rebuilt(public, [int(v) for v in F.to_signed(values)])


async def read_billing(
    client: Client, role: str, subject: str, cycle: str, key: Ed25519PrivateKey
) -> Rebuilt:
    """Fetch and rebuild one billing output of ``cycle`` (the ISO start of its first
    period): ``statement`` (a household), ``bill`` (a supplier), ``dso`` (a region), ``tso``.

    Raises:
        AgentError: the servers' outputs do not agree.
        ServiceError: a server could not be reached, refused, or answered what does not
            verify.
    """
    return rebuild_billing(await client.outputs(role, subject, cycle, key))


__all__ = [
    "AgentError",
    "Credential",
    "DataDirError",
    "HouseholdAgent",
    "HouseholdResult",
    "NotYetSettled",
    "PreparedBid",
    "PseudonymRecord",
    "PseudonymStore",
    "ReadingOutcome",
    "ServiceError",
    "Totals",
    "encode_payloads",
    "outcome_of",
    "read_billing",
    "read_totals",
    "reading_wh",
    "rebuild_billing",
    "reconstruct",
]
