"""Pinned self-signed certificates for the servers' mutual TLS (MPyC ``--ssl``); no CA exists.

MPyC reads fixed file names relative to each party's working directory:
``.config/party_{i}.crt``, ``.config/party_{i}.key`` (unencrypted PEM) and
``.config/mpyc_ca.crt`` (its trust file); a party's certificate must carry the name
``MPyC party i``, which every connecting party checks (the listening party checks only that
the peer's certificate is trusted). Here each party makes its own key and a self-signed
certificate (:func:`make_party_key`, run by that party alone); ``mpyc_ca.crt`` then holds
the *pinned* certificates of all parties, as published (:func:`write_party_trust`). OpenSSL
accepts a certificate only if it is exactly one of those (a self-signed certificate is its
own trust anchor); they are end-entity certificates (``CA:FALSE``, no ``keyCertSign``), so a
party cannot issue a certificate for another name with its key. No key exists that could
certify a new party, and no one but the party ever holds its key. Keys are written with mode
0600 and must never be committed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_FILE = "mpyc_ca.crt"  # MPyC's fixed name; here it holds the pinned party certificates
_TLS_USES = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def party_name(party: int) -> str:
    """The name MPyC checks in party ``party``'s certificate."""
    return f"MPyC party {party}"


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh TLS key (ECDSA P-256)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PEM (write it only with mode 0600, only in its owner's place)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def self_signed(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Iterable[str],
    *,
    days: int,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """A self-signed end-entity certificate for ``names`` (DNS names or IP addresses).

    ``CA:FALSE`` and key usage ``digitalSignature`` only: pinned as a trust anchor it vouches
    for itself and for nothing it might sign. Good for TLS server and client authentication.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage(_TLS_USES), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def check_pinnable(pem: bytes, common_name: str, name: str) -> x509.Certificate:
    """Check that ``pem`` is one self-signed end-entity certificate fit to be pinned.

    It must be signed by its own key, name ``common_name`` as subject and ``name`` among its
    DNS names, be valid now, and be unable to vouch for anything else (``CA:FALSE``, no
    ``keyCertSign``).

    Raises:
        ValueError: what is wrong with it.
    """
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate: {exc}") from None
    if len(certs) != 1:
        raise ValueError(f"{len(certs)} certificates where one was expected")
    (cert,) = certs
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError("the certificate is not self-signed") from None
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError("the certificate is not valid now")
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [common_name]:
        raise ValueError(f"subject {cns} is not {common_name!r}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ValueError(f"the certificate lacks an extension: {exc}") from None
    if constraints.ca or usage.key_cert_sign:
        raise ValueError("the certificate could sign other certificates")
    if name not in alt.get_values_for_type(x509.DNSName):
        raise ValueError(f"the certificate does not name {name!r}")
    return cert


def fingerprint(pem: bytes) -> str:
    """SHA-256 of a certificate's DER encoding, hex (what operators compare by eye)."""
    cert = x509.load_pem_x509_certificate(pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def make_party_key(directory: Path, party: int, *, days: int = 7) -> bytes:
    """Make party ``party``'s own MPC key and self-signed certificate in ``directory/.config/``.

    Run by that party alone: the key (mode 0600) never leaves its directory. Returns the
    certificate (PEM), the public part to publish and pin.
    """
    key = new_key()
    name = party_name(party)
    cert = self_signed(key, name, [name], days=days)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    config = Path(directory) / ".config"
    config.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(config / f"party_{party}.key", key_pem(key), private=True)
    _write(config / f"party_{party}.crt", pem)
    return pem


def write_party_trust(directory: Path, certificates: Sequence[bytes]) -> None:
    """Write ``directory/.config/mpyc_ca.crt``: every party's pinned certificate, by index.

    Raises:
        ValueError: a certificate is not party ``i``'s pinnable self-signed certificate.
    """
    for i, pem in enumerate(certificates):
        check_pinnable(pem, party_name(i), party_name(i))
    _write(Path(directory) / ".config" / TRUST_FILE, b"".join(certificates))


def make_party_certificates(party_dirs: list[Path], *, days: int = 7) -> None:
    """One-machine shortcut: every party ``i`` makes its key in ``party_dirs[i]/.config/``.

    Each directory then receives every party's pinned certificate (public) and only its own
    key; no CA key is made, so no one can issue a certificate for this set of servers.
    """
    certificates = [make_party_key(d, i, days=days) for i, d in enumerate(party_dirs)]
    for directory in party_dirs:
        write_party_trust(directory, certificates)
