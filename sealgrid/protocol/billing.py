"""Private settlement of one period: bind pseudonymous results to named meters, settle under MPC.

Assumes honest-majority, semi-honest servers (as the clearing) and households whose claims may
be false. Inputs of each server, all shares of degree ``t``: per bid slot of the period
``(h, κ, acc_buy, acc_sell)`` — the identity pair the bid carried and its accepted quantities
from the clearing — the shares of the rationing ratios ``V/D(k*)``, ``V/S(k*)``, each
registered household's enrolled credential ``κ_h``, and the named *claims* that arrived with
the meters' readings. Steps:

1. **Oblivious shuffle** of the bid rows (a resharing shuffle, linear work): for every set
   ``A`` of ``t + 1`` servers (the sets that hold a PRSS key), the members turn their shares
   into additive shares by Lagrange weights, permute them by ``π_A`` drawn from ``A``'s key,
   and share the result afresh with everybody. Any ``t`` servers miss one set, so nobody
   knows the composed permutation: a row's new place says nothing of its bid slot (and so
   of its pseudonym).
2. **Binding**: ``h`` of every shuffled row is opened (so the servers learn which households
   bid this period, not which pseudonym or bid was theirs) and ``κ − κ_h`` is zero-tested
   (a masked opening). A row naming no household, a household twice, or with a credential
   that is not that household's is void (``identity_mismatch``): nobody but ``h`` knows
   ``κ_h``, so no bid can be settled on another's account.
3. **Ratios**: on a trading period the two ratios are opened (every long-side household and
   every supplier of a long-side customer learns its side's ratio anyway; see
   docs/privacy.md) and cut to :data:`~sealgrid.mechanism.billing.RATIO_BITS` digits.
4. **Claims** (:class:`ClaimLayout`): the household supplies, as shares with bit
   decompositions, its meter's import and export, its settled energy ``t̂`` with the
   remainder ``z`` such that ``acc·c = 2^20·t̂ + z``, its side ``σ`` and the split of its
   deviation ``u = u⁺ − u⁻`` (``u⁺·u⁻ = 0``). Three random folds of degree-2 checks are
   opened per claim, each 0 for an honest one: its bits, its trade and its split. A
   refused claim names the rule; the household is then settled as one without a reading.
5. **Money**: ``−p·t̂ + e·E + σ·((2p − f)·t̂ − e·E − r·I) − r·u⁺ + e·u⁻`` (one reshare per
   household); without a reading ``I = E = 0`` and ``t̂`` comes from an exact secure
   truncation (``Transport.floor_shift``), the money then ``(e − p)·t̂_b + (p − f − r)·t̂_s``.

Outputs: per registered household a row of shares ``(bought, sold, import, export, money
with the market, money without)`` in Wh and micro-units, and a public status per household
(``settled``, ``missing_reading``, or the refused claim's reason). Nothing else is opened.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one BLAS thread per server process: m servers share the cores
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import hashlib
import json
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import combinations
from pathlib import Path

import numpy as np

from sealgrid.mechanism import billing as B
from sealgrid.protocol import field as F
from sealgrid.protocol.disclosure import reveal_shares
from sealgrid.protocol.encoding import RATIO_LIMIT, threshold
from sealgrid.protocol.party import (
    SECINT_BITS,
    Laps,
    Transport,
    peak_memory_bytes,
    reshare,
)
from sealgrid.protocol.validation import SOUNDNESS_BITS, prss_masks, seed_from

#: Columns of a settled household row (shares).
LINE_COLUMNS = ("bought_wh", "sold_wh", "import_wh", "export_wh", "money_with", "money_without")
#: Public status of a household's settlement in a period.
SETTLED = "settled"
MISSING = "missing_reading"
#: Reasons a claim is refused, in the order the checks are read.
OUT_OF_RANGE = "reading_out_of_range"
TRADE_MISMATCH = "claimed_trade_mismatch"
SPLIT_MISMATCH = "deviation_split_mismatch"
#: Reason a bid row is void at the binding.
IDENTITY_MISMATCH = "identity_mismatch"
#: The names the settlement opens (through the disclosure door), in order.
OPENED = ("shuffled_identities", "credential_checks", "rationing_ratios",
          "claim_challenge_seed", "claim_checks")
#: The largest bid quantity the settlement takes: ``acc·⌊2^20·V/L⌋`` must stay a positive
#: SECINT_BITS-bit signed integer for the exact truncation of a household without a reading.
MAX_SETTLED_WH = 2 ** (SECINT_BITS - 1 - B.RATIO_BITS) - 1
#: A meter reading per period is below 2^20 Wh (about 1 MWh) by default.
DEFAULT_READING_BITS = 20


@dataclass(frozen=True)
class ClaimLayout:
    """Where each part of a household's claim sits in its shared vector."""

    quantity_bits: int  # bits of t̂ (≤ the market's maximum quantity)
    reading_bits: int = DEFAULT_READING_BITS  # bits of the import and of the export

    @classmethod
    def of(cls, max_quantity_wh: int) -> ClaimLayout:
        """The claims' layout in a market whose bids are at most ``max_quantity_wh``.

        Raises:
            ValueError: bids that large cannot be settled (:data:`MAX_SETTLED_WH`).
        """
        if max_quantity_wh > MAX_SETTLED_WH:
            raise ValueError(f"the settlement takes bids of at most {MAX_SETTLED_WH} Wh (its "
                             f"exact truncation works on {SECINT_BITS}-bit signed integers)")
        return cls(quantity_bits=max_quantity_wh.bit_length())

    @property
    def split_bits(self) -> int:
        """Bits of u⁺ and of u⁻ (|u| ≤ max(reading, quantity))."""
        return max(self.reading_bits, self.quantity_bits) + 1

    @property
    def parts(self) -> dict[str, tuple[int, int]]:
        """Name → (start, bits): side σ, t̂, z, I, E, u⁺, u⁻ (all as bits)."""
        sizes = [("side", 1), ("traded", self.quantity_bits), ("remainder", B.RATIO_BITS),
                 ("import", self.reading_bits), ("export", self.reading_bits),
                 ("up", self.split_bits), ("down", self.split_bits)]
        out, start = {}, 0
        for name, bits in sizes:
            out[name] = (start, bits)
            start += bits
        return out

    @property
    def width(self) -> int:
        """Field elements per claim."""
        return sum(b for _, b in self.parts.values())

    def max_reading_wh(self) -> int:
        """The largest import or export a claim can carry."""
        return (1 << self.reading_bits) - 1

    def powers(self, name: str) -> np.ndarray:
        """Coefficients (2^i) that turn part ``name``'s bits into its value (zeros elsewhere)."""
        start, bits = self.parts[name]
        out = np.zeros(self.width, dtype=object)
        out[start:start + bits] = [1 << i for i in range(bits)]
        return out


@dataclass(frozen=True)
class Claim:
    """A household's plaintext claim for one period (built by its agent from its own data)."""

    sell: bool
    traded_wh: int
    remainder: int
    import_wh: int
    export_wh: int

    @classmethod
    def of(cls, sell: bool, accepted_wh: int, ratio: Fraction, import_wh: int,
           export_wh: int) -> Claim:
        """The honest claim of a household that had ``accepted_wh`` accepted on a side with
        rationing ratio ``ratio`` (0 and any ratio when it did not bid or was not accepted)."""
        x = accepted_wh * B.ratio_fixed(ratio) if accepted_wh else 0
        return cls(sell, x >> B.RATIO_BITS, x & ((1 << B.RATIO_BITS) - 1), import_wh, export_wh)

    def vector(self, layout: ClaimLayout) -> np.ndarray:
        """The claim as plaintext field elements (bits), checked against the layout.

        Raises:
            ValueError: a value does not fit its bits (the reading is out of range).
        """
        side = B.Side.SELL if self.sell else B.Side.BUY
        u = B.deviation(side, self.traded_wh, self.import_wh, self.export_wh)
        values = {"side": int(self.sell), "traded": self.traded_wh, "remainder": self.remainder,
                  "import": self.import_wh, "export": self.export_wh, "up": max(u, 0),
                  "down": max(-u, 0)}
        out = np.zeros(layout.width, dtype=F.U64)
        for name, (start, bits) in layout.parts.items():
            v = values[name]
            if not 0 <= v < (1 << bits):
                raise ValueError(f"{name} {v} is outside 0 … {(1 << bits) - 1}")
            out[start:start + bits] = [(v >> i) & 1 for i in range(bits)]
        return out


def share_claim(claim: Claim, layout: ClaimLayout, parties: int,
                key: bytes | None = None) -> list[np.ndarray]:
    """Split a claim into one share vector per server (index = party)."""
    t = threshold(parties)
    vec = claim.vector(layout)
    key = key if key is not None else secrets.token_bytes(16)
    coeffs = [F.stream(key, f"claim/{j}", vec.size) for j in range(t)]
    return F.share(vec, t, parties, coeffs)


@dataclass(frozen=True)
class Claims:
    """The claims one server holds for a period: the households' indices (1-based, sorted)
    and their share vectors as the rows of one array."""

    households: tuple[int, ...]
    rows: np.ndarray  # (K, width)

    @classmethod
    def of(cls, claims: Mapping[int, np.ndarray], width: int) -> Claims:
        """From a mapping household index → share vector."""
        ids = tuple(sorted(claims))
        rows = (np.stack([np.asarray(claims[h], dtype=F.U64) for h in ids]) if ids
                else np.zeros((0, width), dtype=F.U64))
        return cls(ids, rows)

    def __len__(self) -> int:
        return len(self.households)


@dataclass(frozen=True)
class SettleInput:
    """One server's inputs for settling one period (see the module docstring)."""

    rows: np.ndarray  # (4, N) shares of h, κ, accepted buy, accepted sell per bid slot
    ratios: np.ndarray  # (2,) shares of V/D(k*), V/S(k*)
    price: int | None  # the clearing price in milli-units per kWh; None: no trade
    credentials: np.ndarray  # (H,) shares of κ_h, household index h − 1
    tariffs: np.ndarray  # (H, 3) int64: retail, feed-in, network fee (milli) of h's supplier
    claims: Claims | Mapping[int, np.ndarray]  # by household index h (1-based)
    layout: ClaimLayout

    def __post_init__(self) -> None:
        if not isinstance(self.claims, Claims):
            object.__setattr__(self, "claims", Claims.of(self.claims, self.layout.width))

    @property
    def claim_set(self) -> Claims:
        """The claims as one array (what ``__post_init__`` made of them)."""
        assert isinstance(self.claims, Claims)
        return self.claims

    @property
    def households(self) -> int:
        return int(self.credentials.shape[0])


@dataclass(frozen=True)
class SettleResult:
    """One server's settlement of a period."""

    lines: np.ndarray  # (H, 6) shares, columns LINE_COLUMNS
    status: tuple[str, ...]  # per household (index h − 1): SETTLED, MISSING or a refusal
    void_rows: int  # bid rows void at the binding (identity_mismatch)
    bidders: int  # households bound to a bid row
    online_seconds: float = 0.0
    bytes_sent: int = 0
    peak_rss_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)


def subsets(parties: int) -> list[tuple[int, ...]]:
    """The sets of ``t + 1`` servers, each holding one PRSS key (sorted)."""
    t = threshold(parties)
    return list(combinations(range(parties), parties - t))


def _permutation(key: bytes, label: str, n: int) -> np.ndarray:
    seed = hashlib.sha256(b"sealgrid/shuffle\0" + key + label.encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(seed, "little"))).permutation(n)


async def shuffle(net: Transport, rows: np.ndarray, label: str) -> np.ndarray:
    """Apply a permutation nobody knows to the columns of ``rows`` (shape (k, N), degree t).

    One round per set ``A`` of ``t + 1`` servers: members turn their shares into additive
    shares (Lagrange weights of ``A`` at 0), permute them by ``π_A`` (from ``A``'s PRSS key
    and ``label``) and share them afresh; everybody sums what the members sent. The result
    is a fresh degree-t sharing of the rows in the order ``π_last ∘ … ∘ π_first``.
    """
    m, t, me = net.parties, net.threshold, net.pid
    n = rows.shape[1]
    for subset in subsets(m):
        if me in subset:
            weight = F.lagrange_at([j + 1 for j in subset], 0)[subset.index(me)]
            mine = F.scale(rows, weight)[:, _permutation(net.prss_keys[subset], label, n)]
            key = secrets.token_bytes(16)
            coeffs = [F.stream(key, f"shuffle/{j}", mine.size).reshape(mine.shape)
                      for j in range(t)]
            parts = F.share(np.ascontiguousarray(mine), t, m, coeffs)
        else:
            parts = [np.zeros_like(rows) for _ in range(m)]
        got = await net.scatter(parts)
        rows = np.zeros_like(rows)
        for j in subset:
            rows = F.add(rows, np.asarray(got[j], dtype=F.U64).reshape(rows.shape))
    return rows


def _opened(shares: Sequence[np.ndarray], t: int) -> list[int]:
    """Reconstruct opened degree-t shares (checked) as Python ints."""
    return [int(v) for v in F.reconstruct([np.asarray(s, dtype=F.U64) for s in shares], t)]


def _zero(opened: Sequence[np.ndarray], m: int) -> np.ndarray:
    """Which opened degree-2t values are 0."""
    return F.combine(opened, F.lagrange_at(list(range(1, m + 1)), 0)) == 0


async def settle_period(net: Transport, inp: SettleInput) -> SettleResult:
    """Settle one period on this server's shares (every server runs it with its own)."""
    m, t, me = net.parties, net.threshold, net.pid
    hh = inp.households
    lay = inp.layout
    await net.all_to_all(np.zeros(1, dtype=F.U64))  # line the parties' clocks up
    start = time.perf_counter()
    lap = Laps(start)
    n = inp.rows.shape[1]
    # 1–2. Shuffle, open the identities, zero-test the credentials.
    rows = await shuffle(net, np.asarray(inp.rows, dtype=F.U64), "settlement") if n else inp.rows
    named = np.zeros((2, hh), dtype=F.U64)
    void, bidders = 0, 0
    bound: list[int] = []  # household indices (h − 1) bound to a bid row
    if n:
        ids = _opened(await reveal_shares("shuffled_identities", rows[0], net.all_to_all), t)
        ok = np.array([1 <= h <= hh for h in ids], dtype=bool)
        index = np.array([h - 1 if k else 0 for h, k in zip(ids, ok, strict=True)], dtype=np.int64)
        diff = F.sub(rows[1], inp.credentials[index] if hh else rows[1])
        rnd, zero = prss_masks(net.prss_keys, me, m, t, "credential", n)
        masked = F.add(F.mul(diff, rnd), zero)
        opened = await reveal_shares("credential_checks", masked, net.all_to_all)
        ok &= _zero(opened, m)
        # A household with two rows that both carry its own κ voids both (only it could have
        # made them); a row naming it with another κ is void alone and touches nothing of it.
        seen: dict[int, int] = {}
        for j, h in enumerate(ids):
            if ok[j]:
                seen[h] = seen.get(h, 0) + 1
        ok &= np.array([seen.get(h, 0) == 1 for h in ids], dtype=bool)
        void = int(n - ok.sum())
        bidders = int(ok.sum())
        named[:, index[ok]] = rows[2:4, ok]
        bound = sorted(int(k) for k in index[ok])
    lap("shuffle_and_binding")
    # 3. Ratios, cut to RATIO_BITS digits (public).
    c_buy = c_sell = 0
    if inp.price is not None:
        opened = await reveal_shares("rationing_ratios", np.asarray(inp.ratios, F.U64),
                                     net.all_to_all)
        c_buy, c_sell = (B.ratio_fixed(F.rational(v, RATIO_LIMIT))
                         for v in _opened(opened, t))
    x = F.add(F.scale(named[0], c_buy), F.scale(named[1], c_sell))  # acc·c, per household
    # 4. Claims: three folded degree-2 checks each.
    held = inp.claim_set
    keep_rows = np.array([1 <= h <= hh for h in held.households], dtype=bool)
    claimed = [h for h in held.households if 1 <= h <= hh]
    status = [MISSING] * hh
    accepted: list[int] = []
    if claimed:
        mine = np.frombuffer(secrets.token_bytes(32), dtype="<u8").astype(F.U64)
        seed = seed_from([c.tobytes() for c in await reveal_shares(
            "claim_challenge_seed", mine, net.all_to_all)])
        vec = np.asarray(held.rows, dtype=F.U64)[keep_rows]
        values = _values(vec, lay)
        checks = _claim_checks(lay, vec, values, x[np.array(claimed) - 1],
                               named[:, np.array(claimed) - 1], seed)
        # reshared to degree t, then times a fresh random r: the opening shows r·check,
        # 0 for an honest claim and uniform on the non-zero elements for a false one
        fresh = await reshare(net, checks.reshape(-1))
        rnd, zero = prss_masks(net.prss_keys, me, m, t, "claims", checks.size)
        opened = await reveal_shares("claim_checks", F.add(F.mul(fresh, rnd), zero),
                                     net.all_to_all)
        good = _zero(opened, m).reshape(checks.shape)
        for k, h in enumerate(claimed):
            if not good[0, k]:
                status[h - 1] = OUT_OF_RANGE
            elif not good[1, k]:
                status[h - 1] = TRADE_MISMATCH
            elif not good[2, k]:
                status[h - 1] = SPLIT_MISMATCH
            else:
                status[h - 1] = SETTLED
                accepted.append(h)
    lap("claims")
    # 5. Money.
    lines = np.zeros((hh, len(LINE_COLUMNS)), dtype=F.U64)
    price = inp.price or 0
    tariffs = np.asarray(inp.tariffs, dtype=np.int64).reshape(hh, 3)
    if accepted:
        idx = np.array(accepted) - 1
        keep = np.isin(np.array(claimed), np.array(accepted))
        part = {name: v[keep] for name, v in values.items()}
        sigma, tt, imp, exp = part["side"], part["traded"], part["import"], part["export"]
        r, e, f = (tariffs[idx, i] for i in range(3))
        inner = F.sub(F.sub(_times(tt, 2 * price - f), _times(exp, e)), _times(imp, r))
        money2 = F.add(F.mul(sigma, inner),
                       F.add(F.sub(_times(exp, e), _times(tt, price)),
                             F.sub(_times(part["down"], e), _times(part["up"], r))))
        sold2 = F.mul(sigma, tt)
        fresh = await reshare(net, np.concatenate([money2, sold2]))
        money, sold = fresh[:len(idx)], fresh[len(idx):]
        lines[idx, 0] = F.sub(tt, sold)
        lines[idx, 1] = sold
        lines[idx, 2], lines[idx, 3] = imp, exp
        lines[idx, 4] = money
        lines[idx, 5] = F.sub(_times(exp, e), _times(imp, r))
    missing = np.array([k for k in bound if status[k] != SETTLED], dtype=np.int64)
    if len(missing) and inp.price is not None:
        scaled = np.concatenate([F.scale(named[0, missing], c_buy),
                                 F.scale(named[1, missing], c_sell)])
        floors = await net.floor_shift(scaled, B.RATIO_BITS + lay.quantity_bits, B.RATIO_BITS)
        tb, ts = floors[:len(missing)], floors[len(missing):]
        r, e, f = (tariffs[missing, i] for i in range(3))
        lines[missing, 0], lines[missing, 1] = tb, ts
        lines[missing, 4] = F.add(_times(tb, e - price), _times(ts, price - f - r))
    lap("money")
    return SettleResult(lines, tuple(status), void, bidders, time.perf_counter() - start,
                        net.bytes_sent(), peak_memory_bytes(), lap.phases)


def fraction_element(value: Fraction) -> int:
    """The field element of an exact fraction (numerator times the denominator's inverse)."""
    return value.numerator % F.MODULUS * pow(value.denominator, -1, F.MODULUS) % F.MODULUS


def cycle_totals(lines: Sequence[np.ndarray]) -> np.ndarray:
    """A server's shares of each household's cycle totals: the sum of its period lines."""
    total = np.zeros_like(np.asarray(lines[0], dtype=F.U64))
    for period in lines:
        total = F.add(total, np.asarray(period, dtype=F.U64))
    return total


def group_totals(totals: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Shares of the column sums of ``totals`` (H, C) per group (a supplier, a region…):
    row ``g`` sums the households ``h`` with ``group[h] == g``. Vectorised: the 32-bit halves
    are summed exactly in uint64 (fewer than 2^32 rows) and combined mod p."""
    x = np.asarray(totals, dtype=F.U64)
    idx = np.asarray(group, dtype=np.int64)
    lo = np.zeros((groups, x.shape[1]), dtype=F.U64)
    hi = np.zeros((groups, x.shape[1]), dtype=F.U64)
    np.add.at(lo, idx, x & np.uint64(0xFFFFFFFF))
    np.add.at(hi, idx, x >> np.uint64(32))
    out = [(int(h) << 32) + int(low) for h, low in zip(hi.ravel(), lo.ravel(), strict=True)]
    return np.array([v % F.MODULUS for v in out], dtype=F.U64).reshape(groups, x.shape[1])


def _times(x: np.ndarray, c: np.ndarray | int) -> np.ndarray:
    """x·c for public integers c (one per element, or one for all; negative allowed)."""
    c_arr = np.broadcast_to(np.asarray(c, dtype=np.int64), x.shape)
    return F.mul(x, F.from_int64(c_arr))


_LIMB = 11  # powers of two applied 11 bits at a time: exact in float64 BLAS
_ROWS = 2048  # claims per pass of the limb arithmetic (keeps its temporaries in cache)


def _values(vec: np.ndarray, lay: ClaimLayout) -> dict[str, np.ndarray]:
    """Shares of every part of each claim (its bits times powers of two), two BLAS calls."""
    names = list(lay.parts)
    lo = np.zeros((lay.width, len(names)))
    hi = np.zeros((lay.width, len(names)))
    for j, name in enumerate(names):
        start, bits = lay.parts[name]
        for i in range(bits):
            (lo if i < _LIMB else hi)[start + i, j] = 1 << (i % _LIMB)
    low = _dot_rows(vec, lo, _LIMB)
    high = _dot_rows(vec, hi, _LIMB)
    both = F.add(low, F.mul_small(high, 1 << _LIMB))
    return {name: np.ascontiguousarray(both[:, j]) for j, name in enumerate(names)}


def _dot_rows(x: np.ndarray, coef: np.ndarray, bits: int) -> np.ndarray:
    """:func:`field.dot_small` over row chunks that stay in cache."""
    return np.concatenate([F.dot_small(x[i:i + _ROWS], coef, bits)
                           for i in range(0, x.shape[0], _ROWS)] or
                          [np.zeros((0, coef.shape[1]), dtype=F.U64)])


def _square_fold(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``Σ_i coef[i, r]·x[:, i]²`` mod p for every row and column ``r``, exactly.

    Each share is cut into four 16-bit limbs; every product of two limbs is below 2^32 and,
    with coefficients below 2^14 summed over fewer than 128 columns, each limb-pair fold stays
    below 2^53, so it runs in float64 BLAS; the ten limb pairs are combined mod p.
    """
    if x.shape[1] >= 128 or coef.max(initial=0) >= 2**14:
        raise ValueError("too many columns or too wide coefficients for an exact fold")
    weights = [[F.const((2 if a != b else 1) * pow(2, 16 * (a + b), F.MODULUS))
                for b in range(4)] for a in range(4)]
    out = np.zeros((x.shape[0], coef.shape[1]), dtype=F.U64)
    for start in range(0, x.shape[0], _ROWS):  # in chunks that stay in cache
        chunk = np.ascontiguousarray(x[start:start + _ROWS], dtype="<u8")
        parts = chunk.view("<u2").reshape(*chunk.shape, 4)  # the 16-bit limbs, low first
        limbs = [parts[..., a].astype(np.float64) for a in range(4)]
        acc = np.zeros((len(chunk), coef.shape[1]), dtype=F.U64)
        for a in range(4):
            for b in range(a, 4):
                partial = ((limbs[a] * limbs[b]) @ coef).astype(F.U64)  # exact: below 2^53
                acc = F.add(acc, F.mul(partial, weights[a][b]))
        out[start:start + len(chunk)] = acc
    return out


def _claim_checks(lay: ClaimLayout, vec: np.ndarray, part: dict[str, np.ndarray],
                  x: np.ndarray, acc: np.ndarray, seed: bytes) -> np.ndarray:
    """Degree-2 shares of three random folds per claim (bits, trade, split): all 0 if honest.

    ``part``: shares of each part's value; ``x``: shares of ``acc·c`` per claim; ``acc``:
    (2, K) accepted buy and sell quantities. The bits are folded with small coefficients in
    float64 BLAS, ``R`` times (each passed falsely with probability ≤ 2^-(bits − 1)), and the
    ``R`` folds with full random field elements.
    """
    k = vec.shape[0]
    bits = 53 - 32 - max(1, lay.width - 1).bit_length()
    rounds = -(-SOUNDNESS_BITS // (bits - 1))
    small = F.small_stream(seed, "claim/bits", lay.width * rounds, bits)
    rho = small.reshape(lay.width, rounds).astype(np.float64)
    # Σ ρ_i·(β_i² − β_i) per claim and round: β² through 16-bit limbs in float64 BLAS
    folds = F.sub(_square_fold(vec, rho), _dot_rows(vec, rho, bits))
    w = F.stream(seed, "claim/folds", rounds + 3)
    bit_check = np.zeros(k, dtype=F.U64)
    for r in range(rounds):
        bit_check = F.add(bit_check, F.mul(np.ascontiguousarray(folds[:, r]), w[r:r + 1]))
    sigma, tt = part["side"], part["traded"]
    one_minus = F.sub(np.ones(k, dtype=F.U64), sigma)
    floor_eq = F.sub(F.sub(x, F.scale(tt, 1 << B.RATIO_BITS)), part["remainder"])
    wt = w[rounds:]
    trade = F.add(floor_eq, F.add(F.mul(F.mul(sigma, acc[0]), wt[0:1]),
                                  F.mul(F.mul(one_minus, acc[1]), wt[1:2])))
    # u = I − t̂ + σ(2t̂ − I − E); u⁺ − u⁻ − u = 0 and u⁺·u⁻ = 0
    lin = F.sub(part["import"], tt)
    quad = F.mul(sigma, F.sub(F.sub(F.scale(tt, 2), part["import"]), part["export"]))
    split = F.sub(F.sub(part["up"], part["down"]), F.add(lin, quad))
    split = F.add(split, F.mul(F.mul(part["up"], part["down"]), wt[2:3]))
    return np.stack([bit_check, trade, split])


# --- files: how a server process receives its settlement inputs and returns its result ----

_INPUT_META = "settle.json"


def write_input(directory: Path, inp: SettleInput) -> None:
    """Write one server's settlement inputs to ``directory`` (raw little-endian arrays)."""
    claimed = list(inp.claim_set.households)
    claims = inp.claim_set.rows
    meta = {"version": 1, "price": inp.price, "bids": int(inp.rows.shape[1]),
            "households": inp.households, "claimed": claimed,
            "quantity_bits": inp.layout.quantity_bits, "reading_bits": inp.layout.reading_bits}
    arrays = {"settle_rows.u64": inp.rows, "settle_ratios.u64": inp.ratios,
              "credentials.u64": inp.credentials, "claims.u64": claims}
    for name, arr in arrays.items():
        (directory / name).write_bytes(np.ascontiguousarray(arr, dtype="<u8").tobytes())
    (directory / "tariffs.i64").write_bytes(
        np.ascontiguousarray(inp.tariffs, dtype="<i8").tobytes())
    (directory / _INPUT_META).write_text(json.dumps(meta))


def read_input(directory: Path) -> SettleInput:
    """Read what :func:`write_input` wrote."""
    meta = json.loads((directory / _INPUT_META).read_text())
    layout = ClaimLayout(int(meta["quantity_bits"]), int(meta["reading_bits"]))

    def u64(name: str) -> np.ndarray:
        return np.fromfile(directory / name, dtype="<u8").astype(F.U64)

    hh = int(meta["households"])
    claimed = [int(h) for h in meta["claimed"]]
    claims = u64("claims.u64").reshape(len(claimed), layout.width)
    return SettleInput(
        rows=u64("settle_rows.u64").reshape(4, int(meta["bids"])),
        ratios=u64("settle_ratios.u64"),
        price=None if meta["price"] is None else int(meta["price"]),
        credentials=u64("credentials.u64"),
        tariffs=np.fromfile(directory / "tariffs.i64", dtype="<i8").reshape(hh, 3),
        claims=Claims(tuple(claimed), claims),
        layout=layout,
    )


def write_result(directory: Path, result: SettleResult) -> None:
    """Write a server's settlement result (shares raw, the public part as JSON)."""
    (directory / "settle_lines.u64").write_bytes(
        np.ascontiguousarray(result.lines, dtype="<u8").tobytes())
    (directory / "settle_result.json").write_text(json.dumps({
        "version": 1, "status": list(result.status), "void_rows": result.void_rows,
        "bidders": result.bidders, "online_seconds": result.online_seconds,
        "bytes_sent": result.bytes_sent, "peak_rss_bytes": result.peak_rss_bytes,
        "phases": result.phases}))


def read_result(directory: Path) -> SettleResult:
    """Read what :func:`write_result` wrote."""
    info = json.loads((directory / "settle_result.json").read_text())
    status = tuple(str(s) for s in info["status"])
    lines = np.fromfile(directory / "settle_lines.u64", dtype="<u8").astype(F.U64)
    return SettleResult(lines.reshape(len(status), len(LINE_COLUMNS)), status,
                        int(info["void_rows"]), int(info["bidders"]),
                        float(info["online_seconds"]), int(info["bytes_sent"]),
                        int(info["peak_rss_bytes"]),
                        {k: float(v) for k, v in info.get("phases", {}).items()})


def main() -> int:
    """Entry point of one server's settlement process (MPyC options on the command line):
    ``python -m sealgrid.protocol.billing --data-dir DIR -I i -P … --ssl -K 26`` reads
    ``DIR/settle.json`` and its arrays (:func:`write_input`) and writes the result there."""
    import argparse

    from mpyc.runtime import mpc  # parses and strips MPyC's own options from sys.argv

    from sealgrid.protocol.party import SEC_PARAM, run_party

    parser = argparse.ArgumentParser(prog="sealgrid.protocol.billing")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--session", metavar="NAME",
                        help="this run's name on its links (TLS ALPN; party --session)")
    args = parser.parse_args(sys.argv[1:])
    if mpc.options.sec_param != SEC_PARAM or len(mpc.parties) < 3:
        print("run with -K 26 and at least 3 parties", file=sys.stderr)
        return 2
    inp = read_input(args.data_dir)
    result = run_party(mpc, args.timeout, lambda net: settle_period(net, inp),
                       session=args.session)
    if result is None:
        return 3
    write_result(args.data_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
