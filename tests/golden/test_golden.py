"""Golden vectors: fixed input and randomness give exactly the stored bytes, and back.

Each ``check_*`` reads one stored vector file (see :mod:`tests.golden.make`, which also
rewrites them: ``python -m tests.golden.make``) and (a) encodes the stored input with the stored
randomness and wants the stored output exactly, (b) decodes the stored output and wants the
input back. :func:`test_a_changed_byte_fails` guards the guards: one changed byte of any stored
output makes its check fail.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from phe import paillier as phe

from sealgrid.mechanism.bids import BidRejected
from sealgrid.protocol import field as F
from sealgrid.protocol.encoding import (
    BidShares,
    Layout,
    OutputShare,
    payload_size,
    plain_vectors,
    reconstruct,
    threshold,
)
from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.wire import Message, Topic, decode, encode
from sealgrid.service import wire
from tests.golden import make

Doc = dict[str, Any]


def read_bid(layout: Layout, row: np.ndarray) -> tuple[bool, int, int, int]:
    """Read ``(is_buy, quantity_wh, level, supplier)`` back from a plaintext bid vector."""
    w = [int(x) for x in row[layout.w]]
    (block,) = [i for i, x in enumerate(w) if x]
    is_buy, hi = block < layout.coarse, block % layout.coarse
    (lo,) = [i for i, x in enumerate(row[layout.e]) if int(x) == 1]
    (supplier,) = [i for i, x in enumerate(row[layout.supplier]) if int(x) == 1]
    q_minus_1 = sum(int(b) << i for i, b in enumerate(row[layout.low_bits]))
    max_minus_q = sum(int(b) << i for i, b in enumerate(row[layout.high_bits]))
    quantity = q_minus_1 + 1
    assert w[block] == quantity and layout.max_quantity_wh - quantity == max_minus_q
    return is_buy, quantity, layout.fine * hi + lo, supplier


def check_shares(doc: Doc) -> None:
    """Bid payloads (:class:`BidShares`) and output shares (:class:`OutputShare`)."""
    key = bytes.fromhex(doc["key"])
    layout = Layout(**doc["layout"])
    for bid in doc["bids"]:
        given = (bid["is_buy"], bid["quantity_wh"], bid["level"], bid["supplier"])
        stored = [bytes.fromhex(p) for p in bid["payloads"]]
        # (a) the same input, key and layout give exactly the stored bytes
        assert make.bid_payloads(layout, given, key) == stored
        # (b) the stored bytes parse, each is one server's share, and together give the input
        parsed = [BidShares.from_bytes(p) for p in stored]
        assert [s.party for s in parsed] == [0, 1, 2]
        assert all(s.layout == layout and len(p) == payload_size(layout)
                   for s, p in zip(parsed, stored, strict=True))
        assert [s.to_bytes() for s in parsed] == stored
        row = F.reconstruct([s.values for s in parsed], threshold(3))
        expected = plain_vectors(layout, np.array([given[0]]), np.array([given[1]]),
                                 np.array([given[2]]), np.array([given[3]]))[0]
        assert np.array_equal(row, expected)
        assert read_bid(layout, row) == given
    out = doc["outputs"]
    stored = [bytes.fromhex(p) for p in out["payloads"]]
    assert make.output_payloads(out["values"], key, out["label"]) == stored
    parsed_out = [OutputShare.from_bytes(p) for p in stored]
    assert [s.to_bytes() for s in parsed_out] == stored
    assert reconstruct(parsed_out) == out["values"]


def check_wire(doc: Doc) -> None:
    """PEM messages (:mod:`sealgrid.protocol.pem.wire`)."""
    for m in doc["messages"]:
        message = Message(Topic[m["topic"]], m["window"], m["sender"], tuple(m["values"]))
        stored = bytes.fromhex(m["bytes"])
        assert encode(message) == stored
        assert decode(stored) == message


def check_service_wire(doc: Doc) -> None:
    """Every service message (:mod:`sealgrid.service.wire`), signed by a fixed key."""
    key = make.service_key()
    assert bytes.fromhex(doc["key_seed"]) == make.SERVICE_KEY_SEED
    public = bytes.fromhex(doc["public_key"])
    assert wire.raw_public(key) == public
    assert [m["type"] for m in doc["messages"]] == [
        type(m).__name__ for m in make.SERVICE_MESSAGES]
    assert set(wire.MESSAGE_TYPES) == {m["type"] for m in doc["messages"]}  # every one
    for given, m in zip(make.SERVICE_MESSAGES, doc["messages"], strict=True):
        stored = m["text"].encode()
        # (a) the fixed fields, signed by the fixed key, give exactly the stored text
        assert wire.encode(make.signed(given)) == stored
        # (b) the stored text decodes to those fields, and its signature verifies
        back: Any = wire.decode(wire.MESSAGE_TYPES[m["type"]], stored)
        if hasattr(back, "signature"):
            assert dataclasses.replace(back, signature=b"") == given
            assert wire.verify(back, public)
        else:  # the public outcome travels inside signed statements
            assert back == given


def check_paillier(doc: Doc) -> None:
    """A tiny Paillier key: encryption with fixed ``r``, decryption, sum and scaling."""
    sk = make.paillier_key(doc["p"], doc["q"])
    pk = sk.public
    assert pk.n == doc["n"] == doc["p"] * doc["q"]
    reference = phe.PaillierPublicKey(pk.n)  # python-paillier computes the same ciphertexts
    for case in doc["encryptions"]:
        assert make.paillier_encrypt(pk, case["m"], case["r"]) == (case["rho"], case["c"])
        assert reference.raw_encrypt(case["m"] % pk.n, r_value=case["r"]) == case["c"]
        assert sk.decrypt(case["c"]) == case["m"]
    cts = [case["c"] for case in doc["encryptions"]]
    assert pa.add(pk, *cts) == doc["sum"]["c"]
    assert sk.decrypt(doc["sum"]["c"]) == doc["sum"]["m"] == sum(c["m"] for c in doc["encryptions"])
    sc = doc["scale"]
    assert pa.scale(pk, cts[sc["of"]], sc["factor"]) == sc["c"]
    assert sk.decrypt(sc["c"]) == sc["m"] == doc["encryptions"][sc["of"]]["m"] * sc["factor"]


def check_dgk(doc: Doc) -> None:
    """A tiny DGK key: encrypted bits, one comparison with scripted randomness."""
    sk = make.dgk_key(doc["key"])
    pk = sk.public
    assert pk.n == sk.p * sk.q and (sk.p - 1) % (pk.u * sk.vp) == 0
    assert (sk.q - 1) % (pk.u * sk.vq) == 0
    bits = doc["bits"]
    rands = make.dgk_rerandomizers(pk, bits["exponents"])
    assert rands == bits["rerandomizers"]
    # (a) encryption of B's bits with the stored randomness
    assert dgk.encrypt_bits(sk, bits["value"], bits["length"], rands) == bits["ciphertexts"]
    # (b) the stored ciphertexts decrypt to B's bits
    b = bits["value"]
    assert [dgk.decrypt_small(sk, c) for c in bits["ciphertexts"]] == [
        b >> i & 1 for i in range(bits["length"])]
    assert {cmp["share_b"] for cmp in doc["compare"]} == {0, 1}  # with and without a zero
    for cmp in doc["compare"]:
        blind_rands = make.dgk_rerandomizers(pk, cmp["exponents"])
        blinded, share_a = make.dgk_blind(pk, cmp["a"], bits["ciphertexts"], blind_rands,
                                          cmp["sign"], cmp["blinding"], cmp["permutation"])
        assert (blinded, share_a) == (cmp["blinded"], cmp["share_a"])
        assert dgk.zero_test(sk, cmp["blinded"]) == cmp["share_b"]
        assert cmp["share_a"] ^ cmp["share_b"] == cmp["a_greater"] == int(cmp["a"] > b)
        zeros = [dgk.decrypt_small(sk, c) == 0 for c in cmp["blinded"]]
        assert sum(zeros) == cmp["share_b"]  # at most one blinded value encrypts 0


CHECKS: dict[str, Callable[[Doc], None]] = {
    "shares.json": check_shares,
    "pem_wire.json": check_wire,
    "service_wire.json": check_service_wire,
    "paillier.json": check_paillier,
    "dgk.json": check_dgk,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_stored_vector_holds(name: str) -> None:
    CHECKS[name](make.load(name))


def test_the_files_are_what_make_writes() -> None:
    """The inputs in tests/golden/make.py and the stored files agree (no hand edits)."""
    for name, build in make.VECTORS.items():
        assert (make.HERE / name).read_text() == make.render(build()), name


def _flip_hex(value: str, at: int) -> str:
    raw = bytearray(bytes.fromhex(value))
    raw[at] ^= 0x01
    return raw.hex()


def _flip_signature(text: str) -> str:
    """``text`` with the first base64 digit of its signature changed."""
    at = text.index('"signature":"') + len('"signature":"')
    return text[:at] + ("B" if text[at] == "A" else "A") + text[at + 1:]


def _mutants(name: str, doc: Doc) -> list[Doc]:
    """Copies of ``doc`` with one stored output changed by one byte (or one bit of an int)."""
    out: list[Doc] = []

    def edit(change: Callable[[Doc], None]) -> None:
        d = copy.deepcopy(doc)
        change(d)
        out.append(d)

    if name == "shares.json":
        size = len(doc["bids"][0]["payloads"][0]) // 2
        for at in (0, 6, size - 1):  # magic, layout field, last share byte
            edit(lambda d, at=at: d["bids"][0]["payloads"].__setitem__(  # type: ignore[misc]
                1, _flip_hex(d["bids"][0]["payloads"][1], at)))
        edit(lambda d: d["outputs"]["payloads"].__setitem__(
            2, _flip_hex(d["outputs"]["payloads"][2], -1)))
    elif name == "pem_wire.json":
        for i in range(len(doc["messages"])):
            edit(lambda d, i=i: d["messages"][i].__setitem__(  # type: ignore[misc]
                "bytes", _flip_hex(d["messages"][i]["bytes"], -1)))
    elif name == "service_wire.json":
        for i in range(len(doc["messages"])):
            edit(lambda d, i=i: d["messages"][i].__setitem__(  # type: ignore[misc]
                "text", d["messages"][i]["text"].replace('"v":1', '"v":1 ', 1)))
        first = doc["messages"][0]["text"]
        edit(lambda d: d["messages"][0].__setitem__("text", _flip_signature(first)))
    elif name == "paillier.json":
        edit(lambda d: d["encryptions"][1].__setitem__("c", d["encryptions"][1]["c"] ^ 1))
        edit(lambda d: d["sum"].__setitem__("c", d["sum"]["c"] ^ 1 << 8))
        edit(lambda d: d["scale"].__setitem__("c", d["scale"]["c"] ^ 1))
    elif name == "dgk.json":
        edit(lambda d: d["bits"]["ciphertexts"].__setitem__(0, d["bits"]["ciphertexts"][0] ^ 1))
        for k in range(len(doc["compare"])):
            edit(lambda d, k=k: d["compare"][k]["blinded"].__setitem__(  # type: ignore[misc]
                4, d["compare"][k]["blinded"][4] ^ 1))
    return out


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_changed_byte_fails(name: str) -> None:
    doc = make.load(name)
    mutants = _mutants(name, doc)
    assert mutants
    for mutant in mutants:
        assert mutant != doc
        with pytest.raises((AssertionError, BidRejected, ValueError, wire.WireError)):
            CHECKS[name](mutant)
