"""The private settlement against the integer reference (sealgrid.mechanism.billing)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from sealgrid.mechanism import billing as B
from sealgrid.mechanism.auction import clear, rationing
from sealgrid.mechanism.bids import OrderBook, Side
from sealgrid.protocol import field as F
from sealgrid.protocol.billing import (
    IDENTITY_MISMATCH,
    MISSING,
    OUT_OF_RANGE,
    SETTLED,
    SPLIT_MISMATCH,
    TRADE_MISMATCH,
    Claim,
    ClaimLayout,
    SettleInput,
    read_result,
    share_claim,
    shuffle,
    write_input,
)
from sealgrid.protocol.certs import make_party_certificates
from sealgrid.protocol.clearing import run_processes
from sealgrid.protocol.encoding import Layout, ShareBatch, write_book_shares
from sealgrid.protocol.inprocess import Hub, HubTransport, run_in_process, settle_in_process
from sealgrid.protocol.party import read_result as read_party_result

LEVELS = 16
MAX_Q = 5000
TARIFFS = [B.MilliTariff(120_000, 80_000, 5_000), B.MilliTariff(118_500, 81_000, 4_250)]


def price_of(level: int) -> int:
    return 80_000 + 2_500 * level


@dataclass
class Market:
    households: int
    bidder: np.ndarray  # household index (0-based) of each bid
    book: OrderBook
    kappa: np.ndarray  # κ_h per household
    supplier: np.ndarray  # tariff index per household
    readings: dict[int, tuple[int, int]]  # household → (import, export) for those who read


def make_market(seed: int, households: int = 14, bidders: int = 9) -> Market:
    rng = np.random.default_rng(seed)
    who = rng.choice(households, size=bidders, replace=False)
    is_buy = rng.random(bidders) < 0.5
    is_buy[0], is_buy[1] = True, False
    book = OrderBook(is_buy, rng.integers(1, MAX_Q + 1, bidders),
                     rng.integers(0, LEVELS, bidders), np.zeros(bidders, dtype=np.int64), ("s",))
    kappa = F.stream(secrets.token_bytes(16), "kappa", households)
    readings = {h: (int(rng.integers(0, 9000)), int(rng.integers(0, 9000)))
                for h in range(households) if rng.random() < 0.8}
    return Market(households, who, book, kappa, rng.integers(0, 2, households), readings)


def share_vector(values: np.ndarray, parties: int = 3) -> list[np.ndarray]:
    coeffs = [F.stream(secrets.token_bytes(16), "x", values.size).reshape(values.shape)]
    return F.share(np.asarray(values, dtype=F.U64), 1, parties, coeffs)


def reference(mk: Market) -> tuple[dict[int, tuple[Side, int, Fraction]], int | None]:
    """Per bidding household: side, accepted Wh and ratio; and the price (milli)."""
    c = clear(mk.book, LEVELS)
    out = {}
    if c.level is None:
        return {int(h): (Side.BUY if b else Side.SELL, 0, Fraction(0))
                for h, b in zip(mk.bidder, mk.book.is_buy, strict=True)}, None
    buy = Fraction(*rationing(c.volume_wh, c.demand_wh))
    sell = Fraction(*rationing(c.volume_wh, c.supply_wh))
    for i, h in enumerate(mk.bidder):
        is_buy = bool(mk.book.is_buy[i])
        acc = int(mk.book.quantity_wh[i]) if c.accepted[i] else 0
        out[int(h)] = (Side.BUY if is_buy else Side.SELL, acc, buy if is_buy else sell)
    return out, price_of(c.level)


def run(mk: Market, tmp: Path, claims: dict[int, Claim] | None = None,
        identity: np.ndarray | None = None, processes: bool = False
        ) -> tuple[list, dict, int | None]:
    layout = Layout(LEVELS, 1, MAX_Q)
    if identity is None:
        identity = np.stack([F.from_ints(mk.bidder + 1), mk.kappa[mk.bidder]], axis=1)
    dirs = [tmp / f"party{i}" for i in range(3)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    paths = [d / "shares.bin" for d in dirs]
    write_book_shares(mk.book, layout, paths, identity=identity)
    batches = [ShareBatch.load(p) for p in paths]
    if processes:
        make_party_certificates(dirs)
        run_processes(dirs, 60.0)
        cleared = [read_party_result(d) for d in dirs]
    else:
        cleared = run_in_process(batches)
    ref, price = reference(mk)
    if claims is None:
        claims = {}
        for h, (imp, exp) in mk.readings.items():
            side, acc, ratio = ref.get(h, (Side.BUY, 0, Fraction(0)))
            claims[h] = Claim.of(side is Side.SELL, acc, ratio, imp, exp)
    lay = ClaimLayout(quantity_bits=MAX_Q.bit_length())
    shared = {h: share_claim(c, lay, 3) for h, c in claims.items()}
    creds = share_vector(mk.kappa)
    tariffs = np.array([[TARIFFS[s].retail, TARIFFS[s].feed_in, TARIFFS[s].network_fee]
                        for s in mk.supplier], dtype=np.int64)
    inputs = []
    for i in range(3):
        rows = np.concatenate([np.asarray(batches[i].rows[:, layout.identity]).T,
                               cleared[i].accepted])
        inputs.append(SettleInput(rows, cleared[i].ratios, price, creds[i], tariffs,
                                  {h + 1: v[i] for h, v in shared.items()}, lay))
    if processes:
        for d, inp in zip(dirs, inputs, strict=True):
            write_input(d, inp)
        run_processes(dirs, 60.0, settle=True)
        return [read_result(d) for d in dirs], ref, price
    return settle_in_process(inputs), ref, price


def lines_of(results: list) -> np.ndarray:
    rebuilt = F.reconstruct([r.lines for r in results], 1)
    return np.vectorize(lambda v: int(v) - F.MODULUS if int(v) > F.MODULUS // 2 else int(v),
                        otypes=[object])(rebuilt)


def expected(mk: Market, ref: dict, price: int | None, h: int,
             claim: Claim | None = None) -> list[int]:
    side, acc, ratio = ref.get(h, (Side.BUY, 0, Fraction(0)))
    t = B.settled_wh(acc, ratio) if acc else 0
    imp, exp = mk.readings.get(h, (0, 0)) if claim is None else (claim.import_wh,
                                                                  claim.export_wh)
    if claim is None and h not in mk.readings:
        imp, exp = 0, 0
    money = B.period_money(side, t, imp, exp, price or 0, TARIFFS[mk.supplier[h]])
    bought, sold = (t, 0) if side is Side.BUY else (0, t)
    return [bought, sold, imp, exp, money.with_market, money.without_market]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_settlement_equals_the_integer_reference(seed: int, tmp_path: Path) -> None:
    mk = make_market(seed)
    results, ref, price = run(mk, tmp_path)
    lines = lines_of(results)
    statuses = {r.status for r in results}
    assert len(statuses) == 1  # every server reaches the same public statuses
    status = results[0].status
    for h in range(mk.households):
        assert status[h] == (SETTLED if h in mk.readings else MISSING)
        assert list(lines[h]) == expected(mk, ref, price, h), h
    assert results[0].bidders == len(mk.bidder) and results[0].void_rows == 0


def test_the_money_equals_the_fraction_settlement() -> None:
    """period_money is household_with_market ×10^6 on the same settled energy."""
    from sealgrid.mechanism.settlement import (
        MarketTrade,
        Meter,
        Tariff,
        household_with_market,
        household_without_market,
    )

    rng = np.random.default_rng(7)
    for _ in range(300):
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        t, imp, exp = (int(v) for v in rng.integers(0, 4000, 3))
        price = int(rng.integers(80_000, 120_001))
        tm = TARIFFS[int(rng.integers(0, 2))]
        tariff = Tariff(Fraction(tm.retail, 1000), Fraction(tm.feed_in, 1000),
                        Fraction(tm.network_fee, 1000))
        meter = Meter("h", "s", Fraction(imp, 1000), Fraction(exp, 1000))
        trade = MarketTrade("h", side, Fraction(t, 1000))
        money = B.period_money(side, t, imp, exp, price, tm)
        assert money.with_market == household_with_market(
            meter, tariff, trade, Fraction(price, 1000)) * B.MONEY_SCALE
        assert money.without_market == household_without_market(meter, tariff) * B.MONEY_SCALE


def _traded_household(mk: Market, ref: dict) -> int:
    return next(h for h, (_, acc, ratio) in ref.items() if acc and h in mk.readings)


def test_a_claim_of_more_energy_is_refused_and_the_others_are_settled(tmp_path: Path) -> None:
    mk = make_market(3)
    ref, price = reference(mk)
    assert price is not None
    liar = _traded_household(mk, ref)
    claims = {}
    for h, (imp, exp) in mk.readings.items():
        side, acc, ratio = ref.get(h, (Side.BUY, 0, Fraction(0)))
        claims[h] = Claim.of(side is Side.SELL, acc, ratio, imp, exp)
    honest = claims[liar]
    side = Side.SELL if honest.sell else Side.BUY
    # one Wh less bought (or more sold), split consistently: only the trade check can catch it
    claims[liar] = replace(honest, traded_wh=honest.traded_wh + (1 if honest.sell else -1))
    assert B.deviation(side, claims[liar].traded_wh, honest.import_wh, honest.export_wh) >= -9000
    results, _, _ = run(mk, tmp_path, claims)
    status = results[0].status
    assert status[liar] == TRADE_MISMATCH
    lines = lines_of(results)
    for h in mk.readings:
        if h != liar:
            assert status[h] == SETTLED and list(lines[h]) == expected(mk, ref, price, h)
    # the liar is settled as without a reading (its true trade, no import or export)
    saved = mk.readings.pop(liar)
    assert list(lines[liar]) == expected(mk, ref, price, liar)
    mk.readings[liar] = saved


def test_claiming_the_other_side_or_a_bad_split_or_a_non_bit_is_refused(
        tmp_path: Path) -> None:
    mk = make_market(4)
    ref, _price = reference(mk)
    target = _traded_household(mk, ref)
    base = {}
    for h, (imp, exp) in mk.readings.items():
        side, acc, ratio = ref.get(h, (Side.BUY, 0, Fraction(0)))
        base[h] = Claim.of(side is Side.SELL, acc, ratio, imp, exp)
    lay = ClaimLayout(quantity_bits=MAX_Q.bit_length())
    flipped = dict(base)
    flipped[target] = replace(base[target], sell=not base[target].sell)
    results, _, _ = run(mk, tmp_path, flipped)
    assert results[0].status[target] == TRADE_MISMATCH

    class Lying(Claim):
        def vector(self, layout: ClaimLayout) -> np.ndarray:
            v = Claim.vector(self, layout)
            start, _ = layout.parts["up"]
            v[start] = (int(v[start]) + 1) % 2  # u⁺ off by one: the split no longer adds up
            return v

    split = dict(base)
    split[target] = Lying(**base[target].__dict__)
    results, _, _ = run(mk, tmp_path, split)
    assert results[0].status[target] == SPLIT_MISMATCH

    class NonBit(Claim):
        def vector(self, layout: ClaimLayout) -> np.ndarray:
            v = Claim.vector(self, layout)
            start, _ = layout.parts["import"]
            v[start + 1] = (int(v[start + 1]) + 2)  # a "bit" of 2 or 3: the import leaves range
            return v

    bad = dict(base)
    bad[target] = NonBit(**base[target].__dict__)
    results, _, _ = run(mk, tmp_path, bad)
    assert results[0].status[target] == OUT_OF_RANGE
    assert lay.width == len(base[target].vector(lay))


def test_a_bid_under_another_households_name_is_void(tmp_path: Path) -> None:
    mk = make_market(5)
    ref, price = reference(mk)
    identity = np.stack([F.from_ints(mk.bidder + 1), mk.kappa[mk.bidder]], axis=1)
    victim = next(h for h in range(mk.households) if h not in set(mk.bidder.tolist()))
    identity[0] = [victim + 1, int(F.stream(b"guess", "k", 1)[0])]  # bid 0 names the victim
    results, _, _ = run(mk, tmp_path, identity=identity)
    assert results[0].void_rows == 1
    lines = lines_of(results)
    impostor = int(mk.bidder[0])
    assert lines[victim][0] == lines[victim][1] == 0  # nothing traded on the victim's account
    assert list(lines[victim]) == expected(mk, ref, price, victim)
    assert results[0].status[impostor] in (SETTLED, MISSING)
    assert IDENTITY_MISMATCH == "identity_mismatch"


def test_the_shuffle_moves_rows_by_a_permutation_no_server_knows() -> None:
    """The rows come back permuted (same multiset, different order) and every server's
    own pair permutations alone do not give the composed order."""
    n = 64
    values = np.arange(1, n + 1, dtype=F.U64).reshape(1, n)
    shares = share_vector(values)
    hub = Hub(3)
    transports = [HubTransport(hub, i) for i in range(3)]

    async def go() -> list[np.ndarray]:
        import asyncio

        return list(await asyncio.gather(*(shuffle(tr, s, "t")
                                           for tr, s in zip(transports, shares, strict=True))))

    out = hub.mpc.run(go())
    order = [int(v) for v in F.reconstruct(out, 1)[0]]
    assert sorted(order) == list(range(1, n + 1))
    assert order != list(range(1, n + 1))
    from sealgrid.protocol.billing import _permutation, subsets

    perms = {s: _permutation(hub.keys[s], "t", n) for s in subsets(3)}
    for me in range(3):  # what server `me` could compute: the pairs it belongs to, in order
        guess = np.arange(n)
        for s in subsets(3):
            if me in s:
                guess = guess[perms[s]]
        assert [int(g) + 1 for g in guess] != order
    full = np.arange(n)
    for s in subsets(3):
        full = full[perms[s]]
    assert [int(g) + 1 for g in full] == order  # the composition of all three is the order


def test_three_server_processes_settle_as_the_reference(tmp_path: Path) -> None:
    """Real separate servers over mutual TLS, a household that traded without a reading
    among them (its energy from the exact secure truncation)."""
    mk = make_market(1)
    ref, price = reference(mk)
    assert price is not None
    traded = [h for h, (_, acc, _) in ref.items() if acc]
    silent = traded[0]
    mk.readings.pop(silent, None)
    results, ref, price = run(mk, tmp_path, processes=True)
    lines = lines_of(results)
    assert results[0].status[silent] == MISSING and lines[silent][0] + lines[silent][1] > 0
    for h in range(mk.households):
        assert list(lines[h]) == expected(mk, ref, price, h), h
    assert results[0].status == results[1].status == results[2].status


def test_a_bid_repeating_a_bidders_name_voids_only_itself(tmp_path: Path) -> None:
    """An impostor names a household that bid too, with a guessed κ: its own row is void,
    the household's row binds and it is settled as if the impostor were not there."""
    mk = make_market(5)
    ref, price = reference(mk)
    identity = np.stack([F.from_ints(mk.bidder + 1), mk.kappa[mk.bidder]], axis=1)
    victim = next(int(h) for h in mk.bidder[1:] if ref[int(h)][1] > 0)  # it traded
    identity[0] = [victim + 1, int(F.stream(b"guess", "k", 1)[0])]
    mk.readings.setdefault(victim, (1200, 300))
    results, _, _ = run(mk, tmp_path, identity=identity)
    assert results[0].void_rows == 1
    lines = lines_of(results)
    assert results[0].status[victim] == SETTLED
    assert list(lines[victim]) == expected(mk, ref, price, victim)
    assert lines[victim][0] + lines[victim][1] > 0


def test_a_refused_claim_opens_a_random_value(tmp_path: Path) -> None:
    """The check of a false claim opens as r·check with a fresh r: it differs from run to run
    (the servers never see the claim's violation, e.g. −acc·c of a void row), 0 for honest."""
    from sealgrid.protocol import disclosure

    mk = make_market(3)
    ref, _ = reference(mk)
    liar = _traded_household(mk, ref)
    claims = {}
    for h, (imp, exp) in mk.readings.items():
        side, acc, ratio = ref.get(h, (Side.BUY, 0, Fraction(0)))
        claims[h] = Claim.of(side is Side.SELL, acc, ratio, imp, exp)
    claims[liar] = replace(claims[liar], traded_wh=claims[liar].traded_wh + 1)
    seen: list[list[int]] = []
    original = HubTransport.all_to_all

    async def spy(self: HubTransport, own: np.ndarray) -> list[np.ndarray]:
        got = await original(self, own)
        if self.pid == 0 and disclosure.LOG and disclosure.LOG[-1] == "claim_checks":
            values = F.combine(got, F.lagrange_at([1, 2, 3], 0))
            seen.append([int(v) for v in values])
        return got

    HubTransport.all_to_all = spy  # type: ignore[method-assign]
    try:
        run(mk, tmp_path / "a", dict(claims))
        run(mk, tmp_path / "b", dict(claims))
    finally:
        HubTransport.all_to_all = original  # type: ignore[method-assign]
    assert len(seen) == 2
    order = sorted(h + 1 for h in claims)
    k = order.index(liar + 1)
    per_run = [np.array(v).reshape(3, len(order)) for v in seen]
    assert per_run[0][1, k] != 0 and per_run[0][1, k] != per_run[1][1, k]
    honest = [i for i in range(len(order)) if i != k]
    assert all((r[:, honest] == 0).all() for r in per_run)
