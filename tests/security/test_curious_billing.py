"""Threat: a curious server reads the settlement (SPEC §6: no server learns a reading, a traded
amount, a deviation or money, nor which pseudonym was whose).

Server 0's whole view of a settlement — its stored inputs (bid rows, credentials, claims),
every array the other servers send it (openings, the shuffle's and the reshare's pieces) and
its output lines — is collected many times for two data sets that differ only in what must
stay hidden: every household's meter reading, and so its deviation and money. The public
outputs (statuses, bound households, the ratios) are the same. The chi-square homogeneity
test of the clearing's battery (:func:`tests.chaos.curious.homogeneity`) must not tell the two
apart; on the plaintext claims it must (its power, as a control). Fresh randomness each run.
"""

from __future__ import annotations

import asyncio
import secrets
from fractions import Fraction

import numpy as np

from sealgrid.mechanism import billing as B
from sealgrid.protocol import field as F
from sealgrid.protocol.billing import (
    OPENED,
    Claim,
    ClaimLayout,
    SettleInput,
    settle_period,
    share_claim,
)
from sealgrid.protocol.inprocess import Hub, HubTransport
from tests.chaos.curious import Recording, homogeneity

RUNS = 150
HOUSEHOLDS = 8
BIDDERS = {0: (False, 3000), 2: (True, 1200), 3: (True, 2500), 5: (False, 900),
           6: (True, 0)}  # household → (sells, accepted Wh)
RATIOS = {True: Fraction(1), False: Fraction(3, 7)}  # keyed by "is a buyer"
PRICE = 97_500
LAYOUT = ClaimLayout.of(5000)
TARIFFS = np.array([[120_000, 80_000, 5_000]] * HOUSEHOLDS, dtype=np.int64)
KAPPA = F.from_ints([1_000_003 * (h + 7) for h in range(HOUSEHOLDS)])


def readings(seed: int) -> dict[int, tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return {h: (int(rng.integers(0, 8000)), int(rng.integers(0, 8000)))
            for h in range(HOUSEHOLDS)}


A, B_ = readings(1), readings(2)
LAST_LABELS: list[str] = []  # the labels of the last recorded view (every opening named)


def _share(values: np.ndarray) -> list[np.ndarray]:
    coeffs = [F.stream(secrets.token_bytes(16), "c", values.size).reshape(values.shape)]
    return F.share(np.asarray(values, dtype=F.U64), 1, 3, coeffs)


def claims_of(read: dict[int, tuple[int, int]]) -> dict[int, Claim]:
    out = {}
    for h, (imp, exp) in read.items():
        sells, acc = BIDDERS.get(h, (False, 0))
        out[h] = Claim.of(sells, acc, RATIOS[not sells], imp, exp)
    return out


def record(read: dict[int, tuple[int, int]], leak: bool = False
           ) -> tuple[np.ndarray, tuple[str, ...]]:
    """One settlement with fresh shares; server 0's view and the public statuses.

    ``leak``: plant an opening of the money column (a control of the test's power)."""
    who = sorted(BIDDERS)
    rows = np.zeros((4, len(who)), dtype=F.U64)
    rows[0] = F.from_ints([h + 1 for h in who])
    rows[1] = KAPPA[who]
    rows[2] = F.from_ints([0 if BIDDERS[h][0] else BIDDERS[h][1] for h in who])
    rows[3] = F.from_ints([BIDDERS[h][1] if BIDDERS[h][0] else 0 for h in who])
    ratios = np.array([_elem(RATIOS[True]), _elem(RATIOS[False])], dtype=F.U64)
    sh_rows, sh_ratios, sh_kappa = _share(rows), _share(ratios), _share(KAPPA)
    claims = {h + 1: share_claim(c, LAYOUT, 3) for h, c in claims_of(read).items()}
    inputs = [SettleInput(sh_rows[i], sh_ratios[i], PRICE, sh_kappa[i], TARIFFS,
                          {h: v[i] for h, v in claims.items()}, LAYOUT) for i in range(3)]
    hub = Hub(3)
    view: list[np.ndarray] = [sh_rows[0].ravel(), sh_kappa[0],
                              inputs[0].claim_set.rows.ravel()]
    labels: list[str] = []
    nets = [Recording(hub, 0, view, labels), HubTransport(hub, 1), HubTransport(hub, 2)]

    async def run() -> list:
        return list(await asyncio.gather(*(settle_period(n, inp)
                                           for n, inp in zip(nets, inputs, strict=True))))

    results = hub.mpc.run(run())
    LAST_LABELS[:] = labels
    view.append(results[0].lines.ravel())
    if leak:
        opened = F.reconstruct([r.lines for r in results], 1)[:, 4]
        view.append(opened << np.uint64(40))  # the money's low bits into the tested top bits
    return F.reduce(np.concatenate(view).astype(F.U64)), results[0].status


def _elem(value: Fraction) -> int:
    return value.numerator * pow(value.denominator, -1, F.MODULUS) % F.MODULUS


def test_the_data_sets_differ_only_in_what_must_stay_hidden() -> None:
    ca, cb = claims_of(A), claims_of(B_)
    assert all(ca[h].traded_wh == cb[h].traded_wh and ca[h].sell == cb[h].sell for h in ca)
    assert any(ca[h].import_wh != cb[h].import_wh for h in ca)
    money = [B.period_money(B.Side.SELL if ca[h].sell else B.Side.BUY, ca[h].traded_wh,
                            ca[h].import_wh, ca[h].export_wh, PRICE,
                            B.MilliTariff(*TARIFFS[h])).with_market for h in ca]
    assert len(set(money)) > 1


def test_a_servers_view_of_the_settlement_does_not_depend_on_the_readings() -> None:
    views_a, status_a = zip(*(record(A) for _ in range(RUNS)), strict=True)
    views_b, status_b = zip(*(record(B_) for _ in range(RUNS)), strict=True)
    assert set(status_a) == set(status_b) and len(set(status_a)) == 1
    assert set(status_a).pop() == ("settled",) * HOUSEHOLDS
    a, b = np.stack(views_a), np.stack(views_b)
    assert LAST_LABELS and {n for lab in LAST_LABELS if lab.startswith("a2a ")
                            for n in lab.split()[1].split(",")} - {"sync"} == set(OPENED)
    z, df, bonferroni = homogeneity(a, b)
    print(f"settlement view: {a.shape[1]} elements, chi-square z = {z:.2f} on {df} df, "
          f"min p × positions = {bonferroni:.3g}")
    assert abs(z) < 4.0, f"server 0's view depends on the readings (z = {z:.1f})"
    assert bonferroni > 1e-4, "one position of server 0's view depends on the readings"


def test_the_statistic_sees_the_readings_in_the_plain_claims() -> None:
    """Power: the plaintext claim vectors (no sharing) differ between the two sets."""
    def plain(read: dict[int, tuple[int, int]]) -> np.ndarray:
        vec = [c.vector(LAYOUT) for c in claims_of(read).values()]
        return np.concatenate(vec) * np.uint64(1 << 62)  # the bits into the tested top bits

    a = np.stack([plain(A)] * 40)
    b = np.stack([plain(B_)] * 40)
    z, _, bonferroni = homogeneity(a, b)
    assert z > 4.0 or bonferroni < 1e-4


def test_the_statistic_sees_a_planted_opening_of_the_money() -> None:
    """Power inside the protocol's view: the same runs with the money opened to server 0."""
    a = np.stack([record(A, leak=True)[0] for _ in range(40)])
    b = np.stack([record(B_, leak=True)[0] for _ in range(40)])
    z, _, bonferroni = homogeneity(a, b)
    assert z > 4.0 or bonferroni < 1e-4
