"""DGK secure comparison (Damgård–Geisler–Krøigaard 2007/2009; Veugen 2012); assumes semi-honest.

Two parties hold private integers: B (the DGK key holder) holds ``b``, A holds ``a``, both below
``2^L`` and never equal. They learn the single bit ``[a > b]`` and nothing else:

1. B → A: ``[b_i]``, DGK encryptions of the bits of ``b`` (:func:`encrypt_bits`).
2. A picks ``s ∈ {+1, −1}`` at random and computes, homomorphically, for every bit position
   ``c_i = s + a_i − b_i + 3·Σ_{j>i} (a_j ⊕ b_j)``; ``c_i = 0`` for exactly one ``i`` when
   ``s = +1`` and ``a < b``, or ``s = −1`` and ``a > b``, and no ``c_i`` is ``0`` otherwise.
   A raises each ``[c_i]`` to a random ``r_i ∈ Z_u*``, re-randomizes it with a fresh ``h^r``,
   shuffles the list, and sends it back (:func:`blind`). A keeps ``δ_A = [s = +1]``.
3. B tests each for zero (:func:`zero_test`): ``δ_B = [some c_i = 0]``. Then ``[a > b] =
   δ_A ⊕ δ_B``; the two exchange their XOR shares.

B sees ``L`` values that are uniform in ``Z_u*`` except, when ``δ_B = 1``, one ``0`` at a uniform
position; ``δ_B`` is a fair coin whatever the inputs. A sees ``L`` DGK ciphertexts under B's key
(semantically secure under the DGK subgroup assumption). Each sees the other's share, which
the output fixes. Encryption is ``g^m h^r mod n`` with ``g`` of order ``u·v_p·v_q`` and ``h``
of order ``v_p·v_q`` (``v_p, v_q`` primes of ``t`` bits); the zero test is ``c^{v_p} ≡ 1 (mod p)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz, powmod

#: Bit size of the DGK subgroup primes v_p, v_q (Veugen's recommendation).
T_BITS = 160


@dataclass(frozen=True)
class DgkPublicKey:
    """A DGK public key: modulus ``n``, generators ``g`` and ``h``, plaintext prime ``u``."""

    n: int
    g: int
    h: int
    u: int
    t: int

    def values(self) -> tuple[int, ...]:
        """The key as integers for the wire format."""
        return (self.n, self.g, self.h, self.u, self.t)


@dataclass(frozen=True)
class DgkSecretKey:
    """A DGK secret key: the factor ``p`` of ``n`` and the orders ``v_p``, ``v_q``."""

    public: DgkPublicKey
    p: int
    q: int
    vp: int
    vq: int


def _crt(xp: int, p: int, xq: int, q: int) -> int:
    return int((xp + p * ((xq - xp) * gmpy2.invert(p, q) % q)) % (p * q))


def _prime_with(v: int, u: int, bits: int, rng: random.Random) -> int:
    rbits = bits - v.bit_length() - u.bit_length() - 1
    while True:
        r = rng.getrandbits(rbits) | (1 << (rbits - 1))
        p = 2 * u * v * r + 1
        if gmpy2.is_prime(p, 30):
            return p


def _element_of_order(p: int, order: int, factors: tuple[int, ...], rng: random.Random) -> int:
    while True:
        x = powmod(rng.randrange(2, p - 1), (p - 1) // order, p)
        if all(powmod(x, order // f, p) != 1 for f in factors):
            return int(x)


def generate_keypair(bits: int, u: int, rng: random.Random, t: int = T_BITS) -> DgkSecretKey:
    """Generate a DGK key of ``bits`` with plaintext space ``Z_u`` (``u`` prime).

    Raises:
        ValueError: ``bits`` too small for ``t`` and ``u``.
    """
    half = bits // 2
    if half - t - u.bit_length() - 1 < 16:
        raise ValueError("DGK key too small for the subgroup and plaintext sizes")
    while True:
        vp = int(gmpy2.next_prime(rng.getrandbits(t) | (1 << (t - 1))))
        vq = int(gmpy2.next_prime(rng.getrandbits(t) | (1 << (t - 1))))
        if vp != vq:
            break
    p = _prime_with(vp, u, half, rng)
    q = _prime_with(vq, u, bits - half, rng)
    gp = _element_of_order(p, u * vp, (u, vp), rng)
    gq = _element_of_order(q, u * vq, (u, vq), rng)
    hp = _element_of_order(p, vp, (vp,), rng)
    hq = _element_of_order(q, vq, (vq,), rng)
    public = DgkPublicKey(p * q, _crt(gp, p, gq, q), _crt(hp, p, hq, q), u, t)
    return DgkSecretKey(public, p, q, vp, vq)


def public_from_values(values: tuple[int, ...]) -> DgkPublicKey:
    """Rebuild a public key received over the wire."""
    n, g, h, u, t = values
    return DgkPublicKey(n, g, h, u, t)


def rerandomizer(pk: DgkPublicKey, rng: random.Random) -> int:
    """A fresh ``h^r mod n`` with ``r`` of ``2.5·t`` bits (public key only; offline work)."""
    return int(powmod(pk.h, rng.getrandbits(5 * pk.t // 2), pk.n))


def own_rerandomizer(sk: DgkSecretKey, rng: random.Random) -> int:
    """A uniform element of ``<h>`` computed by the key holder with CRT (offline work)."""
    h = sk.public.h
    xp = powmod(h % sk.p, rng.randrange(sk.vp), sk.p)
    xq = powmod(h % sk.q, rng.randrange(sk.vq), sk.q)
    return _crt(int(xp), sk.p, int(xq), sk.q)


def encrypt_bits(sk: DgkSecretKey, value: int, length: int, rands: list[int]) -> list[int]:
    """Step 1 (B): encrypt bits ``0..length−1`` of ``value``, least significant first.

    Raises:
        ValueError: ``value`` does not fit in ``length`` bits, or too few randomizers.
    """
    if not 0 <= value < 1 << length or len(rands) < length:
        raise ValueError("comparison input out of range")
    pk = sk.public
    return [int((pk.g if value >> i & 1 else 1) * rands[i] % pk.n) for i in range(length)]


def blind(
    pk: DgkPublicKey, value: int, encrypted_bits: list[int], rands: list[int], rng: random.Random
) -> tuple[list[int], int]:
    """Step 2 (A): the blinded, shuffled ``[c_i]`` and A's share ``δ_A``.

    Raises:
        ValueError: ``value`` out of range, or a ciphertext is not a unit mod ``n``.
    """
    length = len(encrypted_bits)
    if not 0 <= value < 1 << length or len(rands) < length:
        raise ValueError("comparison input out of range")
    n, g = mpz(pk.n), mpz(pk.g)
    g_power = {-1: gmpy2.invert(g, n), 0: mpz(1), 1: g, 2: g * g % n}
    s = rng.choice((1, -1))
    suffix = mpz(1)  # [Σ_{j>i} a_j ⊕ b_j]
    out = []
    for i in reversed(range(length)):
        c = mpz(encrypted_bits[i])
        if not 0 < c < n or gmpy2.gcd(c, n) != 1:
            raise ValueError("a comparison ciphertext is not a unit mod n")
        c_inv = gmpy2.invert(c, n)
        a_i = value >> i & 1
        ci = g_power[s + a_i] * c_inv % n * powmod(suffix, 3, n) % n
        out.append(int(powmod(ci, _blinding(pk.u, rng), n) * rands[i] % n))
        suffix = suffix * (g * c_inv % n if a_i else c) % n
    _shuffle(out, rng)
    return out, int(s == 1)


def _blinding(u: int, rng: random.Random) -> int:
    return rng.randrange(1, u)


def _shuffle(values: list[int], rng: random.Random) -> None:
    rng.shuffle(values)


def zero_test(sk: DgkSecretKey, ciphertexts: list[int]) -> int:
    """Step 3 (B): ``δ_B``, 1 when some ciphertext encrypts 0 mod ``u``."""
    p, vp = mpz(sk.p), sk.vp
    return int(any(powmod(mpz(c) % p, vp, p) == 1 for c in ciphertexts))


def decrypt_small(sk: DgkSecretKey, ciphertext: int) -> int:
    """Decrypt to ``m mod u`` by table look-up (used by tests to inspect B's view)."""
    p = mpz(sk.p)
    base = powmod(mpz(sk.public.g) % p, sk.vp, p)
    target = powmod(mpz(ciphertext) % p, sk.vp, p)
    x = mpz(1)
    for m in range(sk.public.u):
        if x == target:
            return m
        x = x * base % p
    raise ValueError("not a DGK ciphertext under this key")
