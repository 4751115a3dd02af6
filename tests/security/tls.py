"""Certificates for the TLS tests: foreign CAs, leaves under any key, self-signed ones.

The market has no CA: each server's self-signed certificate is pinned (docs/service.md), so
an attacker's certificates here are self-signed, issued by a foreign CA, or issued under a
server's own (pinned) key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def new_ca(directory: Path) -> tuple[Path, Path]:
    """Make a foreign CA in ``directory``; return (certificate, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the market's CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(_pem_key(key))
    return directory / "ca.crt", directory / "ca.key"


def leaf(ca_cert: Path, ca_key: Path, out: Path, *, cn: str, expired: bool = False,
         hosts: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """Issue a leaf certificate (fresh key) under the given issuer certificate and key, which
    need not be a CA's; return (certificate, key) paths."""
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    return _issue(out, key, signer, issuer.subject, cn=cn, expired=expired, hosts=hosts)


def self_signed(out: Path, *, cn: str, hosts: tuple[str, ...], expired: bool = False,
                key_file: Path | None = None) -> tuple[Path, Path]:
    """A self-signed certificate under ``key_file``'s key (else a fresh one), as a server's
    keygen makes them; return (certificate, key) paths."""
    if key_file is not None:
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        key = loaded
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return _issue(out, key, key, name, cn=cn, expired=expired, hosts=hosts)


def _issue(out: Path, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
           issuer_name: x509.Name, *, cn: str, expired: bool,
           hosts: tuple[str, ...]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    start, end = ((now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired
                  else (now - dt.timedelta(days=1), now + dt.timedelta(days=30)))
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.public_key()), critical=False)
            .sign(signer, hashes.SHA256()))
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "tls.key").write_bytes(_pem_key(key))
    return out / "tls.crt", out / "tls.key"
