"""One server's local share arithmetic (no I/O, no MPC runtime); assumes degree-t input shares.

Everything here runs on this party's own shares only, in vectorised NumPy over uint64 field
elements, chunk by chunk (the batch may be a memory map of millions of bids):

* the **validity value** of each bid — every rule a bid must satisfy folded with public random
  weights into one degree-2t value that is 0 for a valid bid (see :meth:`PartyState.check`);
* the **degree check** — a random combination of all the bid's shares plus a random degree-t
  mask; all ``m`` opened shares must lie on one degree-t polynomial;
* each level's total quantity per side, ``Σ_i w_i[hi]·e_i[lo]``, as one exact matrix product
  over all bids (degree 2t, reshared by the caller);
* after the clearing level is public: each bid's accepted buy and sell quantity (degree 2t)
  and, from their reshared degree-t versions, each supplier's totals (degree 2t).

The masks come from pseudorandom secret sharing (Cramer–Damgård–Ishai) keyed by the MPyC
runtime's PRSS keys, so they cost no communication.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import Layout, ShareBatch

CHUNK = 4096  # bids per NumPy/BLAS call on whole bid vectors
BLOCK = 32768  # bids per pass of per-bid arithmetic (keeps temporaries in cache)
SOUNDNESS_BITS = 40  # a malformed bid passes a one-hot check with probability < 2^-40
_LIMB = 8  # powers of two in the range proof are applied 8 bits at a time (exact in BLAS)


def challenge_bits(layout: Layout) -> int:
    """Width of the small public challenge coefficients for one market configuration.

    Chosen so that a 32-bit half of a share times a coefficient, summed over the longest
    part of a bid, stays below 2^53: the products run exactly in float64 BLAS.
    """
    longest = max(2 * layout.coarse, layout.fine, 2 * layout.bits, layout.suppliers)
    bits = min(16, 53 - 32 - (longest - 1).bit_length())
    if bits < 4:
        raise ValueError("too many price levels or suppliers for the exact one-hot check")
    return bits


def repeats(layout: Layout) -> int:
    """Independent challenges per check; each is passed falsely with p ≤ 2^-(bits−1)."""
    return -(-SOUNDNESS_BITS // (challenge_bits(layout) - 1))


@dataclass(frozen=True)
class Challenge:
    """Public random coefficients, derived from a seed the servers draw after inputs are fixed."""

    w_cols: np.ndarray  # (2H, 1 + 3·R): ones, then r, r² low limb, r² high limb per repeat
    e_cols: np.ndarray  # (L, 1 + 3·R) likewise for the fine one-hot vector
    s_cols: np.ndarray  # (S, 1 + 3·R) likewise for the supplier vector
    b_cols: np.ndarray  # (2b, R) small random weights for the bit checks
    bits: int
    repeats: int
    gamma: np.ndarray  # fold weights, full field
    lam: np.ndarray  # degree-check weights, full field

    @classmethod
    def derive(cls, seed: bytes, layout: Layout) -> Challenge:
        bits = challenge_bits(layout)
        reps = repeats(layout)
        low = np.uint64((1 << bits) - 1)

        def cols(n: int, name: str) -> np.ndarray:
            out = [np.ones(n, dtype=F.U64)]
            for j in range(reps):
                r = F.small_stream(seed, f"{name}/{j}", n, bits)
                r2 = r * r
                out += [r, r2 & low, r2 >> np.uint64(bits)]
            return np.stack(out, axis=1)

        b_cols = np.stack([F.small_stream(seed, f"b/{j}", 2 * layout.bits, bits)
                           for j in range(reps)], axis=1)
        n = 5 + 4 * reps
        return cls(cols(2 * layout.coarse, "w"), cols(layout.fine, "e"),
                   cols(layout.suppliers, "s"), b_cols, bits, reps,
                   F.stream(seed, "gamma", n), F.stream(seed, "lambda", n))


def _join(parts: np.ndarray, bits: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """From dot products with the challenge columns, return (r·x, r²·x) of repeat ``j``."""
    a = parts[:, 1 + 3 * j]
    b = F.add(parts[:, 2 + 3 * j], F.mul_small(parts[:, 3 + 3 * j], 1 << bits))
    return a, b


def _limbs(x: np.ndarray) -> np.ndarray:
    """Each share as four 16-bit limbs in float64, entry-major: shape (rows, 4·K)."""
    x = np.ascontiguousarray(x, dtype=F.U64)
    return x.view(np.uint16).reshape(x.shape[0], -1).astype(np.float64)


def _products(w: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Σ_rows w[:, a]·e[:, b] per limb pair, exactly, as uint64 (rows ≤ 2^21)."""
    return (_limbs(w).T @ _limbs(e)).astype(F.U64)


def _fold_limbs(acc: np.ndarray, a: int, b: int) -> list[list[int]]:
    """Combine limb-pair sums (4a × 4b) into field elements: Σ 2^(16(i+j))·acc[(x,i),(y,j)]."""
    out = []
    for x in range(a):
        row = []
        for y in range(b):
            total = 0
            for i in range(4):
                for j in range(4):
                    total += int(acc[4 * x + i, 4 * y + j]) << (16 * (i + j))
            row.append(total % F.MODULUS)
        out.append(row)
    return out


def prss_masks(
    keys: Mapping[tuple[int, ...], bytes], pid: int, m: int, t: int, label: str, n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """This party's shares of ``n`` random values (degree t) and of ``n`` zeros (degree 2t).

    Pseudorandom secret sharing: each set ``A`` of ``m − t`` parties holds a key; the polynomial
    ``Π_{j∉A} (x_j − u)`` vanishes on the parties outside ``A``, so the ``t`` parties outside
    never learn the stream of ``A`` and cannot tell the masks from uniform.
    """
    u = pid + 1
    rnd = np.zeros(n, dtype=F.U64)
    zero = np.zeros(n, dtype=F.U64)
    for subset, key in sorted(keys.items()):
        if pid not in subset:
            continue
        vanish = 1
        for j in range(m):
            if j not in subset:
                vanish = vanish * (j + 1 - u) % F.MODULUS
        rnd = F.add(rnd, F.scale(F.stream(key, f"{label}/rnd", n), vanish))
        for s in range(1, t + 1):
            coef = vanish * pow(u, s, F.MODULUS) % F.MODULUS
            zero = F.add(zero, F.scale(F.stream(key, f"{label}/zero/{s}", n), coef))
    return rnd, zero


class PartyState:
    """One server's view of one period: its share batch and what it has derived from it."""

    def __init__(self, batch: ShareBatch, pid: int, parties: int, threshold: int,
                 prss_keys: Mapping[tuple[int, ...], bytes]) -> None:
        self.batch = batch
        self.layout = batch.layout
        self.pid = pid
        self.m = parties
        self.t = threshold
        self.keys = prss_keys
        self.valid = np.ones(len(batch), dtype=bool)
        lay = self.layout
        self._products = np.zeros((8 * lay.coarse, 4 * lay.fine), dtype=F.U64)

    # --- validation -------------------------------------------------------------------
    def check(self, seed: bytes) -> np.ndarray:
        """Return this party's masked shares of (validity value, degree check), shape (2, N).

        Validity value (degree 2t, 0 iff the bid is well formed, else random-looking): with
        q = Σw, public random r (per repeat) and weights γ,
        ``(q − 1 − Σ2^j·lo_j)``, ``(max − q − Σ2^j·hi_j)``, ``(Σe − 1)``, ``(Σs − 1)``,
        ``(r·w)² − q·(r²·w)`` (w has at most one non-zero entry), ``(r'·e)² − r'²·e`` and
        ``(r''·s)² − r''²·s`` (e and s are one-hot), ``Σ β_j·b_j(b_j − 1)`` (bits are bits),
        and ``w[last block]·Σ e[lo beyond the grid]`` (the level is on the grid).
        """
        lay = self.layout
        ch = Challenge.derive(seed, lay)
        n = len(self.batch)
        reps = ch.repeats
        nb = 2 * lay.bits
        groups = -(-lay.bits // _LIMB)
        pow2 = np.zeros((nb, 2 * groups), dtype=F.U64)  # column (side, group): 2^(j mod 8)
        for j in range(lay.bits):
            for side in range(2):
                pow2[side * lay.bits + j, side * groups + j // _LIMB] = 1 << (j % _LIMB)
        bit_cols = np.concatenate([ch.b_cols, pow2], axis=1)
        beyond = lay.levels - lay.fine * (lay.coarse - 1)  # fine levels in the last block
        off_grid = np.zeros((lay.fine, 1), dtype=F.U64)
        off_grid[beyond:, 0] = 1
        out = np.empty((2, n), dtype=F.U64)
        self._products[:] = 0
        e_cols = np.concatenate([ch.e_cols, off_grid], axis=1)
        bit_range = slice(lay.low_bits.start, lay.high_bits.stop)
        for first in range(0, n, BLOCK):  # blocks small enough for the CPU caches
            m = min(BLOCK, n - first)
            pw = np.empty((m, ch.w_cols.shape[1]), dtype=F.U64)
            pe = np.empty((m, e_cols.shape[1]), dtype=F.U64)
            ps = np.empty((m, ch.s_cols.shape[1]), dtype=F.U64)
            pb = np.empty((m, reps + 2 * groups), dtype=F.U64)  # Σ β_j·b_j, 2^j·bits by 8
            pb2 = np.empty((m, reps), dtype=F.U64)  # Σ β_j·b_j(b_j − 1)
            last = np.empty(m, dtype=F.U64)  # w[buy, H−1] + w[sell, H−1]
            # Everything that needs a whole bid vector, chunk by chunk.
            for start in range(0, m, CHUNK):
                rows = np.asarray(self.batch.rows[first + start:first + min(start + CHUNK, m)])
                sl = slice(start, start + len(rows))
                w, e = rows[:, lay.w], rows[:, lay.e]
                self._products += _products(w, e)
                pw[sl] = F.dot_small(w, ch.w_cols, ch.bits)
                pe[sl] = F.dot_small(e, e_cols, ch.bits)
                ps[sl] = F.dot_small(rows[:, lay.supplier], ch.s_cols, ch.bits)
                bits = rows[:, bit_range]
                pb[sl] = F.dot_small(bits, bit_cols, max(ch.bits, _LIMB))
                pb2[sl] = F.dot_small(F.sub(F.mul(bits, bits), bits), ch.b_cols, ch.bits)
                last[sl] = F.add(w[:, lay.coarse - 1], w[:, 2 * lay.coarse - 1])
            z, rho = _fold(ch, lay, groups, pw, pe, ps, pb, pb2, last)
            rnd, zero = prss_masks(self.keys, self.pid, self.m, self.t,
                                   f"{seed.hex()}/check/{first}", m)
            out[0, first:first + m] = F.add(z, zero)
            out[1, first:first + m] = F.add(rho, rnd)
            self.batch.release()  # the block's rows are read; their pages can go
        return out

    def accept(self, opened: Sequence[np.ndarray]) -> np.ndarray:
        """Decide validity from every party's masked shares (index = party); return the mask."""
        weights = F.lagrange_at(list(range(1, self.m + 1)), 0)
        for first in range(0, len(self.valid), BLOCK):
            sl = slice(first, first + BLOCK)
            z = F.combine([o[0, sl] for o in opened], weights)
            self.valid[sl] = (z == 0) & F.consistent([o[1, sl] for o in opened], self.t)
        return self.valid

    # --- aggregation ------------------------------------------------------------------
    def curves(self) -> tuple[np.ndarray, np.ndarray]:
        """This party's degree-2t shares of demand D(k) and supply S(k) over the valid bids."""
        return self.cumulative(self.valid_products())

    def valid_products(self) -> np.ndarray:
        """The limb sums ``Σ w ⊗ e`` over the valid bids (after :meth:`check` and
        :meth:`accept`): what :meth:`cumulative` turns into the curves. Sums of several
        segments' limb sums are the limb sums of their union."""
        lay = self.layout
        acc = self._products.copy()
        bad = np.flatnonzero(~self.valid)
        if len(bad):
            rows = np.asarray(self.batch.rows[bad])
            acc -= _products(rows[:, lay.w], rows[:, lay.e])  # exact: acc holds these terms
        return acc

    def cumulative(self, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-level totals from ``Σ w ⊗ x`` limb sums, summed downwards (buy) and upwards."""
        lay = self.layout
        table = _fold_limbs(acc, 2 * lay.coarse, lay.fine)
        at = [[0] * lay.levels, [0] * lay.levels]  # per side, per level
        for side in range(2):
            for hi in range(lay.coarse):
                for lo in range(lay.fine):
                    k = lay.fine * hi + lo
                    if k < lay.levels:
                        at[side][k] = table[side * lay.coarse + hi][lo]
        demand, supply = [0] * lay.levels, [0] * lay.levels
        acc_d = acc_s = 0
        for k in range(lay.levels - 1, -1, -1):
            acc_d = (acc_d + at[0][k]) % F.MODULUS
            demand[k] = acc_d
        for k in range(lay.levels):
            acc_s = (acc_s + at[1][k]) % F.MODULUS
            supply[k] = acc_s
        return F.from_ints(demand), F.from_ints(supply)

    # --- minimum participation: one per accepted bid ------------------------------------
    @property
    def weights_2t(self) -> list[int]:
        """Lagrange weights that open a degree-2t sharing from all ``m`` parties."""
        return F.lagrange_at(list(range(1, self.m + 1)), 0)

    def _masked(self, seed: bytes, label: str, values: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Degree-2t shares of ``values·r + 0`` (ready to open; uniform on the non-zero
        elements where a value is not 0) and the degree-t shares of the fresh random ``r``."""
        r, zero = prss_masks(self.keys, self.pid, self.m, self.t, f"{seed.hex()}/{label}",
                             len(values))
        return F.add(F.mul(values, r), zero), r

    def masked_quantities(self, seed: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Degree-2t shares of ``q·r + 0`` per bid (``q = Σw``, ``r`` a fresh random mask) and
        the shares of ``r``: opened, each is uniform on the non-zero field elements for a bid
        with ``q ≥ 1``."""
        lay = self.layout
        q = np.empty(len(self.batch), dtype=F.U64)
        ones = np.ones((2 * lay.coarse, 1), dtype=F.U64)
        for start in range(0, len(q), CHUNK):
            w = np.asarray(self.batch.rows[start:start + CHUNK, lay.w])
            q[start:start + len(w)] = F.dot_small(w, ones, 1)[:, 0]
        return self._masked(seed, "qinv", q)

    def scaled_fine(self, masks: np.ndarray, opened: np.ndarray) -> np.ndarray:
        """Degree-2t shares of ``e/q`` per valid bid (``q⁻¹ = r·(q·r)⁻¹`` from the masks ``r``
        and the opened masked quantities), flattened; 0 for a refused bid."""
        lay = self.layout
        q_inv = F.mul(masks, F.inverse(opened))
        q_inv[~self.valid] = 0
        out = np.empty((len(self.batch), lay.fine), dtype=F.U64)
        for start in range(0, len(out), CHUNK):
            e = np.asarray(self.batch.rows[start:start + CHUNK, lay.e])
            out[start:start + len(e)] = F.mul(e, q_inv[start:start + len(e), None])
        return out.reshape(-1)

    def count_curves(self, e_scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Degree-2t shares of the accepted-bid counts ``CD(k)`` (buyers at ≥ k) and ``CS(k)``
        (sellers at ≤ k), from degree-t shares of every bid's ``e/q``: ``w ⊗ e/q`` is the bid's
        one-hot at its side, coarse block and fine level."""
        return self.cumulative(self.count_products(e_scaled))

    def count_products(self, e_scaled: np.ndarray) -> np.ndarray:
        """The limb sums ``Σ w ⊗ e/q`` over the valid bids (see :meth:`count_curves`)."""
        lay = self.layout
        scaled = e_scaled.reshape(len(self.batch), lay.fine)
        acc = np.zeros_like(self._products)
        for start in range(0, len(scaled), CHUNK):
            w = np.array(self.batch.rows[start:start + CHUNK, lay.w])
            w[~self.valid[start:start + len(w)]] = 0  # a refused row need not be a sharing
            acc += _products(w, scaled[start:start + len(w)])
        return acc

    # --- the rationing: divisors inverted under a mask ------------------------------------
    def masked_divisors(self, seed: bytes, values: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """``values·r + 0`` ready to open, and the shares of ``r`` (for ``D(k*)``, ``S(k*)``)."""
        return self._masked(seed, "div", values)

    # --- outputs ----------------------------------------------------------------------
    def accepted(self, level: int | None) -> np.ndarray:
        """Degree-2t shares of each bid's accepted buy and sell quantity, shape (2, N).

        A buy at ``(hi, lo)`` is accepted when ``hi > k_hi`` or (``hi = k_hi`` and
        ``lo ≥ k_lo``); a sell when ``hi < k_hi`` or (``hi = k_hi`` and ``lo ≤ k_lo``). An
        invalid bid gets 0.
        """
        lay = self.layout
        n = len(self.batch)
        out = np.zeros((2, n), dtype=F.U64)
        if level is None:
            return out
        kh, kl = divmod(level, lay.fine)
        h = lay.coarse
        ind_w = np.zeros((2 * h, 2), dtype=F.U64)
        ind_w[kh + 1:h, 0] = 1
        ind_w[h:h + kh, 1] = 1
        ind_e = np.zeros((lay.fine, 2), dtype=F.U64)
        ind_e[kl:, 0] = 1
        ind_e[:kl + 1, 1] = 1
        for start in reversed(range(0, n, CHUNK)):
            rows = np.asarray(self.batch.rows[start:start + CHUNK])
            w = rows[:, lay.w]
            lin = F.dot_small(w, ind_w, 1)
            fine = F.dot_small(rows[:, lay.e], ind_e, 1)
            sl = slice(start, start + len(rows))
            out[0, sl] = F.add(lin[:, 0], F.mul(w[:, kh], fine[:, 0]))
            out[1, sl] = F.add(lin[:, 1], F.mul(w[:, h + kh], fine[:, 1]))
            if start % BLOCK == 0:
                self.batch.release()
        out[:, ~self.valid] = 0
        return out

    def supplier_totals(self, sides: np.ndarray) -> np.ndarray:
        """Degree-2t shares of each supplier's bought then sold totals (length 2S).

        ``sides`` holds this party's degree-t shares of every bid's accepted buy and sell
        quantity, shape (2, N).
        """
        lay = self.layout
        n = len(self.batch)
        totals = np.zeros((2, lay.suppliers), dtype=F.U64)  # bought, sold
        for start in range(0, n, CHUNK):
            sup = np.array(self.batch.rows[start:start + CHUNK, lay.supplier])
            sup[~self.valid[start:start + len(sup)]] = 0  # a refused row need not be a sharing
            part_sides = sides[:, start:start + len(sup)].T
            limbs = np.concatenate(
                [(part_sides >> np.uint64(16 * k)) & np.uint64(0xFFFF) for k in range(4)], axis=1)
            for half in range(2):  # (32-bit half of s) × (16-bit limb of side) summed: < 2^60
                part = ((sup >> np.uint64(32 * half)) & np.uint64(0xFFFFFFFF)).T @ limbs
                for k in range(4):
                    shift = pow(2, 32 * half + 16 * k, F.MODULUS)
                    for side in range(2):
                        term = F.scale(F.reduce(part[:, 2 * k + side]), shift)
                        totals[side] = F.add(totals[side], term)
            if start % BLOCK == 0:
                self.batch.release()
        return totals.reshape(-1)


def _fold(ch: Challenge, lay: Layout, groups: int, pw: np.ndarray, pe: np.ndarray,
          ps: np.ndarray, pb: np.ndarray, pb2: np.ndarray, last: np.ndarray,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Fold every rule's residual into the validity value; combine the degree check."""
    n = len(pw)
    g, lam, reps = ch.gamma, ch.lam, ch.repeats
    q = pw[:, 0]
    one = F.const(1)
    value = [np.zeros(n, dtype=F.U64), np.zeros(n, dtype=F.U64)]  # Σ2^j·lo_j, Σ2^j·hi_j
    for side in range(2):
        for grp in range(groups - 1, -1, -1):
            value[side] = F.add(F.mul_small(value[side], 1 << _LIMB),
                                pb[:, reps + side * groups + grp])
    res = [
        F.sub(F.sub(q, one), value[0]),
        F.sub(F.sub(F.const(lay.max_quantity_wh), q), value[1]),
        F.sub(ps[:, 0], one),
        F.sub(pe[:, 0], one),
        F.mul(last, pe[:, -1]),
    ]
    # Within one repeat the quadratic residuals use independent random challenges, so their
    # plain sum vanishes by chance with probability ≤ 2^-(bits−1); repeats get full weights.
    z = np.zeros(n, dtype=F.U64)
    rho = np.zeros(n, dtype=F.U64)
    for j in range(reps):
        a, b = _join(pw, ch.bits, j)
        a_s, b_s = _join(ps, ch.bits, j)
        a_e, b_e = _join(pe, ch.bits, j)
        quad = F.sub(F.mul(a, a), F.mul(q, b))  # (r·w)² − q·(r²·w)
        quad = F.add(quad, F.sub(F.mul(a_s, a_s), b_s))  # (r'·s)² − r'²·s
        quad = F.add(quad, F.sub(F.mul(a_e, a_e), b_e))  # (r''·e)² − r''²·e
        quad = F.add(quad, pb2[:, j])  # Σ β_j·b_j(b_j − 1)
        z = F.add(z, F.mul(quad, F.const(int(g[5 + j]))))
        mix = F.add(F.add(a, a_s), F.add(a_e, pb[:, j]))  # small random weights on every entry
        rho = F.add(rho, F.mul(mix, F.const(int(lam[j]))))
    for k, r in enumerate(res):
        z = F.add(z, F.mul(r, F.const(int(g[k]))))
    return z, rho


def seed_from(contributions: Sequence[bytes]) -> bytes:
    """The public challenge seed: a hash of every party's fresh random contribution."""
    h = hashlib.sha256(b"sealgrid/challenge\0")
    for c in contributions:
        h.update(len(c).to_bytes(4, "little") + c)
    return h.digest()
