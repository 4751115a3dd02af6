"""Threat: a server posing as another on MPyC's own links; assumes loopback and MPyC ``--ssl``.

Each party makes its own MPyC key and self-signed certificate; ``mpyc_ca.crt`` holds every
party's pinned certificate and nothing else (sealgrid.protocol.certs, no CA). Three real party
processes clear a two-bid book: with the pinned certificates they finish; when party 2 shows
party 1's pinned certificate and key, or its own key re-signed into a new certificate with
the right name, the others refuse to connect and the clearing fails cleanly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sealgrid.protocol.certs import make_party_certificates, party_name, self_signed
from sealgrid.protocol.clearing import SecureClearingError, run_processes
from sealgrid.protocol.encoding import Layout, write_book_shares
from tests.protocol.secure_helpers import book

pytestmark = pytest.mark.slow


def _servers(tmp_path: Path) -> list[Path]:
    dirs = [tmp_path / f"party{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    two = book([True, False], [10, 10], [1, 0])  # a buyer at level 1, a seller at level 0
    write_book_shares(two, Layout(2, 2, 10_000), [d / "shares.bin" for d in dirs])
    make_party_certificates(dirs)
    return dirs


@pytest.mark.parametrize("kind", ["control", "another_partys_pin", "own_key_resigned"])
def test_only_the_pinned_certificate_of_each_party_joins(tmp_path: Path, kind: str) -> None:
    dirs = _servers(tmp_path)
    config = dirs[2] / ".config"
    assert x509.load_pem_x509_certificates((config / "mpyc_ca.crt").read_bytes())[2] == (
        x509.load_pem_x509_certificate((config / "party_2.crt").read_bytes())
    )
    if kind == "another_partys_pin":  # party 2 holds party 1's key (pinned, wrong name)
        for ext in ("crt", "key"):
            shutil.copy(dirs[1] / ".config" / f"party_1.{ext}", config / f"party_2.{ext}")
    if kind == "own_key_resigned":  # the right name, party 2's own key, but not the pin
        key = serialization.load_pem_private_key((config / "party_2.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert = self_signed(key, party_name(2), [party_name(2)], days=1)
        (config / "party_2.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if kind == "control":
        results = run_processes(dirs, timeout=20)
        assert len(results) == 3
    else:
        with pytest.raises(SecureClearingError):
            run_processes(dirs, timeout=4)
