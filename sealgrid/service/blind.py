"""RSA blind signatures (RSA-FDH) for one-time pseudonyms; assumes the one-more-RSA problem.

Each server has a fresh RSA issuer key per trading period. A registered household asks each
server, once per period, to sign its *blinded* pseudonym: the server learns who asked, but
the signature it returns is on ``m·r^e`` for a random ``r``, so it cannot recognise the
unblinded signature on ``FDH(period, pseudonym)`` when the pseudonym later bids. A fresh key
per period binds a signature to its period (a household cannot spend this period's quota on
another period). Security rests on RSA-FDH in the random-oracle model (Bellare et al., the
one-more-RSA-inversion problem); the full-domain hash is SHAKE-256 with domain separation,
reduced modulo ``n`` (the bias is below 2^-256 for the 512 extra bits drawn).

Arithmetic uses gmpy2 (a few milliseconds per 2048-bit signature with CRT).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import gmpy2
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048
EXPONENT = 65537  # the one public exponent every issuer key has (households check it)
DOMAIN = b"sealgrid/v1/pseudonym\n"
KEY_DOMAIN = b"sealgrid/v1/issuer-key\n"


class MalformedIssuer(ValueError):
    """An issuer key is not of the market's one form (exponent 65537, a 2048-bit modulus)."""


def fdh(modulus: int, period: str, pseudonym: bytes) -> int:
    """Hash ``(period, pseudonym)`` onto ``Z_n`` (full-domain hash, SHAKE-256)."""
    size = (modulus.bit_length() + 7) // 8 + 64
    data = DOMAIN + period.encode() + b"\n" + pseudonym
    return int.from_bytes(hashlib.shake_256(data).digest(size), "big") % modulus


@dataclass(frozen=True)
class IssuerPublic:
    """The public half of a period's issuer key."""

    n: int
    e: int

    @property
    def size(self) -> int:
        """Bytes of the modulus."""
        return (self.n.bit_length() + 7) // 8

    def check(self) -> None:
        """Refuse a key not of the market's one form: ``e = 65537``, a 2048-bit odd modulus.

        With ``e`` fixed, a server cannot tell households apart by giving one of them the
        same modulus under another exponent; :meth:`digest` covers both numbers, so the
        signed period statement shows which key a server used (docs/threat-model.md).

        Raises:
            MalformedIssuer: another exponent or modulus size, or an even modulus.
        """
        if self.e != EXPONENT:
            raise MalformedIssuer(f"issuer exponent {self.e}, not {EXPONENT}")
        if self.n.bit_length() != KEY_BITS or self.n % 2 == 0:
            raise MalformedIssuer(f"issuer modulus is not an odd {KEY_BITS}-bit number")

    def digest(self) -> bytes:
        """SHA-256 of ``(n, e)``, each length-prefixed: what period statements publish."""
        e = self.e.to_bytes((self.e.bit_length() + 7) // 8 or 1, "big")
        data = KEY_DOMAIN + b"".join(len(x).to_bytes(4, "big") + x for x in (self.n_bytes, e))
        return hashlib.sha256(data).digest()

    @property
    def n_bytes(self) -> bytes:
        """The modulus as ``size`` big-endian bytes (as sent on the wire)."""
        return self.n.to_bytes(self.size, "big")

    def verify(self, period: str, pseudonym: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid unblinded signature on the pseudonym."""
        if len(signature) != self.size:
            return False
        s = int.from_bytes(signature, "big")
        if not 0 < s < self.n:
            return False
        return int(gmpy2.powmod(s, self.e, self.n)) == fdh(self.n, period, pseudonym)


class Issuer:
    """A period's issuer key: signs blinded messages."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        nums = key.private_numbers()
        self.public = IssuerPublic(nums.public_numbers.n, nums.public_numbers.e)
        self._p, self._q = gmpy2.mpz(nums.p), gmpy2.mpz(nums.q)
        self._dp, self._dq, self._qinv = (
            gmpy2.mpz(nums.dmp1),
            gmpy2.mpz(nums.dmq1),
            gmpy2.mpz(nums.iqmp),
        )

    @classmethod
    def generate(cls) -> Issuer:
        """Make a fresh issuer key (about a tenth of a second)."""
        return cls(rsa.generate_private_key(public_exponent=EXPONENT, key_size=KEY_BITS))

    def sign_blinded(self, blinded: bytes) -> bytes:
        """Sign a blinded message (the server never sees what it signs).

        Raises:
            ValueError: the blinded message is not an element of ``Z_n``.
        """
        x = int.from_bytes(blinded, "big")
        if len(blinded) != self.public.size or not 0 < x < self.public.n:
            raise ValueError("the blinded message is not a number below the modulus")
        mp = gmpy2.powmod(x, self._dp, self._p)
        mq = gmpy2.powmod(x, self._dq, self._q)
        h = (self._qinv * (mp - mq)) % self._p
        s = int(mq + h * self._q)
        if int(gmpy2.powmod(s, self.public.e, self.public.n)) != x:  # fault check (CRT)
            raise ValueError("signing fault")
        return s.to_bytes(self.public.size, "big")


@dataclass(frozen=True)
class Blinding:
    """A household's blinded request and the secret to unblind the answer."""

    blinded: bytes
    r: int


def blind(public: IssuerPublic, period: str, pseudonym: bytes) -> Blinding:
    """Blind ``FDH(period, pseudonym)`` with a fresh random factor."""
    m = fdh(public.n, period, pseudonym)
    while True:
        r = secrets.randbelow(public.n - 2) + 2
        if gmpy2.gcd(r, public.n) == 1:
            break
    x = (m * int(gmpy2.powmod(r, public.e, public.n))) % public.n
    return Blinding(x.to_bytes(public.size, "big"), r)


def unblind(public: IssuerPublic, blinding: Blinding, blind_signature: bytes) -> bytes:
    """Turn the server's blind signature into the signature on ``FDH(period, pseudonym)``."""
    s_blind = int.from_bytes(blind_signature, "big")
    s = (s_blind * int(gmpy2.invert(blinding.r, public.n))) % public.n
    return s.to_bytes(public.size, "big")
