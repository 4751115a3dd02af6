"""Certificates for the servers' mutual TLS (MPyC ``--ssl``); assumes a private data directory.

MPyC reads fixed file names relative to each party's working directory:
``.config/party_{i}.crt``, ``.config/party_{i}.key`` (unencrypted PEM) and
``.config/mpyc_ca.crt``; a party's certificate must carry the name ``MPyC party i``. This module
makes a fresh CA and one certificate per party. Keys are written with mode 0600 and must never
be committed. Each party's directory receives only its own key and the CA certificate.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_party_certificates(party_dirs: list[Path], *, days: int = 7) -> None:
    """Create a CA and a certificate for each party ``i`` in ``party_dirs[i]/.config/``.

    The CA's private key is discarded once the party certificates are signed, so no one can
    issue another certificate for this set of servers.
    """
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("sealgrid servers CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    for i, directory in enumerate(party_dirs):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"MPyC party {i}"
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        config = Path(directory) / ".config"
        _write(config / "mpyc_ca.crt", ca_pem)
        _write(config / f"party_{i}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(config / f"party_{i}.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()), private=True)
