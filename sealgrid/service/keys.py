"""The data directory: keys, the public-key registry with the servers' pinned certificates.

Every party makes its own keys (:mod:`sealgrid.service.setup`, ``sealgrid keygen``); the
registry (assumption A4: it is the one thing every party trusts) is assembled from public
parts only and pins each server's Ed25519 key, URL, and self-signed HTTPS and MPC
certificates. There is no certificate authority and no CA key. ``sealgrid init``
(:func:`sealgrid.service.setup.init_data_dir`) is the one-machine demo: it runs every
party's keygen, each in that party's own directory, and builds the registry from their
public parts. Private keys are unencrypted PEM files with mode 0600, never in the
repository.

Layout made by ``sealgrid init``::

    DIR/registry.json               public: every party's public key; the servers' URLs and
                                    pinned certificates
    DIR/servers.pem                 public: the servers' HTTPS certificates, as pinned (the
                                    trust file every client loads)
    DIR/server-N/                   server N's own directory (``keygen --role server``):
        signing.key                 Ed25519 key signing receipts and statements
        tls.key, tls.crt            HTTPS key and self-signed certificate (sealgrid-server-N)
        .config/party_N.key, .crt   MPyC key and self-signed certificate (MPyC party N)
        .config/mpyc_ca.crt         public: every server's pinned MPyC certificate
        server-N.json               public part, as handed to the registry
        server.toml                 configuration (see :mod:`sealgrid.service.config`)
    DIR/households/ID.key, ID.json  household key; its public part (also its profile)
    DIR/suppliers/ID.key, ID.json   supplier key (reads its own aggregates); public part
    DIR/operators/ID.key, ID.json   grid operator (DSO/TSO) key (reads region totals)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service.wire import b64d, b64e

REGISTRY = "registry.json"
TRUST = "servers.pem"  # the servers' pinned HTTPS certificates: what clients trust
DEFAULT_SUPPLIERS = ("s1", "s2", "s3")
DEFAULT_OPERATOR = "dso"


class DataDirError(Exception):
    """The data directory is missing, incomplete or would be overwritten."""


@dataclass(frozen=True)
class Registry:
    """Public keys of every party, by id; servers by party index with their URLs.

    ``tls_certs[i]`` and ``mpc_certs[i]`` are server ``i``'s self-signed HTTPS and MPyC
    certificates (PEM), pinned: a client or peer accepts exactly these (see
    :func:`server_trust`).
    """

    servers: tuple[tuple[str, bytes], ...]  # (url, Ed25519 public key) by party index
    households: dict[str, bytes]
    suppliers: dict[str, bytes]
    operators: dict[str, bytes]
    tls_certs: tuple[bytes, ...] = ()
    mpc_certs: tuple[bytes, ...] = ()

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read a registry file.

        Raises:
            DataDirError: the file is missing or malformed.
        """
        try:
            data = json.loads(Path(path).read_text())
            servers = data["servers"]
            return cls(
                servers=tuple((s["url"], b64d(s["key"])) for s in servers),
                households={k: b64d(v) for k, v in data["households"].items()},
                suppliers={k: b64d(v) for k, v in data["suppliers"].items()},
                operators={k: b64d(v) for k, v in data["operators"].items()},
                tls_certs=tuple(s["tls_cert"].encode() for s in servers if "tls_cert" in s),
                mpc_certs=tuple(s["mpc_cert"].encode() for s in servers if "mpc_cert" in s),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataDirError(f"cannot read the registry {path}: {exc}") from exc

    def to_json(self) -> str:
        """Return the registry as JSON text."""
        servers: list[dict[str, str]] = []
        for i, (url, key) in enumerate(self.servers):
            entry = {"url": url, "key": b64e(key)}
            if i < len(self.tls_certs):
                entry["tls_cert"] = self.tls_certs[i].decode()
                entry["tls_sha256"] = _fingerprint(self.tls_certs[i])
            if i < len(self.mpc_certs):
                entry["mpc_cert"] = self.mpc_certs[i].decode()
            servers.append(entry)
        data = {
            "v": 1,
            "servers": servers,
            "households": {k: b64e(v) for k, v in sorted(self.households.items())},
            "suppliers": {k: b64e(v) for k, v in sorted(self.suppliers.items())},
            "operators": {k: b64e(v) for k, v in sorted(self.operators.items())},
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def trust_pem(self) -> str:
        """The servers' pinned HTTPS certificates, one PEM text (``servers.pem``)."""
        return b"".join(self.tls_certs).decode()


def _fingerprint(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def check_registry(registry: Registry) -> None:
    """Check that the registry pins, for every server, a fit HTTPS and MPyC certificate.

    Each must be self-signed, valid now, carry only that server's name (``sealgrid-server-N``,
    ``MPyC party N``) and be unable to sign other certificates; no two servers may share a
    key.

    Raises:
        DataDirError: what is wrong.
    """
    from sealgrid.protocol.certs import check_pinnable, party_name

    n = len(registry.servers)
    if not n or len(registry.tls_certs) != n or len(registry.mpc_certs) != n:
        raise DataDirError(
            f"the registry pins {len(registry.tls_certs)} HTTPS and {len(registry.mpc_certs)} "
            f"MPC certificates for {n} servers (make it with 'sealgrid registry build')"
        )
    keys: set[bytes] = set()
    for i in range(n):
        try:
            for pem, common, name in (
                (registry.tls_certs[i], server_common_name(i), server_tls_name(i)),
                (registry.mpc_certs[i], party_name(i), party_name(i)),
            ):
                cert = check_pinnable(pem, common, name)
                spki = cert.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                if spki in keys:
                    raise ValueError("its key is another certificate's")
                keys.add(spki)
        except ValueError as exc:
            raise DataDirError(f"server {i}'s pinned certificate: {exc}") from None


def server_trust(registry: Registry) -> str:
    """The trust anchors of every HTTPS connection to or between servers: exactly the
    registry's pinned server certificates (checked by :func:`check_registry`).

    Raises:
        DataDirError: the registry pins no fit certificates.
    """
    check_registry(registry)
    return registry.trust_pem()


def check_trust_file(registry: Registry, path: Path) -> None:
    """Check that a trust file (``servers.pem``) holds exactly the registry's pinned
    HTTPS certificates, in order.

    Raises:
        DataDirError: unreadable, or other certificates.
    """
    try:
        found = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise DataDirError(f"cannot read the trust file {path}: {exc}") from exc
    pinned = [x509.load_pem_x509_certificate(pem) for pem in registry.tls_certs]
    if found != pinned:
        raise DataDirError(f"{path} is not the registry's pinned server certificates")


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


def server_common_name(party: int) -> str:
    """Return the TLS common name of computation server ``party``."""
    return f"sealgrid server {party}"


def server_tls_name(party: int) -> str:
    """Return the DNS name only server ``party``'s certificate carries.

    Clients check every server's certificate against this name (not only against the
    address, which all servers on one host share), so no server can pose as another.
    """
    return f"sealgrid-server-{party}"


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
