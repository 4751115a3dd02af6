"""The data directory: a demo CA, TLS and signing keys, the public-key registry (assumption A4).

Assumes a single trusted operator runs ``sealgrid init`` for a demo or test: it plays the
certificate authority and hands every party its keys. In a real deployment each party makes
its own key and only the public half reaches the registry. Private keys are unencrypted PEM
files with mode 0600 inside the data directory, never in the repository.

Layout::

    DIR/ca.crt                      demo CA certificate (ECDSA P-256), trusted by every client
    DIR/private/ca.key              its key (only ``init`` uses it)
    DIR/registry.json               public keys: servers, households, suppliers, operators
    DIR/server-N/server.toml        one TOML per server (see :mod:`sealgrid.service.config`)
    DIR/server-N/tls.crt, tls.key   HTTPS certificate for sealgrid-server-N (checked by every
                                    client), 127.0.0.1 and localhost (server and client)
    DIR/server-N/signing.key        Ed25519 key signing receipts and statements
    DIR/server-N/.config/           MPyC party certificate, key and CA (sealgrid.protocol.certs)
    DIR/households/ID.key, ID.json  household signing key and its demo profile (its supplier)
    DIR/suppliers/ID.key            supplier key (reads its own aggregates)
    DIR/operators/ID.key            grid operator (DSO/TSO) key (reads region totals)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealgrid.service.wire import b64d, b64e, raw_public

REGISTRY = "registry.json"
DEFAULT_SUPPLIERS = ("s1", "s2", "s3")
DEFAULT_OPERATOR = "dso"


class DataDirError(Exception):
    """The data directory is missing, incomplete or would be overwritten."""


@dataclass(frozen=True)
class Registry:
    """Public keys of every party, by id; servers by party index with their URLs."""

    servers: tuple[tuple[str, bytes], ...]  # (url, Ed25519 public key) by party index
    households: dict[str, bytes]
    suppliers: dict[str, bytes]
    operators: dict[str, bytes]

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read a registry file.

        Raises:
            DataDirError: the file is missing or malformed.
        """
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                servers=tuple((s["url"], b64d(s["key"])) for s in data["servers"]),
                households={k: b64d(v) for k, v in data["households"].items()},
                suppliers={k: b64d(v) for k, v in data["suppliers"].items()},
                operators={k: b64d(v) for k, v in data["operators"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataDirError(f"cannot read the registry {path}: {exc}") from exc

    def to_json(self) -> str:
        """Return the registry as JSON text."""
        data = {
            "v": 1,
            "servers": [{"url": u, "key": b64e(k)} for u, k in self.servers],
            "households": {k: b64e(v) for k, v in sorted(self.households.items())},
            "suppliers": {k: b64e(v) for k, v in sorted(self.suppliers.items())},
            "operators": {k: b64e(v) for k, v in sorted(self.operators.items())},
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_private(path: Path, data: bytes) -> None:
    """Write a private file with mode 0600 (created so, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def save_signing_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write an Ed25519 private key as unencrypted PKCS#8 PEM (mode 0600)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PEM.

    Raises:
        DataDirError: missing file or not an Ed25519 key.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise DataDirError(f"cannot read the key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise DataDirError(f"{path} is not an Ed25519 key")
    return key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sealgrid demo CA"))
        .issuer_name(_name("sealgrid demo CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    cn: str,
    now: dt.datetime,
    name: str,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName(name),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def server_common_name(party: int) -> str:
    """Return the TLS common name of computation server ``party``."""
    return f"sealgrid server {party}"


def server_tls_name(party: int) -> str:
    """Return the DNS name only server ``party``'s certificate carries.

    Clients check every server's certificate against this name (not only against the
    address, which all servers on one host share), so no server can pose as another.
    """
    return f"sealgrid-server-{party}"


def init_data_dir(
    data_dir: Path,
    *,
    households: int = 10,
    servers: int = 3,
    suppliers: tuple[str, ...] = DEFAULT_SUPPLIERS,
    base_port: int = 8440,
    period_seconds: int = 900,
    extra_config: dict[str, Any] | None = None,
) -> Registry:
    """Create a complete demo data directory; return its registry.

    Households are ``h0001 …``; household ``i`` is contracted with supplier
    ``suppliers[(i - 1) % len(suppliers)]``. Server ``N`` listens on ``base_port + N``.

    Raises:
        DataDirError: ``data_dir`` already holds a registry (nothing is overwritten).
    """
    from sealgrid.service.config import write_server_config

    data_dir = Path(data_dir).resolve()
    if (data_dir / REGISTRY).exists():
        raise DataDirError(f"{data_dir} already holds a registry; choose an empty directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _ca(now)
    (data_dir / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private(data_dir / "private" / "ca.key", _pem_key(ca_key))

    server_entries = []
    urls = [f"https://127.0.0.1:{base_port + i}" for i in range(servers)]
    for i in range(servers):
        sdir = data_dir / f"server-{i}"
        tls_key, tls_cert = _leaf(ca_key, ca_cert, server_common_name(i), now, server_tls_name(i))
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / "tls.crt").write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM))
        write_private(sdir / "tls.key", _pem_key(tls_key))
        signing = Ed25519PrivateKey.generate()
        save_signing_key(sdir / "signing.key", signing)
        server_entries.append((urls[i], raw_public(signing)))
        write_server_config(
            sdir / "server.toml",
            party=i,
            data_dir=data_dir,
            urls=urls,
            period_seconds=period_seconds,
            extra=extra_config or {},
        )

    from sealgrid.protocol.certs import make_party_certificates

    # MPyC's own mutual TLS between the servers: .config/ in each server directory
    make_party_certificates([data_dir / f"server-{i}" for i in range(servers)], days=365)

    house: dict[str, bytes] = {}
    for i in range(1, households + 1):
        hid = f"h{i:04d}"
        key = Ed25519PrivateKey.generate()
        save_signing_key(data_dir / "households" / f"{hid}.key", key)
        profile = {"id": hid, "supplier": suppliers[(i - 1) % len(suppliers)]}
        (data_dir / "households" / f"{hid}.json").write_text(json.dumps(profile) + "\n")
        house[hid] = raw_public(key)
    sup: dict[str, bytes] = {}
    for sid in suppliers:
        key = Ed25519PrivateKey.generate()
        save_signing_key(data_dir / "suppliers" / f"{sid}.key", key)
        sup[sid] = raw_public(key)
    op_key = Ed25519PrivateKey.generate()
    save_signing_key(data_dir / "operators" / f"{DEFAULT_OPERATOR}.key", op_key)

    registry = Registry(
        servers=tuple(server_entries),
        households=house,
        suppliers=sup,
        operators={DEFAULT_OPERATOR: raw_public(op_key)},
    )
    (data_dir / REGISTRY).write_text(registry.to_json())
    return registry


def household_profile(data_dir: Path, household: str) -> dict[str, str]:
    """Read a demo household's profile (its id and supplier).

    Raises:
        DataDirError: no such household in the data directory.
    """
    path = Path(data_dir) / "households" / f"{household}.json"
    try:
        data: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataDirError(f"no household {household!r} in {data_dir}") from exc
    return data
