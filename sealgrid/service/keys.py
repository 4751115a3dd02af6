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
    DIR/households/ID.key, ID.json  household key; its public part (also its profile: its
                                    supplier, region and meter's public key)
    DIR/households/ID.meter.key     the household's smart-meter signing key (Ed25519)
    DIR/suppliers/ID.key, ID.json   supplier key (reads its own aggregates); public part
    DIR/operators/ID.key, ID.json   grid operator key (reads each period's market volume)
    DIR/dsos/REGION.key, REGION.json  the DSO of one region (its id is the region)
    DIR/tso/tso.key, tso.json       the TSO (reads the totals per DSO region)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service.wire import b64d, b64e

REGISTRY = "registry.json"
TRUST = "servers.pem"  # the servers' pinned HTTPS certificates: what clients trust
DEFAULT_SUPPLIERS = ("s1", "s2", "s3")
#: The regions of ``sealgrid init`` without ``--households-csv`` (one DSO each).
DEFAULT_REGIONS = ("r1", "r2")
DEFAULT_OPERATOR = "dso"
#: The TSO's id (there is at most one).
TSO_ID = "tso"
#: A supplier bidding in the market does so as the participant ``@ID`` (no household id can
#: hold ``@``).
SUPPLIER_PREFIX = "@"


def supplier_participant(supplier: str) -> str:
    """The bidder id of supplier ``supplier`` (its pseudonyms, credential and settlement)."""
    return SUPPLIER_PREFIX + supplier
#: A party's id other than a server's: short and file-name safe.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: A household's meter key is ``ID.meter.key`` beside its ``ID.key``, so no household id may
#: end with this (its key file would be another household's meter key).
METER_SUFFIX = ".meter"
#: Each role's folder in a one-machine data directory (files named by id).
ROLE_DIRS = {
    "household": "households",
    "supplier": "suppliers",
    "operator": "operators",
    "dso": "dsos",
    "tso": "tso",
}


class DataDirError(Exception):
    """The data directory is missing, incomplete or would be overwritten."""


def id_problem(party_id: str, *, household: bool = False) -> str | None:
    """Why ``party_id`` is not a valid id of a household, supplier, region, … (``None``: it is).

    Letters, digits, ``.``, ``_``, ``-``, at most 64, not starting with a punctuation mark; a
    household's must not end with ``.meter`` (:data:`METER_SUFFIX`).
    """
    if not ID_PATTERN.fullmatch(party_id):
        return f"id {party_id!r}: use letters, digits, '.', '_', '-' (≤ 64)"
    if household and party_id.endswith(METER_SUFFIX):
        return f"household id {party_id!r} must not end with {METER_SUFFIX!r}"
    return None


@dataclass(frozen=True)
class Contract:
    """A household's contract: its supplier, its region (whose DSO it belongs to) and its
    smart meter's Ed25519 public key (raw 32 bytes), which signs the meter's readings."""

    supplier: str
    region: str
    meter_key: bytes


@dataclass(frozen=True)
class Registry:
    """Public keys of every party, by id; servers by party index with their URLs.

    ``tls_certs[i]`` and ``mpc_certs[i]`` are server ``i``'s self-signed HTTPS and MPyC
    certificates (PEM), pinned: a client or peer accepts exactly these (see
    :func:`server_trust`).

    ``households`` maps each household to its own Ed25519 key; ``contracts`` (same keys, or
    empty in a registry written before contracts existed) to its supplier, region and
    meter key. ``dsos`` maps each region to its DSO's Ed25519 key (a region may lack a DSO
    when none was registered at all, see :func:`sealgrid.service.setup.build_registry`);
    ``tso`` is the TSO's key, ``None`` without one. ``operators`` are the grid operators
    that read each period's market volume. A registry is not changed after it is made (the
    household order of :meth:`household_index` is computed once).
    """

    servers: tuple[tuple[str, bytes], ...]  # (url, Ed25519 public key) by party index
    households: dict[str, bytes]
    suppliers: dict[str, bytes]
    operators: dict[str, bytes]
    tls_certs: tuple[bytes, ...] = ()
    mpc_certs: tuple[bytes, ...] = ()
    contracts: dict[str, Contract] = field(default_factory=dict)
    dsos: dict[str, bytes] = field(default_factory=dict)
    tso: bytes | None = None

    @property
    def regions(self) -> tuple[str, ...]:
        """Every region, sorted: those of the households' contracts and those with a DSO."""
        return tuple(sorted({c.region for c in self.contracts.values()} | set(self.dsos)))

    @cached_property
    def _order(self) -> tuple[str, ...]:
        return tuple(sorted(self.households))

    @cached_property
    def _index(self) -> dict[str, int]:
        return {h: i for i, h in enumerate(self._order, start=1)}

    def household_index(self, household: str) -> int:
        """The household's index, 1 … n, in the sorted order of the households' ids (stable
        for a given registry; the MPC layer uses it as a field element).

        Raises:
            KeyError: no such household.
        """
        try:
            return self._index[household]
        except KeyError:
            raise KeyError(f"no household {household!r} in the registry") from None

    def participants(self) -> tuple[str, ...]:
        """Everyone who may bid, in settlement order: the households (index 1 … n, as
        :meth:`household_index`), then each supplier as :func:`supplier_participant`."""
        return self._order + tuple(supplier_participant(s) for s in sorted(self.suppliers))

    def participant_index(self, participant: str) -> int:
        """A bidder's 1-based place in :meth:`participants` (a household's is its
        :meth:`household_index`): what its bids carry as ``h``.

        Raises:
            KeyError: no such household or supplier.
        """
        try:
            return self._participant_index[participant]
        except KeyError:
            raise KeyError(f"no bidder {participant!r} in the registry") from None

    @cached_property
    def _participant_index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.participants(), start=1)}

    def participant_keys(self) -> dict[str, bytes]:
        """Each bidder's Ed25519 key: the households', and each supplier's under
        :func:`supplier_participant` (a supplier bids under its own key and tokens).
        Made once (the registry does not change): do not modify it."""
        return self._participant_keys

    @cached_property
    def _participant_keys(self) -> dict[str, bytes]:
        return {**self.households,
                **{supplier_participant(s): k for s, k in self.suppliers.items()}}

    def household_at(self, index: int) -> str:
        """The household whose :meth:`household_index` is ``index`` (the inverse).

        Raises:
            IndexError: not in 1 … n.
        """
        if isinstance(index, bool) or not 1 <= index <= len(self._order):
            raise IndexError(f"household index {index!r} is not in 1…{len(self._order)}")
        return self._order[index - 1]

    def contract(self, household: str) -> Contract:
        """The household's contract.

        Raises:
            KeyError: no such household, or the registry predates contracts.
        """
        try:
            return self.contracts[household]
        except KeyError:
            raise KeyError(f"no contract for household {household!r} in the registry") from None

    def customers(self, supplier: str) -> list[str]:
        """The supplier's customers, sorted."""
        return sorted(h for h, c in self.contracts.items() if c.supplier == supplier)

    def households_in(self, region: str) -> list[str]:
        """The households of one region, sorted."""
        return sorted(h for h, c in self.contracts.items() if c.region == region)

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read a registry file.

        Raises:
            DataDirError: the file is missing or malformed.
        """
        try:
            data = json.loads(Path(path).read_text())
            servers = data["servers"]
            registry = cls(
                servers=tuple((s["url"], b64d(s["key"])) for s in servers),
                households={k: b64d(v) for k, v in data["households"].items()},
                suppliers={k: b64d(v) for k, v in data["suppliers"].items()},
                operators={k: b64d(v) for k, v in data["operators"].items()},
                tls_certs=tuple(s["tls_cert"].encode() for s in servers if "tls_cert" in s),
                mpc_certs=tuple(s["mpc_cert"].encode() for s in servers if "mpc_cert" in s),
                contracts={k: _contract(v) for k, v in data.get("contracts", {}).items()},
                dsos={k: b64d(v) for k, v in data.get("dsos", {}).items()},
                tso=b64d(data["tso"]) if data.get("tso") is not None else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataDirError(f"cannot read the registry {path}: {exc}") from exc
        if registry.contracts and set(registry.contracts) != set(registry.households):
            odd = sorted(set(registry.contracts) ^ set(registry.households))
            raise DataDirError(
                f"the registry {path}: households and contracts differ ({', '.join(odd[:5])})"
            )
        return registry

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
        if self.contracts:
            data["contracts"] = {
                k: {"supplier": c.supplier, "region": c.region, "meter_key": b64e(c.meter_key)}
                for k, c in sorted(self.contracts.items())
            }
        if self.dsos:
            data["dsos"] = {k: b64e(v) for k, v in sorted(self.dsos.items())}
        if self.tso is not None:
            data["tso"] = b64e(self.tso)
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def trust_pem(self) -> str:
        """The servers' pinned HTTPS certificates, one PEM text (``servers.pem``)."""
        return b"".join(self.tls_certs).decode()


def _contract(entry: dict[str, Any]) -> Contract:
    contract = Contract(
        supplier=str(entry["supplier"]),
        region=str(entry["region"]),
        meter_key=b64d(entry["meter_key"]),
    )
    if len(contract.meter_key) != 32:
        raise ValueError("a meter key is 32 bytes (raw Ed25519)")
    return contract


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


def party_dir(data_dir: Path, role: str) -> Path:
    """The folder of a role's parties in a one-machine data directory (:data:`ROLE_DIRS`;
    a server's is ``server-N``, not listed here).

    Raises:
        KeyError: not a role with such a folder.
    """
    return Path(data_dir) / ROLE_DIRS[role]


def private_key_path(data_dir: Path, role: str, party_id: str) -> Path:
    """The Ed25519 key file of a household, supplier, operator, DSO (id: its region) or the
    TSO in a one-machine data directory: ``FOLDER/ID.key``."""
    return party_dir(data_dir, role) / f"{party_id}.key"


def meter_key_path(data_dir: Path, household: str) -> Path:
    """A household's smart-meter key file in a one-machine data directory
    (``households/ID.meter.key``, beside the household's own key)."""
    return party_dir(data_dir, "household") / f"{household}{METER_SUFFIX}.key"


def household_profile(data_dir: Path, household: str) -> dict[str, str]:
    """Read a demo household's profile: its public part, with ``id``, ``supplier``,
    ``region`` (``""`` in a profile made before regions existed) and ``meter_key`` (base64,
    ``""`` likewise).

    Raises:
        DataDirError: no such household in the data directory.
    """
    path = party_dir(data_dir, "household") / f"{household}.json"
    try:
        data: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataDirError(f"no household {household!r} in {data_dir}") from exc
    if not isinstance(data, dict):
        raise DataDirError(f"{path} is not a household's profile")
    data.setdefault("region", "")
    data.setdefault("meter_key", "")
    return data
