"""GF(2^64 − 189) arithmetic on uint64 arrays against Python integers; Shamir sharing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.protocol import field as F

P = F.MODULUS
elems = st.lists(st.integers(0, P - 1), min_size=1, max_size=40)
EDGE = [0, 1, 2, P - 1, P - 2, 2**63, 2**63 - 1, 2**32, 2**32 - 1, 189, P - 189]


def arr(xs: list[int]) -> np.ndarray:
    return np.array(xs, dtype=np.uint64)


@settings(max_examples=60, deadline=None)
@given(elems, elems)
def test_add_sub_mul_match_python(a: list[int], b: list[int]) -> None:
    n = min(len(a), len(b))
    a, b = (a[:n] + EDGE), (b[:n] + EDGE[::-1])
    x, y = arr(a), arr(b)
    assert [int(v) for v in F.add(x, y)] == [(i + j) % P for i, j in zip(a, b, strict=False)]
    assert [int(v) for v in F.sub(x, y)] == [(i - j) % P for i, j in zip(a, b, strict=False)]
    assert [int(v) for v in F.mul(x, y)] == [i * j % P for i, j in zip(a, b, strict=False)]
    assert [int(v) for v in F.mul_small(x, 2**32 - 1)] == [i * (2**32 - 1) % P for i in a]
    assert [int(v) for v in F.neg(x)] == [(-i) % P for i in a]


def test_reduce_and_signed_encoding() -> None:
    raw = np.array([P, P + 5, 2**64 - 1, 7], dtype=np.uint64)
    assert [int(v) for v in F.reduce(raw)] == [0, 5, 2**64 - 1 - P, 7]
    enc = F.from_int64(np.array([-1, -10_000, 0, 5]))
    assert [int(v) for v in enc] == [P - 1, P - 10_000, 0, 5]
    assert list(F.to_signed(enc)) == [-1, -10_000, 0, 5]


def test_dot_small_is_exact() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, P, size=(20, 512), dtype=np.uint64)
    x[0] = P - 1
    c = rng.integers(0, 2**12, size=(512, 3), dtype=np.uint64)
    c[:, 0] = 2**12 - 1
    got = F.dot_small(x, c, 12)
    want = [[sum(int(x[i, k]) * int(c[k, j]) for k in range(512)) % P for j in range(3)]
            for i in range(20)]
    assert [[int(v) for v in r] for r in got] == want
    with pytest.raises(ValueError):
        F.dot_small(x, c, 13)


@pytest.mark.parametrize(("t", "m"), [(1, 3), (2, 5)])
def test_share_reconstruct_and_consistency(t: int, m: int) -> None:
    rng = np.random.default_rng(t)
    secret = rng.integers(0, P, size=50, dtype=np.uint64)
    coeffs = [F.stream(bytes(16), f"c{j}", 50) for j in range(t)]
    shares = F.share(secret, t, m, coeffs)
    assert np.array_equal(F.reconstruct(shares, t), secret)
    assert F.consistent(shares, t).all()
    shares[m - 1] = F.add(shares[m - 1], F.from_ints([1] + [0] * 49))
    assert not F.consistent(shares, t)[0] and F.consistent(shares, t)[1:].all()
    with pytest.raises(F.InconsistentShares):
        F.reconstruct(shares, t)


def test_lagrange_at_zero_for_three_points() -> None:
    assert F.lagrange_at([1, 2, 3], 0) == [3, P - 3, 1]
