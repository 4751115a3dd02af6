"""DGK comparison: right bit, and a transcript that reveals nothing but the bit.

For each side we run the comparison many times on two input pairs with the same result and
compare the distributions of what that side sees with a two-sample chi-square test. The same
test is shown to reject leaky variants (no shuffle, no blinding, no encryption randomness), so
it could fail on a protocol that leaks.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Hashable

import pytest

from sealgrid.protocol.pem import dgk

L = 16
RUNS = 300
RNG = random.Random(2024)  # test randomness only; keys and protocol coins come from it too
KEY = dgk.generate_keypair(256, 53, RNG, t=40)  # u = 53 > 3·16 + 2


def compare(a: int, b: int) -> tuple[list[int], list[int], int, int]:
    """Run steps 1-3 once; return (A's view: B's ciphertexts, B's view, δ_A, δ_B)."""
    bits = dgk.encrypt_bits(KEY, b, L, [dgk.own_rerandomizer(KEY, RNG) for _ in range(L)])
    rands = [dgk.rerandomizer(KEY.public, RNG) for _ in range(L)]
    blinded, delta_a = dgk.blind(KEY.public, a, bits, rands, RNG)
    return bits, blinded, delta_a, dgk.zero_test(KEY, blinded)


def test_the_bit_is_a_greater_than_b() -> None:
    pairs = [(RNG.randrange(1 << L), RNG.randrange(1 << L)) for _ in range(200)]
    pairs += [(x, x + 1) for x in (0, 7, 2**L - 2)] + [(x + 1, x) for x in (0, 7, 2**L - 2)]
    for a, b in pairs:
        if a != b:
            _, _, delta_a, delta_b = compare(a, b)
            assert delta_a ^ delta_b == int(a > b), (a, b)


def test_out_of_range_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        dgk.encrypt_bits(KEY, 1 << L, L, [1] * L)


def chi_square(first: Counter[Hashable], second: Counter[Hashable]) -> tuple[float, int]:
    """Two-sample chi-square statistic over the union of categories, and its d.o.f."""
    n1, n2 = sum(first.values()), sum(second.values())
    stat = 0.0
    cats = set(first) | set(second)
    for c in cats:
        o1, o2 = first[c], second[c]
        e1 = (o1 + o2) * n1 / (n1 + n2)
        e2 = (o1 + o2) * n2 / (n1 + n2)
        stat += (o1 - e1) ** 2 / e1 + (o2 - e2) ** 2 / e2
    return stat, max(len(cats) - 1, 1)


def distinguishable(first: Counter[Hashable], second: Counter[Hashable]) -> bool:
    """True when the statistic exceeds mean + 6 standard deviations (false alarm < 1e-6)."""
    stat, dof = chi_square(first, second)
    return stat > dof + 6 * math.sqrt(2 * dof) + 6


def b_view(a: int, b: int) -> Counter[Hashable]:
    """Features of B's view: δ_A received, zero positions, bucketed plaintexts by position."""
    features: Counter[Hashable] = Counter()
    for _ in range(RUNS):
        _, blinded, delta_a, delta_b = compare(a, b)
        plain = [dgk.decrypt_small(KEY, c) for c in blinded]
        features[("shares", delta_a, delta_b)] += 1
        for pos, m in enumerate(plain):
            features[("value", pos // 4, 0 if m == 0 else 1 + 4 * m // KEY.public.u)] += 1
    return features


def a_view(a: int, b: int) -> Counter[Hashable]:
    """Features of A's view: the ciphertexts' residues mod 7 by position, δ_B received."""
    features: Counter[Hashable] = Counter()
    for _ in range(RUNS):
        bits, _, delta_a, delta_b = compare(a, b)
        features[("shares", delta_a, delta_b)] += 1
        for pos, c in enumerate(bits):
            features[("residue", pos // 4, c % 7)] += 1
    return features


# Same result (a > b) but very different inputs: b differs from a in one low bit or in many.
PAIR_1 = (0b1010_1010_1010_1011, 0b1010_1010_1010_1010)
PAIR_2 = (0b1111_1111_0000_0000, 0b0000_0000_1111_1111)


def test_b_sees_the_same_distribution_for_two_pairs_with_the_same_result() -> None:
    assert not distinguishable(b_view(*PAIR_1), b_view(*PAIR_2))


def test_a_sees_the_same_distribution_for_two_pairs_with_the_same_result() -> None:
    assert not distinguishable(a_view(*PAIR_1), a_view(*PAIR_2))


def leaky(monkeypatch: pytest.MonkeyPatch, name: str, replacement: Callable[..., object]) -> None:
    monkeypatch.setattr(dgk, name, replacement)


def test_the_test_catches_a_variant_without_shuffle(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky(monkeypatch, "_shuffle", lambda values, rng: None)
    assert distinguishable(b_view(*PAIR_1), b_view(*PAIR_2))


def test_the_test_catches_a_variant_without_blinding(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky(monkeypatch, "_blinding", lambda u, rng: 1)
    assert distinguishable(b_view(*PAIR_1), b_view(*PAIR_2))


def test_the_test_catches_encryption_without_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky(monkeypatch, "own_rerandomizer", lambda sk, rng: 1)
    assert distinguishable(a_view(*PAIR_1), a_view(*PAIR_2))
