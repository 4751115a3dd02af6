"""Public parameters of the private PEM and the public draw of designated agents; assumes a seed
that all agents agree on and no agent controls (e.g. a published beacon value per window).

Bounds (all public):

* ``|sn| < 2^NET_BITS`` fixed-point units for every agent (about 1.1·10^6 input units);
* nonces of Protocol 2 are uniform in ``[0, 2^nonce_bits(N))`` with ``nonce_bits = NET_BITS +
  bitlen(N) + KAPPA``: one honest nonce unknown to the decryptor already puts the masked sum
  ``R = E + Σr`` within statistical distance ``E / 2^nonce_bits < 2^-KAPPA`` of ``R' = E' + Σr``
  for any other ``E'`` (``E, E' < N·2^NET_BITS``);
* Protocol 4 scales ratios by ``K = 2^RATIO_BITS`` and hides them with noise
  (:func:`noisy_inverse`): the contributor raises ``Enc(E)`` to ``q' = ⌊K/s⌋ + t`` with ``t``
  uniform in ``[0, ⌊K·σ/s²⌋)`` (``σ = 2^SIGMA_BITS``) and adds ``η`` uniform in
  ``[0, 2^nonce_bits(N))``, so the key holder decrypts ``D' = E·q' + η``: modulo any ``m ≤ E``
  the ``η`` puts ``D'`` within statistical distance ``2^-KAPPA`` of uniform (no common factor
  ``E`` left for a gcd), and ``t`` lowers the demand implied by ``D'`` by less than ``σ`` units
  (no integer structure left to pin ``E``). Each amount is then within :func:`amount_bounds`.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import gmpy2

from sealgrid.mechanism.pem import PemInputError

#: Every agent's |net energy| is below 2^NET_BITS fixed-point units.
NET_BITS = 40
#: Statistical hiding parameter of the masked aggregates of Protocol 2.
KAPPA = 40
#: Protocol 4 scaling factor K = 2^RATIO_BITS (≥ nonce_bits + NET_BITS for every allowed N, so
#: the noise η changes an amount by less than half a unit).
RATIO_BITS = 144
#: Protocol 4 noise: each ratio's implied |sn| is lowered by less than σ = 2^SIGMA_BITS units.
SIGMA_BITS = 2
SIGMA = 1 << SIGMA_BITS
#: Smallest key size the Protocol 4 slots fit in (a plaintext holds at least one ratio).
MIN_KEY_BITS = 512
#: Largest bit length the DGK comparison is set up for; fixes the DGK plaintext prime u.
MAX_COMPARE_BITS = 128
#: DGK plaintext prime: above 3·MAX_COMPARE_BITS + 2, so no c_i wraps to 0 mod u.
DGK_U = int(gmpy2.next_prime(3 * MAX_COMPARE_BITS + 2))
#: Fan-out of the aggregation and broadcast trees.
FANOUT = 4
#: Offline work covers the first CANDIDATES agents of each window's public order.
CANDIDATES = 10
#: Randomizers kept per candidate key (an agent encrypts at most 3 values under one key).
PER_KEY = 3


def nonce_bits(agents: int) -> int:
    """Bit size of the Protocol 2 nonces for ``agents`` agents."""
    return NET_BITS + agents.bit_length() + KAPPA


def ratio_width(agents: int) -> int:
    """Bit width of one Protocol 4 slot: ``D' = E·q' + η < 2^ratio_width``.

    ``E < 2^(NET_BITS + bitlen(N))``, ``q' < K·(1 + σ)`` and ``η < 2^nonce_bits(N) ≤ E·q'``.
    """
    return NET_BITS + agents.bit_length() + RATIO_BITS + SIGMA_BITS + 2


def noisy_inverse(amount: int, agents: int, rng: random.Random) -> tuple[int, int]:
    """The contributor's exponent and noise for its Protocol 4 ratio: ``(q', η)``.

    ``q' = ⌊K/s⌋ + t`` with ``t`` uniform in ``[0, max(1, ⌊K·σ/s²⌋))`` and ``η`` uniform in
    ``[0, 2^nonce_bits(N))``; ``s = amount ≥ 1`` is the contributor's |sn| in fixed point.
    """
    if amount < 1:
        raise PemInputError("a Protocol 4 contributor has no energy")
    k = 1 << RATIO_BITS
    spread = max(1, (k << SIGMA_BITS) // (amount * amount))
    return k // amount + rng.randrange(spread), rng.randrange(1 << nonce_bits(agents))


def amount_bounds(exact: Fraction, s: int) -> tuple[Fraction, Fraction]:
    """Open interval that holds a private pairwise amount whose exact value is ``exact``.

    ``s`` is the |sn| (fixed point) of the agent whose ratio was scaled. docs/pem.md derives
    ``e·(1 − (σ + ½)/(s + σ)) < e' < e·(1 + s/(K − s))``; the lower end here uses ``σ + 1``.
    """
    k = 1 << RATIO_BITS
    return exact * (1 - Fraction(SIGMA + 1, s + SIGMA)), exact * (1 + Fraction(s, k - s))


def compare_bits(agents: int) -> int:
    """Bit length ``L`` of the comparison inputs ``2·R_b`` and ``2·R_s + 1``.

    Raises:
        PemInputError: too many agents for :data:`MAX_COMPARE_BITS`.
    """
    bound = agents * ((1 << nonce_bits(agents)) + (1 << NET_BITS))
    length = bound.bit_length() + 1
    if length > MAX_COMPARE_BITS:
        raise PemInputError("too many agents for the comparison's bit length")
    return length


def check_net(net: int) -> None:
    """Refuse a net energy outside the public bound.

    Raises:
        PemInputError: ``|sn| ≥ 2^NET_BITS`` fixed-point units.
    """
    if abs(net) >= 1 << NET_BITS:
        raise PemInputError("net energy too large for the private PEM (|sn| < 2^40 units)")


@functools.lru_cache(maxsize=64)
def window_order(seed: int, window: int, agents: int) -> tuple[int, ...]:
    """The public random order of all agents for one window (drawn from the shared seed)."""
    order = list(range(agents))
    random.Random(f"sealgrid-pem:{seed}:{window}").shuffle(order)
    return tuple(order)


@dataclass(frozen=True)
class Designation:
    """The designated agents of one window, each a uniformly random member of its coalition.

    ``r1`` (seller) and ``r2`` (buyer) decrypt the masked aggregates of Protocol 2 and run the
    comparison; ``pricer`` (a buyer, ``H_b``) decrypts the Protocol 3 sums; ``holder_general``
    (a seller, ``H_s``) and ``holder_extreme`` (a buyer) decrypt the Protocol 4 ratios.
    """

    r1: int
    r2: int
    pricer: int
    holder_general: int
    holder_extreme: int


def designate(
    sellers: Sequence[int], buyers: Sequence[int], head: Sequence[int]
) -> Designation:
    """Take the designated agents from the coalitions listed in the window's public order.

    ``H_r1`` is the first seller, ``H_s`` the second seller if it is among the ``head`` (the
    first :data:`CANDIDATES` of the order, for which every agent precomputed randomizers), else
    ``H_r1`` again; likewise ``H_r2``, ``H_b`` among buyers. So ``(H_r1, H_s)`` is a uniformly
    random ordered pair of distinct sellers whenever the head holds two sellers.
    """
    first = set(head)

    def second(coalition: Sequence[int]) -> int:
        return coalition[1] if len(coalition) > 1 and coalition[1] in first else coalition[0]

    return Designation(
        r1=sellers[0],
        r2=buyers[0],
        pricer=second(buyers),
        holder_general=second(sellers),
        holder_extreme=second(buyers),
    )
