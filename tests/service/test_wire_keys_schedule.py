"""Wire format, data directory and schedule: real keys, real files, no network."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import Reason
from sealgrid.service import wire
from sealgrid.service.config import load_server_config
from sealgrid.service.keys import DataDirError, Registry, load_signing_key
from sealgrid.service.schedule import Schedule, iso
from sealgrid.service.setup import init_data_dir
from sealgrid.service.wire import BidSet, Receipt, WireError


def test_canonical_bytes_are_sorted_compact_and_versioned() -> None:
    msg = BidSet(server=1, period="2026-01-01T00:00:00Z", pseudonyms=(b"\x01", b"\x02"))
    raw = wire.encode(msg)
    assert raw == (
        b'{"period":"2026-01-01T00:00:00Z","pseudonyms":["AQ==","Ag=="],"segments":[],'
        b'"server":1,"signature":"","type":"BidSet","v":1}'
    )
    assert wire.decode(BidSet, raw) == msg


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"not json", "JSON"),
        (b'{"type":"BidSet","v":1}', "missing"),
        (b'{"type":"Receipt","v":1}', "expected"),
        (b'{"type":"BidSet","v":2}', "version"),
        (b'{"type":"BidSet","v":1,"server":"1","period":"p","pseudonyms":[]}', "integer"),
        (b'{"type":"BidSet","v":1,"server":1,"period":"p","pseudonyms":["!!"]}', "base64"),
        (b'{"type":"BidSet","v":1,"server":1,"period":"p","pseudonyms":[],"x":1}', "unknown"),
    ],
)
def test_decoding_refuses_anything_off_format(raw: bytes, fragment: str) -> None:
    with pytest.raises(WireError, match=fragment):
        wire.decode(BidSet, raw)


def test_only_the_canonical_spelling_decodes() -> None:
    """A signed message has one byte form: a re-spelled copy is refused, not a second bid."""
    key = Ed25519PrivateKey.generate()
    msg = wire.sign(BidSet(server=1, period="p", pseudonyms=(b"\x01",)), key)
    raw = wire.encode(msg)
    assert wire.decode(BidSet, raw) == msg
    data = json.loads(raw)
    for respelled in (
        json.dumps(data, sort_keys=True).encode(),  # spaces
        json.dumps(dict(reversed(list(data.items())))).encode().replace(b" ", b""),  # key order
        raw.replace(b'"server":1', b'"server":1.0'),
        raw.replace(b'"type"', b'"\\u0074ype"'),
    ):
        assert respelled != raw
        with pytest.raises(WireError):
            wire.decode(BidSet, respelled)


def test_signature_covers_every_field_and_the_type() -> None:
    key = Ed25519PrivateKey.generate()
    pub = wire.raw_public(key)
    receipt = wire.sign(Receipt(0, "p", b"x" * 32, b"a", b"b"), key)
    assert wire.verify(receipt, pub)
    import dataclasses

    assert not wire.verify(dataclasses.replace(receipt, period="q"), pub)
    assert not wire.verify(receipt, wire.raw_public(Ed25519PrivateKey.generate()))
    # the same field values signed as another message type do not verify
    other = BidSet(0, "p", (), signature=receipt.signature)
    assert not wire.verify(other, pub)


def test_one_pass_decoding_and_signing_give_what_the_two_passes_give() -> None:
    """The intake's path (:func:`wire.decode_signed`, :func:`wire.sign_encoded`) against the
    general one: the same message, the same signed bytes, the same encoding, and the same
    refusal of a re-spelled copy."""
    key = Ed25519PrivateKey.generate()
    msg = wire.sign(BidSet(server=2, period="p", pseudonyms=(b"\x01", b"\xff" * 32)), key)
    raw = wire.encode(msg)
    decoded, signed = wire.decode_signed(BidSet, raw)
    assert decoded == msg
    assert signed == wire.signing_bytes(msg) and signed.startswith(wire.DOMAIN + b"BidSet\n")
    assert b'"signature"' not in signed
    assert wire.verify_bytes(signed, msg.signature, wire.raw_public(key))
    with pytest.raises(WireError, match="canonical"):
        wire.decode_signed(BidSet, raw.replace(b'"server":2', b'"server": 2'))
    receipt = Receipt(0, "p", b"x" * 32, b"a", b"b")
    signed_receipt, encoded = wire.sign_encoded(receipt, key)
    assert signed_receipt == wire.sign(receipt, key)  # Ed25519 is deterministic
    assert encoded == wire.encode(signed_receipt)
    assert wire.verify(wire.decode(Receipt, encoded), wire.raw_public(key))


def test_a_small_order_key_signs_nothing() -> None:
    """The identity point as a key, ``R`` the identity and ``S = 0``: the equation
    ``[S]B = R + [k]A`` holds for every message, and OpenSSL's Ed25519 check accepts it. The
    strict check sealgrid runs (libsodium's) refuses small-order keys, so a pseudonym made so
    cannot carry a signature that is a signature of anything."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    identity = b"\x01" + bytes(31)
    forged = identity + bytes(32)
    receipt = Receipt(0, "p", identity, b"a", b"b", signature=forged)
    Ed25519PublicKey.from_public_bytes(identity).verify(forged, wire.signing_bytes(receipt))
    assert not wire.verify(receipt, identity)
    assert not wire.verify_bytes(b"anything", forged, identity)
    assert not wire.verify_bytes(b"anything", forged[:63], identity)  # wrong lengths: False
    assert not wire.verify_bytes(b"anything", forged, identity[:31])


def test_init_makes_a_complete_private_data_dir(tmp_path) -> None:
    data = tmp_path / "data"
    registry = init_data_dir(data, households=4, base_port=19000)
    assert len(registry.servers) == 3 and len(registry.households) == 4
    assert Registry.load(data / "registry.json") == registry
    assert not (data / "private").exists()  # no CA, no CA key
    for path in (
        data / "households" / "h0001.key",
        data / "server-0" / "tls.key",
        data / "server-0" / "signing.key",
        data / "server-0" / ".config" / "party_0.key",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_signing_key(data / "server-1" / "signing.key")
    assert wire.raw_public(key) == registry.servers[1][1]
    cfg = load_server_config(data / "server-2" / "server.toml")
    assert cfg.party == 2 and cfg.listen_port == 19002
    assert cfg.servers[0] == "https://127.0.0.1:19000"
    assert cfg.database.startswith("sqlite:///")
    # each server's self-signed certificate is pinned: in the registry and in servers.pem
    cert = x509.load_pem_x509_certificate((data / "server-0" / "tls.crt").read_bytes())
    assert "sealgrid server 0" in cert.subject.rfc4514_string()
    assert (data / "server-0" / "tls.crt").read_bytes() == registry.tls_certs[0]
    assert (data / "servers.pem").read_text() == registry.trust_pem()
    ctx = ssl.create_default_context(cafile=str(data / "servers.pem"))
    ctx.load_cert_chain(data / "server-0" / "tls.crt", data / "server-0" / "tls.key")
    assert json.loads((data / "households" / "h0002.json").read_text())["supplier"] == "s2"
    with pytest.raises(DataDirError):
        init_data_dir(data)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_gate_closure_is_the_start_of_t_minus_2() -> None:
    s = Schedule(period_seconds=900)
    now = _t("2026-11-22T21:07:00")
    assert iso(s.start_of(now)) == "2026-11-22T21:00:00Z"
    assert s.open_periods(now)[0] == "2026-11-22T21:45:00Z"
    assert s.check("2026-11-22T21:45:00Z", now) is None
    assert s.check("2026-11-22T21:30:00Z", now)[0] is Reason.LATE  # type: ignore[index]
    assert s.check("2026-11-22T21:45:00Z", _t("2026-11-22T21:15:00"))[0] is Reason.LATE  # type: ignore[index]
    assert s.check("2026-11-22T21:45:01Z", now)[0] is Reason.WRONG_PERIOD  # type: ignore[index]
    assert s.check("tomorrow", now)[0] is Reason.WRONG_PERIOD  # type: ignore[index]
    assert s.check("2026-11-25T21:45:00Z", now)[0] is Reason.WRONG_PERIOD  # type: ignore[index]
    # exactly at a boundary the period two ahead is already closed
    assert s.open_periods(_t("2026-11-22T21:00:00"))[0] == "2026-11-22T21:45:00Z"


def test_deeply_nested_json_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="nested"):
        wire.decode(BidSet, b"[" * 100_000)
