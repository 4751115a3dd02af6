"""Build (and with no argument rewrite) the golden vectors of tests/golden/.

A golden vector is a fixed input, fixed randomness and the exact bytes or integers the code
produced for them, checked in as JSON next to this file. :mod:`tests.golden.test_golden`
encodes each stored input again and wants the stored output byte for byte, and decodes each
stored output and wants the input back. A change of format therefore fails those tests until
the vectors are rewritten, and the rewrite is one visible commit (the habit of python-paillier's
fixed test vectors)::

    python -m tests.golden.make            # rewrite every vector file from the inputs below
    python -m tests.golden.make --check    # exit 1 (and name the files) if any would change

Vectors (integers are JSON numbers, exact in Python; byte strings are lowercase hex):

* ``shares.json`` — the secret-share bid payload (:meth:`BidShares.to_bytes`, AES-CTR sharing
  randomness from a fixed key) and the output share (:meth:`OutputShare.to_bytes`) of
  :mod:`sealgrid.protocol.encoding`;
* ``pem_wire.json`` — PEM messages in :mod:`sealgrid.protocol.pem.wire` (no randomness);
* ``paillier.json`` — a tiny Paillier key (two 32-bit primes), encryptions with fixed ``r``,
  a decryption, a homomorphic sum and a scaling (:mod:`sealgrid.protocol.pem.paillier`);
* ``service_wire.json`` — every message of the service's wire (:mod:`sealgrid.service.wire`),
  each with fixed fields and signed by a fixed Ed25519 key (Ed25519 signs deterministically),
  as the exact canonical JSON text a server or client sends;
* ``dgk.json`` — a tiny DGK key (a 94-bit modulus, 16-bit ``v_p, v_q``, ``u = 389``), encrypted
  bits and one comparison with scripted randomness (:mod:`sealgrid.protocol.pem.dgk`).

The functions that take a ``random.Random`` get a :class:`Script` that hands out the stored
values in order, so the randomness is explicit and does not depend on Python's generator.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from phe import paillier as phe

from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import Layout, OutputShare, encode_bid, share_rows
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.wire import Message, Topic, encode
from sealgrid.service import wire as sw

HERE = Path(__file__).resolve().parent

# -- the fixed inputs ---------------------------------------------------------------------

SHARE_KEY = bytes(range(16))  # the household's sharing key (AES-CTR seed)
SHARE_LAYOUT = Layout(levels=16, suppliers=2, max_quantity_wh=10_000)
SHARE_BIDS = (  # (is_buy, quantity_wh, level, supplier)
    (True, 1234, 5, 1),
    (False, 10_000, 15, 0),
    (True, 1, 0, 0),
)
OUTPUT_LABEL = "golden/output"
OUTPUT_VALUES = (1234, 0, 10_000, F.MODULUS - 1)

WIRE_MESSAGES = (
    Message(Topic.ROLES_UP, 0, 3, (0b1011, 0b1000, 0b0011)),
    Message(Topic.PRICE, 7, 299, (-5, 3)),
    Message(Topic.KIND, 1, 0, ()),
    Message(Topic.EVAL_UP, 1 << 20, 128, (0, -1, 2**300 + 12345)),
    Message(Topic.CMP_SHARE_A, 127, 128, (1,)),
)

SERVICE_KEY_SEED = bytes(range(32))  # the fixed Ed25519 key that signs every message
SERVICE_PERIOD = "2026-11-22T21:45:00Z"
SERVICE_MESSAGES: tuple[Any, ...] = (
    sw.TokenRequest("h0001", b"\x01" * 16, (SERVICE_PERIOD, "2026-11-22T22:00:00Z"),
                    (bytes(range(32)), b"\x02" * 32)),
    sw.IssuerKey(2, SERVICE_PERIOD, b"\xc3" * 32),
    sw.TokenGrant(1, (SERVICE_PERIOD,), (b"\xc3" * 32,), (b"\x5a" * 32,), (b"\x6b" * 64,)),
    sw.PseudonymousBid(SERVICE_PERIOD, 0, b"\x07" * 32, b"\x08" * 16, b"SGB1\x02payload"),
    sw.Receipt(0, SERVICE_PERIOD, b"\x07" * 32, b"\x11" * 32, b"\x22" * 32),
    sw.BidSet(1, SERVICE_PERIOD, (b"\x03" * 32, b"\x07" * 32),
              ((0).to_bytes(4, "big") + b"\x5e" * 32,)),
    sw.BidSetDigest(1, SERVICE_PERIOD, 2, b"\x2a" * 32, ((0).to_bytes(4, "big") + b"\x5e" * 32,)),
    sw.PendingSet(2, SERVICE_PERIOD, 1, (b"\x03" * 32,)),
    sw.SegmentPlan(0, SERVICE_PERIOD, 1, (b"\x03" * 32, b"\x07" * 32)),
    sw.PeriodStatement(2, SERVICE_PERIOD, 2, b"\x33" * 32, (b"\x09" * 32,), "cleared",
                       '{"invalid_bids":1,"level":7,"price":"80.7","reason":"",'
                       '"status":"cleared","type":"Outcome","v":1}',
                       "2026-11-22T21:15:00Z", b"\x44" * 32),
    sw.AuthRequest("supplier", "s1", SERVICE_PERIOD, b"\x02" * 16),
    sw.OutputShares(0, SERVICE_PERIOD, "supplier", "s1", "cleared", b"SGO1", "{}"),
    sw.Outcome("cleared", level=7, price="80.7", invalid_bids=1),
    sw.Outcome("failed", reason="server 2 did not answer"),
    sw.MarketInfo(0, 3, b"\x55" * 32, 1, "2026-11-22T21:07:00Z", 900, SERVICE_PERIOD, 65536,
                  sw.RateLimit(20, 60), ("s1", "s2", "s3"), sw.PriceGridInfo("80", "120", "0.1"),
                  10_000, 1, {"bids_in_closed_periods": 5, "closed_periods": 2}),
)

PAILLIER_P = 4294967279  # 2^32 − 17
PAILLIER_Q = 4294967291  # 2^32 − 5
PAILLIER_CASES = (  # (m, r): |m| and |Σm| below p/2 (decryption mod p), fixed r in [1, n)
    (0, 2),
    (42, 123456789),
    (-7, 18446743979220271188),
    (2**30, 1 << 40),
)
PAILLIER_SCALE = (1, 1000)  # (which encryption, factor)

DGK_KEY = dgk.DgkSecretKey(
    dgk.DgkPublicKey(n=12475541862979118014204745669, g=9412940897789883814800729526,
                     h=6530941526347161091046931922, u=389, t=16),
    p=79187759499461, q=157543816643329, vp=40577, vq=53717,
)
DGK_LENGTH = 8
DGK_B = 2 * 77 + 1  # B's input 2·R_s + 1
DGK_A = 2 * 90  # A's input 2·R_b (a > b)
DGK_BIT_EXPONENTS = (3, 5, 7, 11, 13, 17, 19, 23)  # B's rerandomizer exponents, one per bit
#: A's randomness in two comparisons: s (δ_A = [s = +1]; with s = −1 and a > b one blinded
#: value encrypts 0), the r_i ∈ Z_u* in the order blind draws them, the exponents of its
#: rerandomizers, and its shuffle (out[k] = before[permutation[k]]).
DGK_COMPARISONS = (
    (1, (2, 3, 5, 7, 11, 13, 17, 388), (101, 103, 107, 109, 113, 127, 131, 137),
     (3, 0, 6, 1, 7, 2, 5, 4)),
    (-1, (388, 200, 1, 77, 5, 99, 300, 42), (201, 203, 207, 209, 213, 227, 231, 237),
     (7, 6, 5, 4, 3, 2, 1, 0)),
)


# -- scripted randomness --------------------------------------------------------------------


class Script(random.Random):
    """A ``random.Random`` that returns stored values, in order, for the calls it expects.

    Each method has its own queue; a call with no queue, an exhausted queue or a value out of
    the asked range raises, so a change in how a function draws its randomness is noticed.
    """

    def __init__(self, *, randrange: Iterable[int] = (), getrandbits: Iterable[int] = (),
                 choice: Iterable[Any] = (), shuffle: Iterable[Sequence[int]] = ()) -> None:
        super().__init__(0)
        self._queues: dict[str, list[Any]] = {
            "randrange": list(randrange), "getrandbits": list(getrandbits),
            "choice": list(choice), "shuffle": list(shuffle)}

    def _next(self, name: str) -> Any:
        queue = self._queues[name]
        if not queue:
            raise AssertionError(f"unexpected call to {name}: no scripted value left")
        return queue.pop(0)

    def left(self) -> dict[str, int]:
        """How many scripted values were not used, by method (all 0 after a faithful run)."""
        return {k: len(v) for k, v in self._queues.items() if v}

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        lo, hi = (0, start) if stop is None else (start, stop)
        value = int(self._next("randrange"))
        if step != 1 or not lo <= value < hi:
            raise AssertionError(f"scripted {value} outside randrange({lo}, {hi})")
        return value

    def getrandbits(self, k: int) -> int:
        value = int(self._next("getrandbits"))
        if not 0 <= value < 1 << k:
            raise AssertionError(f"scripted {value} outside getrandbits({k})")
        return value

    def choice(self, seq: Any) -> Any:
        value = self._next("choice")
        if value not in seq:
            raise AssertionError(f"scripted {value!r} not in {seq!r}")
        return value

    def shuffle(self, x: MutableSequence[Any]) -> None:
        perm = list(self._next("shuffle"))
        if sorted(perm) != list(range(len(x))):
            raise AssertionError(f"scripted permutation {perm} does not fit {len(x)} items")
        x[:] = [x[j] for j in perm]

    def random(self) -> float:
        raise AssertionError("unexpected call to random()")


# -- the encoders (the tests use them too) --------------------------------------------------


def bid_payloads(layout: Layout, bid: Sequence[Any], key: bytes) -> list[bytes]:
    """The three servers' payloads of one bid shared with ``key`` (:func:`encode_bid`)."""
    is_buy, quantity, level, supplier = bid
    return [s.to_bytes() for s in encode_bid(bool(is_buy), int(quantity), int(level),
                                             int(supplier), layout, parties=3, key=key)]


def output_payloads(values: Sequence[int], key: bytes, label: str) -> list[bytes]:
    """The three servers' :class:`OutputShare` messages of ``values`` shared with ``key``."""
    row = np.array([[int(v) for v in values]], dtype=F.U64)
    return [OutputShare(i, s[0]).to_bytes()
            for i, s in enumerate(share_rows(row, 3, key, label))]


def paillier_key(p: int, q: int) -> pa.SecretKey:
    """The Paillier key with primes ``p`` and ``q`` (through phe, as :func:`generate_keypair`)."""
    return pa.SecretKey(phe.PaillierPrivateKey(phe.PaillierPublicKey(p * q), p, q))


def paillier_encrypt(pk: pa.PublicKey, m: int, r: int) -> tuple[int, int]:
    """``(ρ, c)`` for plaintext ``m`` with randomness ``r``: :func:`randomizer`, :func:`encrypt`."""
    rho = pa.randomizer(pk, Script(randrange=[r]))
    return rho, pa.encrypt(pk, m, rho)


def dgk_key(doc: dict[str, int]) -> dgk.DgkSecretKey:
    """Rebuild a DGK secret key from its stored integers."""
    public = dgk.public_from_values(tuple(doc[k] for k in ("n", "g", "h", "u", "t")))
    return dgk.DgkSecretKey(public, doc["p"], doc["q"], doc["vp"], doc["vq"])


def dgk_rerandomizers(pk: dgk.DgkPublicKey, exponents: Sequence[int]) -> list[int]:
    """``h^r mod n`` for each stored exponent (:func:`dgk.rerandomizer`)."""
    return [dgk.rerandomizer(pk, Script(getrandbits=[r])) for r in exponents]


def dgk_blind(pk: dgk.DgkPublicKey, a: int, bits: Sequence[int], rands: Sequence[int], sign: int,
              blinding: Sequence[int], permutation: Sequence[int]) -> tuple[list[int], int]:
    """A's step of the comparison (:func:`dgk.blind`) with scripted randomness."""
    rng = Script(choice=[sign], randrange=blinding, shuffle=[permutation])
    out = dgk.blind(pk, a, list(bits), list(rands), rng)
    if rng.left():
        raise AssertionError(f"dgk.blind left scripted randomness unused: {rng.left()}")
    return out


# -- the vectors ----------------------------------------------------------------------------


def shares_vector() -> dict[str, Any]:
    """The share payload vectors."""
    lay = SHARE_LAYOUT
    return {
        "key": SHARE_KEY.hex(),
        "layout": {"levels": lay.levels, "suppliers": lay.suppliers,
                   "max_quantity_wh": lay.max_quantity_wh},
        "bids": [
            {"is_buy": b[0], "quantity_wh": b[1], "level": b[2], "supplier": b[3],
             "payloads": [p.hex() for p in bid_payloads(lay, b, SHARE_KEY)]}
            for b in SHARE_BIDS
        ],
        "outputs": {"label": OUTPUT_LABEL, "values": list(OUTPUT_VALUES),
                    "payloads": [p.hex() for p in output_payloads(OUTPUT_VALUES, SHARE_KEY,
                                                                  OUTPUT_LABEL)]},
    }


def wire_vector() -> dict[str, Any]:
    """The PEM wire vectors."""
    return {"messages": [
        {"topic": m.topic.name, "window": m.window, "sender": m.sender, "values": list(m.values),
         "bytes": encode(m).hex()}
        for m in WIRE_MESSAGES
    ]}


def service_key() -> Ed25519PrivateKey:
    """The fixed signing key of the service wire vectors."""
    return Ed25519PrivateKey.from_private_bytes(SERVICE_KEY_SEED)


def signed(msg: Any) -> Any:
    """``msg`` signed by the fixed key (messages without a signature field stay as they are)."""
    has_signature = any(f.name == "signature" for f in dataclasses.fields(msg))
    return sw.sign(msg, service_key()) if has_signature else msg


def service_wire_vector() -> dict[str, Any]:
    """The service wire vectors."""
    return {
        "key_seed": SERVICE_KEY_SEED.hex(),
        "public_key": sw.raw_public(service_key()).hex(),
        "messages": [
            {"type": type(m).__name__, "text": sw.encode(signed(m)).decode()}
            for m in SERVICE_MESSAGES
        ],
    }


def paillier_vector() -> dict[str, Any]:
    """The Paillier vectors."""
    sk = paillier_key(PAILLIER_P, PAILLIER_Q)
    pk = sk.public
    cases = []
    for m, r in PAILLIER_CASES:
        rho, c = paillier_encrypt(pk, m, r)
        cases.append({"m": m, "r": r, "rho": rho, "c": c})
    total = pa.add(pk, *(c["c"] for c in cases))
    which, factor = PAILLIER_SCALE
    return {
        "p": PAILLIER_P, "q": PAILLIER_Q, "n": pk.n,
        "encryptions": cases,
        "sum": {"c": total, "m": sum(m for m, _ in PAILLIER_CASES)},
        "scale": {"of": which, "factor": factor,
                  "c": pa.scale(pk, cases[which]["c"], factor),
                  "m": PAILLIER_CASES[which][0] * factor},
    }


def dgk_vector() -> dict[str, Any]:
    """The DGK vectors."""
    sk, pk = DGK_KEY, DGK_KEY.public
    key = dict(zip(("n", "g", "h", "u", "t"), pk.values(), strict=True))
    key.update(p=sk.p, q=sk.q, vp=sk.vp, vq=sk.vq)
    rands = dgk_rerandomizers(pk, DGK_BIT_EXPONENTS)
    bits = dgk.encrypt_bits(sk, DGK_B, DGK_LENGTH, rands)
    comparisons = []
    for sign, blinding, exponents, permutation in DGK_COMPARISONS:
        blind_rands = dgk_rerandomizers(pk, exponents)
        blinded, share_a = dgk_blind(pk, DGK_A, bits, blind_rands, sign, blinding, permutation)
        share_b = dgk.zero_test(sk, blinded)
        comparisons.append({
            "a": DGK_A, "sign": sign, "blinding": list(blinding), "exponents": list(exponents),
            "permutation": list(permutation), "blinded": blinded, "share_a": share_a,
            "share_b": share_b, "a_greater": share_a ^ share_b})
    return {
        "key": key,
        "bits": {"value": DGK_B, "length": DGK_LENGTH, "exponents": list(DGK_BIT_EXPONENTS),
                 "rerandomizers": rands, "ciphertexts": bits},
        "compare": comparisons,
    }


VECTORS: dict[str, Callable[[], dict[str, Any]]] = {
    "shares.json": shares_vector,
    "pem_wire.json": wire_vector,
    "service_wire.json": service_wire_vector,
    "paillier.json": paillier_vector,
    "dgk.json": dgk_vector,
}


def render(doc: dict[str, Any]) -> str:
    """The file text of one vector (stable: sorted keys, one trailing newline)."""
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def load(name: str) -> dict[str, Any]:
    """Read one stored vector file."""
    doc: dict[str, Any] = json.loads((HERE / name).read_text())
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the vector files, or with ``--check`` report those that would change."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = args == ["--check"]
    if args and not check:
        print("usage: python -m tests.golden.make [--check]", file=sys.stderr)
        return 2
    changed = []
    for name, build in VECTORS.items():
        path = HERE / name
        text = render(build())
        if not path.exists() or path.read_text() != text:
            changed.append(name)
            if not check:
                path.write_text(text)
    verb = "differ" if check else "rewritten"
    print(f"{verb}: {', '.join(changed)}" if changed else "all golden vectors up to date")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
