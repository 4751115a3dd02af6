"""The Protocol 4 ratios no longer give E_b or the demands (docs/pem.md, *Noise on the ratios*).

Over many random markets, the values a seller decrypts are built exactly as the peers build them
(:func:`~sealgrid.protocol.pem.params.noisy_inverse`: ``D'_j = E_b·q'_j + η_j``) and attacked
four ways: the gcd of the values, the gcd of their differences, rational reconstruction of
``D'_j/D'_0`` (the two-dimensional lattice attack: its best approximation with a denominator
``≤ K·(1+σ)`` as ``q_0``), and a search for the ``E`` that makes every ``E·K/D'_j`` closest to an
integer (simultaneous Diophantine approximation). Each attack is also run on the old values
``E_b·⌊K/|sn_j|⌋`` as a control and must succeed there. Even told ``E_b``, a seller gets a
buyer's demand exactly only by chance (about one in σ = 4), where the old values gave all of them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fractions import Fraction

from sealgrid.protocol.pem.params import RATIO_BITS, SIGMA, noisy_inverse, ratio_width

K = 1 << RATIO_BITS
MARKETS = 150


def markets(seed: int) -> list[tuple[list[int], int]]:
    """Random buyers' demands (fixed point: 0.01–4 kWh) and the number of agents."""
    rng = random.Random(seed)
    out = []
    for _ in range(MARKETS):
        buyers = rng.randint(2, 30)
        out.append(([rng.randint(10**4, 4 * 10**6) for _ in range(buyers)],
                     buyers + rng.randint(1, 60)))
    return out


def old_values(demands: list[int]) -> list[int]:
    e_b = sum(demands)
    return [e_b * (K // s) for s in demands]


def new_values(demands: list[int], agents: int, rng: random.Random) -> list[int]:
    e_b = sum(demands)
    out = []
    for s in demands:
        q, eta = noisy_inverse(s, agents, rng)
        out.append(e_b * q + eta)
    assert all(v < 1 << ratio_width(agents) for v in out)
    return out


def gcd_attack(values: list[int]) -> int:
    return math.gcd(*values)


def difference_gcd_attack(values: list[int]) -> int:
    return math.gcd(*(v - values[0] for v in values[1:]))


def reconstruction_attack(values: list[int]) -> int:
    """q_0 as the lcm of the denominators of the best approximations of D_j/D_0; E = D_0/q_0."""
    q0 = 1
    for v in values[1:]:
        q0 = math.lcm(q0, Fraction(v, values[0]).limit_denominator(K * (1 + SIGMA)).denominator)
    return round(Fraction(values[0], q0))


def integrality_attack(values: list[int], around: int, spread: int = 150) -> int:
    """The E within ``around ± spread`` that puts every ``E·K/D_j`` closest to an integer."""
    unit = 1 << 24

    def score(e: int) -> int:
        total = 0
        for v in values:
            frac = e * K * unit // v % unit
            total += min(frac, unit - frac)
        return total

    return min(range(max(1, around - spread), around + spread + 1), key=score)


def demands_from(values: list[int], e_b: int) -> list[int]:
    return [round(Fraction(e_b * K, v)) for v in values]


def recovered(attack: Callable[[list[int]], int], values: list[int], demands: list[int]) -> bool:
    e_b = attack(values)
    return e_b == sum(demands) or demands_from(values, e_b) == demands


def test_gcd_and_reconstruction_attacks_fail_on_the_noisy_ratios_and_work_on_the_old() -> None:
    rng = random.Random(5)
    for attack in (gcd_attack, difference_gcd_attack, reconstruction_attack):
        old = sum(recovered(attack, old_values(d), d) for d, _ in markets(1))
        new = sum(recovered(attack, new_values(d, n, rng), d) for d, n in markets(1))
        assert old >= 0.9 * MARKETS, (attack.__name__, old)  # the control: the leak is real
        assert new == 0, (attack.__name__, new)


def test_no_integer_structure_pins_e_b() -> None:
    rng = random.Random(6)
    chosen = markets(2)[:60]
    old = sum(integrality_attack(old_values(d), sum(d)) == sum(d) for d, _ in chosen)
    new = sum(integrality_attack(new_values(d, n, rng), sum(d)) == sum(d) for d, n in chosen)
    assert old == len(chosen)  # the control: the true E_b stands out among its neighbours
    assert new <= 3  # chance is 1 in 301 per market


def test_even_knowing_e_b_the_demands_are_only_approximate() -> None:
    rng = random.Random(7)
    exact_old = exact_new = total = 0
    errors = []
    for d, n in markets(3):
        e_b = sum(d)
        exact_old += sum(a == b for a, b in zip(demands_from(old_values(d), e_b), d, strict=True))
        guess = demands_from(new_values(d, n, rng), e_b)
        exact_new += sum(a == b for a, b in zip(guess, d, strict=True))
        errors += [b - a for a, b in zip(guess, d, strict=True)]
        total += len(d)
    assert exact_old == total
    assert exact_new < 0.4 * total  # about 1/σ by chance
    assert all(-1 <= e < SIGMA + 1 for e in errors)  # the documented one-sided window
    assert sum(errors) / len(errors) > SIGMA / 4  # spread over the window, not near zero
