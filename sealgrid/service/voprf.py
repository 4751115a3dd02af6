"""Verifiable oblivious PRF (RFC 9497, mode VOPRF, ristretto255-SHA512) over libsodium.

What it is for: a server (:class:`Issuer`) evaluates a keyed PRF on inputs it never sees —
the client sends ``blind·HashToGroup(input)`` (:func:`blind`), the server multiplies by its
secret key and proves with one batched DLEQ proof that it used the key behind its published
public key for every element of the batch (:meth:`Issuer.evaluate`), and the client checks the
proof, unblinds and hashes (:func:`finalize`). The 64-byte output is a token the server can
later recognise when the input is shown in clear (:meth:`Issuer.verify_token`), without being
able to link it to the evaluation that produced it. The proof stops a server from tagging a
client with a key of its own (RFC 9497 §3.3.2).

Follows RFC 9497 exactly, so its outputs match other implementations byte for byte (the tests
check Appendix A.1.2): the prime-order group and its serialisation (§2.1, §4.1), the batched
DLEQ proof with ``ComputeCompositesFast`` on the server and ``ComputeComposites`` on the
client (§2.2.1, §2.2.2), ``DeriveKeyPair`` (§3.2.1), ``Blind``/``BlindEvaluate``/``Finalize``/
``Evaluate`` (§3.3.1, §3.3.2), and the input limit (§5.1). ``contextString`` is
``"OPRFV1-" || I2OSP(0x01, 1) || "-ristretto255-SHA512"``. ``HashToGroup`` is
``hash_to_ristretto255`` (RFC 9380 Appendix B) with ``expand_message_xmd`` over SHA-512
(RFC 9380 §5.3.1); ``HashToScalar`` reduces 64 such bytes, read little-endian, modulo the
group order.

Assumes: the one-more gap Diffie-Hellman problem is hard in ristretto255 and SHA-512 behaves
as a random oracle (RFC 9497 §7.2.1); libsodium's ristretto255 arithmetic (≥ 1.0.18, through
``pysodium``) is correct and constant time (§7.4). Every evaluation is a static-DH oracle
query: ``Q`` of them cost up to ``log2(Q)/2`` bits of the key's 128-bit security (§7.2.3),
so callers rate-limit evaluations and rotate keys.

Elements are checked here rather than left to libsodium: libsodium 1.0.18 decodes a 32-byte
string whose top bit is set as if the bit were clear (so every element, the identity
included, has a second, non-canonical encoding), and its ``is_valid_point`` accepts the
identity. :func:`check_element` refuses both, as RFC 9496 §4.3.1 and RFC 9497 §4.1 require.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pysodium

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
PROOF_BYTES = 2 * SCALAR_BYTES
OUTPUT_BYTES = 64  # Nh: SHA-512
MAX_INPUT_BYTES = 2**16 - 2  # RFC 9497 §5.1: inputs are smaller than 2^16 - 1 bytes
MAX_BATCH = 2**16  # the composite index is I2OSP(i, 2)

MODE_VOPRF = 0x01
SUITE = b"ristretto255-SHA512"
CONTEXT = b"OPRFV1-" + bytes([MODE_VOPRF]) + b"-" + SUITE

ORDER = 2**252 + 27742317777372353535851937790883648493  # the group order L

_GROUP_DST = b"HashToGroup-" + CONTEXT
_SCALAR_DST = b"HashToScalar-" + CONTEXT
_DERIVE_DST = b"DeriveKeyPair" + CONTEXT  # no hyphen: RFC 9497 §3.2.1
_SEED_DST = b"Seed-" + CONTEXT

_IDENTITY = bytes(ELEMENT_BYTES)
_ZERO = bytes(SCALAR_BYTES)
_ONE = (1).to_bytes(SCALAR_BYTES, "little")
_GENERATOR = pysodium.crypto_scalarmult_ristretto255_base(_ONE)
_ZPAD = hashlib.sha512(bytes(128))  # expand_message_xmd's Z_pad block, hashed once


class MalformedElement(ValueError):
    """An element or public key is not a canonical ristretto255 encoding, or is the identity."""


class MalformedScalar(ValueError):
    """A secret scalar (key, blind, proof nonce) is not a canonical nonzero 32-byte scalar."""


class InvalidProof(ValueError):
    """A DLEQ proof does not verify for the public key and the batch it came with."""


class InvalidInput(ValueError):
    """An input is too long (RFC 9497 §5.1), or hashes to the identity (``InvalidInputError``)."""


def _i2osp2(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _expand_xmd64(msg: bytes, dst: bytes) -> bytes:
    """``expand_message_xmd(msg, dst, 64)`` with SHA-512 (RFC 9380 §5.3.1; one block, ell = 1)."""
    dst_prime = dst + bytes([len(dst)])
    h = _ZPAD.copy()
    h.update(msg + _i2osp2(64) + b"\x00" + dst_prime)
    b0 = h.digest()
    return hashlib.sha512(b0 + b"\x01" + dst_prime).digest()


def _check_input(data: bytes, what: str = "input") -> None:
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInput(
            f"{what} is {len(data)} bytes; at most {MAX_INPUT_BYTES} (RFC 9497 §5.1)"
        )


def hash_to_group(data: bytes) -> bytes:
    """``HashToGroup(data)``: hash_to_ristretto255 with DST ``"HashToGroup-" || contextString``.

    Raises:
        InvalidInput: ``data`` is over :data:`MAX_INPUT_BYTES`, or maps to the identity
            (``InvalidInputError``, RFC 9497 §3.3.1; probability about 2^-252).
    """
    _check_input(data)
    point: bytes = pysodium.crypto_core_ristretto255_from_hash(_expand_xmd64(data, _GROUP_DST))
    if point == _IDENTITY:
        raise InvalidInput("input hashes to the identity element (RFC 9497 §3.3.1)")
    return point


def hash_to_scalar(data: bytes, dst: bytes = _SCALAR_DST) -> bytes:
    """``HashToScalar(data)``: 64 bytes of expand_message_xmd, little-endian, modulo ``L``."""
    scalar: bytes = pysodium.crypto_core_ristretto255_scalar_reduce(_expand_xmd64(data, dst))
    return scalar


def _check(data: bytes, what: str) -> None:
    if not isinstance(data, bytes | bytearray):
        raise MalformedElement(f"{what} is a {type(data).__name__}, not bytes")
    if len(data) != ELEMENT_BYTES:
        raise MalformedElement(f"{what} is {len(data)} bytes, not {ELEMENT_BYTES}")
    if data[31] & 0x80:
        # libsodium 1.0.18 ignores this bit; RFC 9496 §4.3.1 requires it clear.
        raise MalformedElement(
            f"{what} is not a canonical ristretto255 encoding: its top bit is set (RFC 9496 §4.3.1)"
        )
    if not pysodium.crypto_core_ristretto255_is_valid_point(bytes(data)):
        raise MalformedElement(
            f"{what} is not a canonical ristretto255 encoding: Decode fails (RFC 9496 §4.3.1)"
        )
    if data == _IDENTITY:
        raise MalformedElement(f"{what} is the identity element (RFC 9497 §4.1 refuses it)")


def check_element(data: bytes) -> None:
    """``DeserializeElement``'s checks (RFC 9497 §4.1): 32 bytes, canonical, not the identity.

    Raises:
        MalformedElement: naming the rule broken.
    """
    _check(data, "element")


def check_public(data: bytes) -> None:
    """The same checks for a server's public key ``pkS``.

    Raises:
        MalformedElement: naming the rule broken.
    """
    _check(data, "public key")


def _secret_scalar(data: bytes, what: str) -> bytes:
    """``data`` as a canonical nonzero scalar, compared in constant time; else MalformedScalar."""
    if not isinstance(data, bytes | bytearray) or len(data) != SCALAR_BYTES:
        raise MalformedScalar(f"{what} is not {SCALAR_BYTES} bytes")
    data = bytes(data)
    reduced = pysodium.crypto_core_ristretto255_scalar_reduce(data + _ZERO)
    if not hmac.compare_digest(reduced, data):
        raise MalformedScalar(f"{what} is not a canonical scalar (not below the group order)")
    if hmac.compare_digest(data, _ZERO):
        raise MalformedScalar(f"{what} is zero")
    return data


def _mul(k: bytes, p: bytes) -> bytes:
    """``k·p`` for a canonical scalar and a decodable element (the identity included).

    libsodium refuses a product that is the identity (``k = 0`` or ``p = I``); that product is
    the identity here. Catching the refusal keeps the scalar out of a branch before the call.
    """
    try:
        out: bytes = pysodium.crypto_scalarmult_ristretto255(k, p)
    except ValueError:
        return _IDENTITY
    return out


def _mul_base(k: bytes) -> bytes:
    """``k·G``; the identity for ``k = 0``."""
    try:
        out: bytes = pysodium.crypto_scalarmult_ristretto255_base(k)
    except ValueError:
        return _IDENTITY
    return out


def _add(p: bytes, q: bytes) -> bytes:
    out: bytes = pysodium.crypto_core_ristretto255_add(p, q)
    return out


def _weights(b: bytes, cs: Sequence[bytes], ds: Sequence[bytes]) -> list[bytes]:
    """The composite weights ``d_i`` of ComputeComposites(Fast) (RFC 9497 §2.2.1, §2.2.2)."""
    seed = hashlib.sha512(
        _i2osp2(len(b)) + b + _i2osp2(len(_SEED_DST)) + _SEED_DST
    ).digest()
    prefix = _i2osp2(len(seed)) + seed
    return [
        hash_to_scalar(
            prefix + _i2osp2(i) + _i2osp2(len(c)) + c + _i2osp2(len(d)) + d + b"Composite"
        )
        for i, (c, d) in enumerate(zip(cs, ds, strict=True))
    ]


def _challenge(b: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> bytes:
    transcript = b"".join(_i2osp2(len(x)) + x for x in (b, m, z, t2, t3)) + b"Challenge"
    return hash_to_scalar(transcript)


def _generate_proof(
    k: bytes, pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes], r: bytes
) -> bytes:
    """GenerateProof(k, G, pk, C, D) with nonce ``r`` (RFC 9497 §2.2.1): ``c || s``."""
    m = _IDENTITY
    for d_i, c in zip(_weights(pk, cs, ds), cs, strict=True):  # ComputeCompositesFast
        m = _add(_mul(d_i, c), m)
    z = _mul(k, m)
    t2 = _mul_base(r)
    t3 = _mul(r, m)
    c = _challenge(pk, m, z, t2, t3)
    s = pysodium.crypto_core_ristretto255_scalar_sub(
        r, pysodium.crypto_core_ristretto255_scalar_mul(c, k)
    )
    return bytes(c) + bytes(s)


def _proof_scalar(data: bytes, name: str) -> bytes:
    reduced = pysodium.crypto_core_ristretto255_scalar_reduce(data + _ZERO)
    if reduced != data:
        raise InvalidProof(f"proof scalar {name} is not a canonical scalar (RFC 9497 §4.1)")
    return data


def _verify_proof(pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes], proof: bytes) -> None:
    """VerifyProof(G, pk, C, D, proof) (RFC 9497 §2.2.2); raises InvalidProof if it fails."""
    if len(proof) != PROOF_BYTES:
        raise InvalidProof(f"proof is {len(proof)} bytes, not {PROOF_BYTES}")
    c = _proof_scalar(bytes(proof[:SCALAR_BYTES]), "c")
    s = _proof_scalar(bytes(proof[SCALAR_BYTES:]), "s")
    m = z = _IDENTITY
    for d_i, c_i, dd in zip(_weights(pk, cs, ds), cs, ds, strict=True):  # ComputeComposites
        m = _add(_mul(d_i, c_i), m)
        z = _add(_mul(d_i, dd), z)
    t2 = _add(_mul_base(s), _mul(c, pk))
    t3 = _add(_mul(s, m), _mul(c, z))
    if not hmac.compare_digest(_challenge(pk, m, z, t2, t3), c):
        raise InvalidProof(
            "DLEQ proof does not verify: the evaluated elements were not all made with the "
            "key behind this public key (RFC 9497 §2.2.2)"
        )


def _output(data: bytes, element: bytes) -> bytes:
    """The Finalize/Evaluate hash (RFC 9497 §3.3.1): 64 bytes of SHA-512."""
    return hashlib.sha512(
        _i2osp2(len(data)) + data + _i2osp2(len(element)) + element + b"Finalize"
    ).digest()


def _batch_size(n: int, what: str) -> None:
    if n == 0:
        raise ValueError(f"{what}: an empty batch")
    if n > MAX_BATCH:
        raise ValueError(f"{what}: a batch of {n}; at most {MAX_BATCH}")


class Issuer:
    """A VOPRF server key ``(skS, pkS = skS·G)``: evaluates blinded elements, checks tokens."""

    __slots__ = ("_public", "_secret")

    def __init__(self, secret: bytes) -> None:
        """Wrap a secret scalar ``skS``: 32 bytes little-endian, canonical and nonzero.

        Raises:
            MalformedScalar: another length, a value not below the group order, or zero.
        """
        self._secret = _secret_scalar(secret, "secret key")
        self._public = _mul_base(self._secret)

    @classmethod
    def generate(cls) -> Issuer:
        """A fresh key: a uniformly random nonzero scalar (libsodium's ``scalar_random``)."""
        return cls(pysodium.crypto_core_ristretto255_scalar_random())

    @classmethod
    def derive(cls, seed: bytes, info: bytes) -> Issuer:
        """``DeriveKeyPair(seed, info)`` (RFC 9497 §3.2.1): the key follows from a secret seed.

        Args:
            seed: 32 secret random bytes (``Ns``).
            info: public, possibly empty, at most :data:`MAX_INPUT_BYTES` bytes.

        Raises:
            ValueError: ``seed`` is not 32 bytes.
            InvalidInput: ``info`` is too long, or all 256 counters hash to zero
                (``DeriveKeyPairError``; negligible: each is zero with probability 1/L).
        """
        if len(seed) != SCALAR_BYTES:
            raise ValueError(f"seed is {len(seed)} bytes, not {SCALAR_BYTES}")
        _check_input(info, "info")
        derive_input = bytes(seed) + _i2osp2(len(info)) + bytes(info)
        for counter in range(256):
            sk = hash_to_scalar(derive_input + bytes([counter]), _DERIVE_DST)
            if not hmac.compare_digest(sk, _ZERO):
                return cls(sk)
        raise InvalidInput("DeriveKeyPair: every counter hashed to zero (DeriveKeyPairError)")

    @property
    def secret(self) -> bytes:
        """``skS``, 32 bytes little-endian (SerializeScalar)."""
        return self._secret

    @property
    def public(self) -> bytes:
        """``pkS = skS·G``, 32 bytes (SerializeElement): what clients verify proofs against."""
        return self._public

    def __repr__(self) -> str:
        return f"Issuer(public={self._public.hex()})"

    def evaluate(
        self, blinded: Sequence[bytes], rng: Callable[[], bytes] | None = None
    ) -> tuple[list[bytes], bytes]:
        """BlindEvaluate on a batch (RFC 9497 §3.3.2): ``skS·B_i`` and one DLEQ proof for all.

        Args:
            blinded: the clients' blinded elements, checked before any is evaluated.
            rng: returns the proof nonce ``r`` (a canonical nonzero scalar); only for test
                vectors. ``None`` draws it at random. Two proofs with the same ``r`` under one
                key reveal the key.

        Returns:
            The evaluated elements, in order, and the ``PROOF_BYTES``-byte proof ``c || s``.

        Raises:
            MalformedElement: a blinded element is malformed or the identity (names which).
            ValueError: an empty batch, or one over :data:`MAX_BATCH`.
            MalformedScalar: ``rng`` returned no canonical nonzero scalar.
        """
        _batch_size(len(blinded), "evaluate")
        cs = [bytes(b) for b in blinded]
        for i, c in enumerate(cs):
            _check(c, f"blinded element {i}")
        ds = [_mul(self._secret, c) for c in cs]
        if rng is None:
            r = pysodium.crypto_core_ristretto255_scalar_random()
        else:
            r = _secret_scalar(rng(), "proof nonce")
        return ds, _generate_proof(self._secret, self._public, cs, ds, r)

    def evaluate_input(self, data: bytes) -> bytes:
        """Evaluate (RFC 9497 §3.3.1): the PRF output for an input seen in clear.

        Equals what :func:`finalize` returned to the client that blinded ``data``.

        Raises:
            InvalidInput: ``data`` is too long, or hashes to the identity.
        """
        return _output(data, _mul(self._secret, hash_to_group(data)))

    def verify_token(self, data: bytes, token: bytes) -> bool:
        """Whether ``token`` is this key's PRF output for ``data`` (constant-time compare).

        An input that could never have been blinded (over :data:`MAX_INPUT_BYTES`) has no
        token: ``False``.
        """
        try:
            expected = self.evaluate_input(data)
        except InvalidInput:
            return False
        return hmac.compare_digest(expected, bytes(token))


@dataclass(frozen=True)
class Blinding:
    """A client's blinded input: ``blinded = blind·HashToGroup(input)``; ``blind`` stays secret."""

    blind: bytes = field(repr=False)
    blinded: bytes


def blind(data: bytes, blind: bytes | None = None) -> Blinding:
    """Blind (RFC 9497 §3.3.1): hide ``data`` behind a random scalar before sending it.

    Args:
        data: the private input, at most :data:`MAX_INPUT_BYTES` bytes.
        blind: the blinding scalar; only for test vectors. ``None`` draws it at random.

    Raises:
        InvalidInput: ``data`` is too long, or hashes to the identity.
        MalformedScalar: ``blind`` is not a canonical nonzero scalar.
    """
    if blind is None:
        r = pysodium.crypto_core_ristretto255_scalar_random()
    else:
        r = _secret_scalar(blind, "blind")
    return Blinding(blind=r, blinded=_mul(r, hash_to_group(data)))


def finalize(
    public: bytes,
    inputs: Sequence[bytes],
    blindings: Sequence[Blinding],
    evaluated: Sequence[bytes],
    proof: bytes,
) -> list[bytes]:
    """Finalize a batch (RFC 9497 §3.3.2): verify the one proof over all, unblind, hash.

    Args:
        public: the server's ``pkS``, known to the client beforehand (not taken from the
            answer being checked).
        inputs: the private inputs, in the order they were blinded.
        blindings: what :func:`blind` returned for each.
        evaluated: the server's evaluated elements, in the same order.
        proof: the server's batched DLEQ proof.

    Returns:
        The 64-byte PRF outputs, in order.

    Raises:
        MalformedElement: ``public`` or an evaluated (or blinded) element is malformed.
        InvalidProof: the proof is malformed or does not verify over the whole batch.
        ValueError: the lists differ in length or are empty.
        InvalidInput: an input is too long.
    """
    n = len(inputs)
    if not n == len(blindings) == len(evaluated):
        raise ValueError(
            f"finalize: {n} inputs, {len(blindings)} blindings, {len(evaluated)} evaluated"
        )
    _batch_size(n, "finalize")
    check_public(public)
    pk = bytes(public)
    for i, data in enumerate(inputs):
        _check_input(data, f"input {i}")
    cs = [bytes(b.blinded) for b in blindings]
    ds = [bytes(d) for d in evaluated]
    for i, (c, d) in enumerate(zip(cs, ds, strict=True)):
        _check(c, f"blinded element {i}")
        _check(d, f"evaluated element {i}")
    blinds = [_secret_scalar(b.blind, f"blind {i}") for i, b in enumerate(blindings)]
    _verify_proof(pk, cs, ds, bytes(proof))
    return [
        _output(bytes(data), _mul(pysodium.crypto_core_ristretto255_scalar_invert(r), d))
        for data, r, d in zip(inputs, blinds, ds, strict=True)
    ]
