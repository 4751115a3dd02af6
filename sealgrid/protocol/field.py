"""Arithmetic in GF(p), p = 2^64 − 189, on NumPy uint64 arrays; assumes values already in [0, p).

This is the field of the servers' secure integers (MPyC ``SecInt(36)`` with statistical
security parameter 26, whose modulus is pinned to :data:`MODULUS`), so a share fits one
machine word and all N×P work runs vectorised. Also Shamir sharing with evaluation points
``1..m`` (MPyC's convention), reconstruction with a consistency check, and a keyed
pseudorandom stream of field elements (AES-128 in counter mode).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: The prime field modulus: the largest prime ≡ 3 (mod 4) below 2^64.
MODULUS = 2**64 - 189
_C = 189  # 2^64 ≡ 189 (mod p)
_P = np.uint64(MODULUS)
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_CU = np.uint64(_C)

U64 = np.uint64


class InconsistentShares(ValueError):
    """Shares do not lie on one polynomial of the expected degree (a peer's bad data)."""


def reduce(a: np.ndarray) -> np.ndarray:
    """Map arbitrary uint64 values into [0, p) (a − p ≡ a + 189 mod 2^64)."""
    out = np.array(a, dtype=U64, copy=True)
    np.add(out, _CU, out=out, where=out >= _P)
    return out


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return a + b mod p (inputs in [0, p)).

    On a wrap past 2^64 the true sum is s + 2^64 ≡ s + 189; when s ≥ p, s − p ≡ s + 189
    (mod 2^64) as well, so both cases add 189.
    """
    s = np.add(a, b, dtype=U64)
    fix = s < a
    fix |= s >= _P
    np.add(s, _CU, out=s, where=fix)
    return s


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return a − b mod p (inputs in [0, p))."""
    d = np.subtract(a, b, dtype=U64)
    np.subtract(d, _CU, out=d, where=a < b)
    return d


def neg(a: np.ndarray) -> np.ndarray:
    """Return −a mod p."""
    return np.where(a == 0, a, _P - a)


def mul_small(a: np.ndarray, k: int) -> np.ndarray:
    """Return a·k mod p for a public integer 0 ≤ k < 2^32."""
    if not 0 <= k < 2**32:
        raise ValueError("mul_small needs 0 <= k < 2^32")
    ku = U64(k)
    t0 = (a & _M32) * ku
    t1 = (a >> _S32) * ku
    high = reduce((t1 & _M32) << _S32)
    return add(add(high, reduce(t0)), (t1 >> _S32) * _CU)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return a·b mod p elementwise (broadcasting), exactly, with 32-bit limbs."""
    a0, a1 = a & _M32, a >> _S32
    b0, b1 = b & _M32, b >> _S32
    ll = a0 * b0
    mid = a0 * b1
    hl = a1 * b0
    hh = a1 * b1
    mid = mid + hl
    carry = (mid < hl).astype(U64) << _S32
    lo = ll + (mid << _S32)
    hi = hh + (mid >> _S32) + carry + (lo < ll).astype(U64)
    # value = hi·2^64 + lo ≡ hi·189 + lo (mod p); hi·189 = t1·2^32 + t0 with t0, t1 < 2^40
    t0 = (hi & _M32) * _CU
    t1 = (hi >> _S32) * _CU
    return add(add(reduce((t1 & _M32) << _S32), t0 + (t1 >> _S32) * _CU), reduce(lo))


def const(value: int) -> np.ndarray:
    """A field constant as a 0-d uint64 array (for broadcasting)."""
    return np.array(value % MODULUS, dtype=U64)


def from_ints(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """Encode integers (negative ones as p − |x|) as field elements."""
    return np.array([int(v) % MODULUS for v in values], dtype=U64)


def from_int64(values: np.ndarray) -> np.ndarray:
    """Encode an int64 array (negative values as p − |x|) as field elements, vectorised."""
    v = np.asarray(values, dtype=np.int64)
    out = v.astype(U64)
    return np.where(v < 0, out - _CU, out)  # 2^64 − |x| − 189 = p − |x|


def to_signed(values: np.ndarray) -> np.ndarray:
    """Decode field elements to Python ints in (−p/2, p/2] (object array)."""
    half = MODULUS // 2
    return np.array([int(v) - MODULUS if int(v) > half else int(v) for v in values.ravel()],
                    dtype=object).reshape(values.shape)


def halves(x: np.ndarray) -> np.ndarray:
    """The 32-bit halves of each share as float64, interleaved (low, high): shape (…, 2K)."""
    if x.dtype != U64 or x.strides[-1] != 8:
        x = np.ascontiguousarray(x, dtype=U64)
    return x.view(np.uint32).astype(np.float64)


def dot_small(x: np.ndarray, coef: np.ndarray, bits: int) -> np.ndarray:
    """Return Σ_k x[..., k]·coef[k, j] mod p for small public coefficients, exactly.

    Each share is split into 32-bit halves (as float64) and ``coef`` entries are below 2^bits
    with ``32 + bits + log2(K) ≤ 53``, so one BLAS product is exact; the low and high halves'
    results are combined mod p.
    """
    k = x.shape[-1]
    if 32 + bits + max(k - 1, 1).bit_length() > 53:
        raise ValueError("coefficients too wide for an exact float64 inner product")
    c = np.asarray(coef, dtype=np.float64)
    j = c.shape[1]
    wide = np.zeros((2 * k, 2 * j))
    wide[0::2, :j] = c
    wide[1::2, j:] = c
    r = halves(x) @ wide
    lo = r[..., :j].astype(U64)  # < 2^53
    hi = r[..., j:].astype(U64)  # < 2^53; hi·2^32 = (hi >> 32)·2^64 + (hi mod 2^32)·2^32
    return add(reduce((hi & _M32) << _S32), lo + (hi >> _S32) * _CU)  # second term < 2^54


# --- Shamir sharing, points 1..m -------------------------------------------------------


def lagrange_at(points: Sequence[int], at: int) -> list[int]:
    """Lagrange coefficients (mod p) that evaluate at ``at`` the polynomial through ``points``."""
    coeffs = []
    for i in points:
        num, den = 1, 1
        for j in points:
            if j != i:
                num = num * (at - j) % MODULUS
                den = den * (i - j) % MODULUS
        coeffs.append(num * pow(den, -1, MODULUS) % MODULUS)
    return coeffs


def scale(x: np.ndarray, c: int) -> np.ndarray:
    """Return c·x mod p for a public constant, cheaply when c or −c is small."""
    c %= MODULUS
    if c < 2**32:
        return mul_small(x, c)
    if MODULUS - c < 2**32:
        return neg(mul_small(x, MODULUS - c))
    return mul(x, const(c))


def combine(shares: Sequence[np.ndarray], coeffs: Sequence[int]) -> np.ndarray:
    """Return Σ coeffs[j]·shares[j] mod p."""
    out = np.zeros(np.shape(shares[0]), dtype=U64)
    for s, c in zip(shares, coeffs, strict=True):
        out = add(out, scale(np.asarray(s, dtype=U64), c))
    return out


def share(secret: np.ndarray, t: int, m: int, coeffs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Split field elements into ``m`` Shamir shares of degree ``t`` (points 1..m).

    Args:
        secret: field elements (any shape).
        t: degree (threshold); the sharing hides the secret from any ``t`` shares.
        m: number of shares.
        coeffs: ``t`` uniformly random field arrays of the secret's shape (the
            polynomial's coefficients of u^1..u^t); the caller supplies fresh randomness.
    """
    if t == 1:  # points 1, 2, …: add the coefficient once per step
        out = [add(secret, coeffs[0])]
        for _ in range(2, m + 1):
            out.append(add(out[-1], coeffs[0]))
        return out
    out = []
    for u in range(1, m + 1):
        acc = np.zeros_like(secret)
        for j in range(t, 0, -1):  # Horner: ((c_t·u + c_{t−1})·u + …)·u + secret
            acc = mul_small(add(acc, coeffs[j - 1]), u)
        out.append(add(acc, secret))
    return out


def reconstruct(shares: Sequence[np.ndarray], t: int) -> np.ndarray:
    """Rebuild the secret from all ``m`` shares, checking they lie on one degree-t polynomial.

    Raises:
        InconsistentShares: some share is off the polynomial through the first ``t + 1``.
    """
    m = len(shares)
    if m < t + 1:
        raise ValueError("not enough shares")
    base = list(range(1, t + 2))
    for u in range(t + 2, m + 1):
        predicted = combine(shares[: t + 1], lagrange_at(base, u))
        if not np.array_equal(predicted, np.asarray(shares[u - 1], dtype=U64)):
            raise InconsistentShares("shares do not lie on one polynomial of degree t")
    return combine(shares[: t + 1], lagrange_at(base, 0))


def consistent(shares: Sequence[np.ndarray], t: int) -> np.ndarray:
    """Elementwise: whether the ``m`` shares lie on one polynomial of degree ≤ t."""
    m = len(shares)
    ok = np.ones(np.shape(shares[0]), dtype=bool)
    base = list(range(1, t + 2))
    for u in range(t + 2, m + 1):
        ok &= combine(shares[: t + 1], lagrange_at(base, u)) == np.asarray(shares[u - 1])
    return ok


# --- pseudorandom field elements -------------------------------------------------------


def stream(key: bytes, label: str, n: int) -> np.ndarray:
    """Return ``n`` pseudorandom field elements from AES-128-CTR keyed by ``key``.

    ``label`` separates independent streams under one key. Values ≥ p (probability
    2^-56 each) are folded down; the bias is far below any statistical parameter used here.
    """
    k = hashlib.sha256(b"sealgrid/field-stream\0" + key).digest()[:16]
    nonce = hashlib.sha256(label.encode()).digest()[:16]
    enc = Cipher(algorithms.AES(k), modes.CTR(nonce)).encryptor()
    raw = enc.update(bytes(8 * n)) + enc.finalize()
    return reduce(np.frombuffer(raw, dtype="<u8").astype(U64))


def small_stream(key: bytes, label: str, n: int, bits: int) -> np.ndarray:
    """Return ``n`` pseudorandom integers in [0, 2^bits) as uint64."""
    x = stream(key, label, n)
    return x >> U64(64 - bits)


def rational(value: int, bound: int) -> Fraction:
    """The fraction ``a/b`` with ``a ≡ value·b (mod p)``, ``|a| ≤ bound``, ``0 < b ≤ bound``.

    Rational reconstruction (extended Euclid stopped half way): unique when
    ``2·bound² < p``, which the callers ensure (every ratio ``V/L`` has ``V ≤ L < bound``).

    Raises:
        ValueError: no such fraction (the value is not a ratio of numbers that small).
    """
    if 2 * bound * bound >= MODULUS:
        raise ValueError("the bound is too large for a unique rational reconstruction")
    r0, r1 = MODULUS, value % MODULUS
    s0, s1 = 0, 1
    while r1 > bound:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        s0, s1 = s1, s0 - q * s1
    if s1 == 0 or abs(s1) > bound:
        raise ValueError("not a ratio of numbers below the bound")
    result = Fraction(r1, s1)
    if (result.numerator - value * result.denominator) % MODULUS:
        raise ValueError("not a ratio of numbers below the bound")
    return result


def inverse(values: np.ndarray) -> np.ndarray:
    """Return ``1/x`` mod p elementwise, 0 for 0: one modular power for the whole array
    (Montgomery's trick along a product tree, vectorised)."""
    x = np.asarray(values, dtype=U64).reshape(-1)
    if not len(x):
        return x.copy()
    zero = x == 0
    x = np.where(zero, np.uint64(1), x)
    tree = [x]
    while len(tree[-1]) > 1:
        level = tree[-1]
        if len(level) % 2:
            level = np.concatenate([level, np.ones(1, dtype=U64)])
        tree.append(mul(level[0::2], level[1::2]))
    inv = np.array([pow(int(tree[-1][0]), MODULUS - 2, MODULUS)], dtype=U64)
    for level in reversed(tree[:-1]):
        padded = level if len(level) % 2 == 0 else np.concatenate([level, np.ones(1, dtype=U64)])
        out = np.empty(len(padded), dtype=U64)
        out[0::2] = mul(inv, padded[1::2])
        out[1::2] = mul(inv, padded[0::2])
        inv = out[:len(level)]
    return np.where(zero, np.uint64(0), inv).reshape(np.shape(values))
