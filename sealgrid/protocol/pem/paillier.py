"""Paillier for PEM: keys from phe, arithmetic on gmpy2 integers; assumes semi-honest key holders.

Keys come from :func:`phe.paillier.generate_paillier_keypair`; a ciphertext is a plain integer
mod ``n²`` so it can travel in :mod:`sealgrid.protocol.pem.wire` without phe's objects.
Encryption is split in two (docs/pem.md, *Offline work is a prediction*): the expensive factor
``ρ = r^n mod n²`` needs only the public key and can be computed while idle (:func:`randomizer`);
online, encrypting ``m`` is ``(1 + n·m)·ρ mod n²``. Decryption works mod ``p`` only
(:meth:`SecretKey.decrypt`): every PEM plaintext is far below ``p``, and this costs one
exponentiation mod ``p²``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import gmpy2
from phe import paillier


@dataclass(frozen=True)
class PublicKey:
    """A Paillier public key ``n`` (``g = n + 1``)."""

    n: int

    @property
    def nsquare(self) -> int:
        """``n²``, the ciphertext modulus."""
        return int(self.n) ** 2

    @property
    def bits(self) -> int:
        """Key size in bits."""
        return int(self.n).bit_length()


class SecretKey:
    """A Paillier secret key (the phe key, reduced to what decryption mod ``p`` needs)."""

    def __init__(self, key: paillier.PaillierPrivateKey) -> None:
        self.phe = key
        self.public = PublicKey(int(key.public_key.n))
        self._p = gmpy2.mpz(key.p)
        self._psquare = gmpy2.mpz(key.psquare)
        self._hp = gmpy2.mpz(key.hp)

    @property
    def plaintext_bound(self) -> int:
        """Plaintexts (as signed integers) must have absolute value below this bound."""
        return int(self._p) // 2

    def decrypt(self, ciphertext: int) -> int:
        """Decrypt to a signed integer ``m`` with ``|m| < p/2`` (one exponentiation mod ``p²``)."""
        x = gmpy2.powmod(gmpy2.mpz(ciphertext), self._p - 1, self._psquare)
        m = int((x - 1) // self._p * self._hp % self._p)
        return m - int(self._p) if m > int(self._p) // 2 else m


def generate_keypair(bits: int) -> SecretKey:
    """Generate a Paillier key pair of ``bits`` (phe's generator, system randomness)."""
    _, sk = paillier.generate_paillier_keypair(n_length=bits)
    return SecretKey(sk)


def randomizer(pk: PublicKey, rng: random.Random) -> int:
    """Return a fresh ``r^n mod n²`` for ``pk`` (the offline part of one encryption)."""
    n = gmpy2.mpz(pk.n)
    r = gmpy2.mpz(rng.randrange(1, pk.n))
    return int(gmpy2.powmod(r, n, n * n))


def encrypt(pk: PublicKey, m: int, rho: int) -> int:
    """Encrypt signed ``m`` under ``pk`` with the precomputed randomizer ``rho`` (online part)."""
    n = gmpy2.mpz(pk.n)
    return int((1 + n * (m % n)) * rho % (n * n))


def add(pk: PublicKey, *ciphertexts: int) -> int:
    """Homomorphic sum: the product of the ciphertexts mod ``n²``."""
    nsq = gmpy2.mpz(pk.nsquare)
    acc = gmpy2.mpz(1)
    for c in ciphertexts:
        acc = acc * c % nsq
    return int(acc)


def scale(pk: PublicKey, ciphertext: int, factor: int) -> int:
    """Homomorphic multiplication by a non-negative plaintext integer: ``c^factor mod n²``."""
    return int(gmpy2.powmod(gmpy2.mpz(ciphertext), factor, gmpy2.mpz(pk.nsquare)))


class RandomizerPool:
    """Randomizers (``r^n mod n²``, DGK ``h^r``) computed offline per key and used up online."""

    def __init__(self) -> None:
        self._pool: dict[int, list[int]] = {}
        #: How many values were asked for online with the pool empty (paid online).
        self.misses = 0
        #: How many values were used online (owner keys ≥ 0 are Paillier, < 0 DGK by convention).
        self.used = {"paillier": 0, "dgk": 0}
        #: How many values were made offline (:meth:`fill`), by the same convention.
        self.made = {"paillier": 0, "dgk": 0}

    def fill(self, owner: int, count: int, make: Callable[[], int]) -> int:
        """Top the pool for ``owner``'s key up to ``count`` values; return how many were made."""
        values = self._pool.setdefault(owner, [])
        made = max(0, count - len(values))
        values.extend(make() for _ in range(made))
        self.made["paillier" if owner >= 0 else "dgk"] += made
        return made

    def owners(self) -> list[int]:
        """The keys (owner ids) this pool holds values for."""
        return [owner for owner, values in self._pool.items() if values]

    def drop(self, owner: int) -> int:
        """Forget the values for ``owner``'s key; return how many there were."""
        return len(self._pool.pop(owner, ()))

    def clear(self) -> None:
        """Forget every value (the keys they were made for are replaced); counters stay."""
        self._pool.clear()

    def take(self, owner: int, make: Callable[[], int]) -> int:
        """Use one precomputed value for ``owner``'s key, or make one now (a miss)."""
        self.used["paillier" if owner >= 0 else "dgk"] += 1
        values = self._pool.get(owner)
        if values:
            return values.pop()
        self.misses += 1
        return make()
