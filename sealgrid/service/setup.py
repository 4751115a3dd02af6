"""Each party makes its own keys; the registry is built from public parts only.

The product's rule: every party makes its own private key and only its public part is
registered; no operator ever holds another party's private key. Three steps:

1. :func:`keygen` (``sealgrid keygen``), run by each party on its own machine: makes that
   party's private keys in its own directory (mode 0600, written nowhere else) and a
   *public part*, a JSON file (:class:`PublicPart`): role, id, Ed25519 public key, and for a
   server its URL and its two self-signed TLS certificates (HTTPS and MPC), for a household
   its supplier, its region and its smart meter's public key (the meter's own Ed25519 key
   is made beside the household's). The public part is signed by the Ed25519 key it names
   (proof of possession), a household's also by its meter's key; the certificates are
   self-signed (each proves its own key). A DSO's id is its region; the TSO's is ``tso``.
2. :func:`build_registry` (``sealgrid registry build``), run by anyone on the public parts:
   checks them and writes ``registry.json`` and ``servers.pem`` (the servers' HTTPS
   certificates, the trust file of every client). Nothing private passes through it.
3. :func:`install_server` (``sealgrid registry install``), run by each server operator in its
   own directory: checks that the registry pins this server's own keys, writes the MPC trust
   file and ``server.toml``.

TLS trust is by pinning, not by a CA: a client or peer accepts exactly the certificate the
registry lists for server N, under the name only that certificate carries
(``sealgrid-server-N``). Why: docs/service.md, "Keys and trust".

``sealgrid init`` (:func:`init_data_dir`) is the one-machine demo: it runs
every party's keygen, each in that party's own directory, then the same two steps.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.settlement import Tariff
from sealgrid.protocol import certs
from sealgrid.service.contracts import Assignment, round_robin
from sealgrid.service.keys import (
    DEFAULT_OPERATOR,
    DEFAULT_REGIONS,
    DEFAULT_SUPPLIERS,
    METER_SUFFIX,
    REGISTRY,
    ROLE_DIRS,
    TRUST,
    TSO_ID,
    Contract,
    DataDirError,
    Registry,
    check_registry,
    id_problem,
    server_common_name,
    server_tls_name,
)
from sealgrid.service.wire import b64d, b64e, raw_public, verify_bytes

if TYPE_CHECKING:
    from sealgrid.service.config import BillingConfig

FORMAT = "sealgrid-public/1"
ROLES = ("server", "household", "supplier", "operator", "dso", "tso")
PROOF_DOMAIN = b"sealgrid/v1/public-part\n"
METER_PROOF_DOMAIN = b"sealgrid/v1/meter-key\n"
DEFAULT_DAYS = 365


class KeygenError(DataDirError):
    """A party's keys cannot be made, or a public part or registry does not check out."""


@dataclass(frozen=True)
class PublicPart:
    """What one party publishes: no private key, signed by the Ed25519 key it names.

    ``tls_cert`` (HTTPS, server and client towards the other servers) and ``mpc_cert``
    (MPyC links) are a server's self-signed certificates, PEM; ``supplier``, ``region`` and
    ``meter_key`` (its smart meter's raw Ed25519 public key) a household's. A household's
    ``meter_proof`` is the meter key's signature on the same body (the meter's proof of
    possession).
    """

    role: str
    id: str
    key: bytes
    url: str = ""
    tls_cert: bytes = b""
    mpc_cert: bytes = b""
    supplier: str = ""
    region: str = ""
    meter_key: bytes = b""
    proof: bytes = field(default=b"", repr=False)
    meter_proof: bytes = field(default=b"", repr=False)

    @property
    def party(self) -> int:
        """A server's party index (its id)."""
        return int(self.id)

    def body(self) -> dict[str, Any]:
        """The fields the proof covers, as JSON values."""
        data: dict[str, Any] = {"format": FORMAT, "role": self.role, "id": self.id}
        data["key"] = b64e(self.key)
        if self.role == "server":
            data["url"] = self.url
            data["tls_cert"] = self.tls_cert.decode()
            data["tls_sha256"] = certs.fingerprint(self.tls_cert)
            data["mpc_cert"] = self.mpc_cert.decode()
        if self.role == "household":
            data["supplier"] = self.supplier
            data["region"] = self.region
            data["meter_key"] = b64e(self.meter_key)
        return data

    def _body_text(self) -> bytes:
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":")).encode()

    def _message(self) -> bytes:
        return PROOF_DOMAIN + self._body_text()

    def _meter_message(self) -> bytes:
        return METER_PROOF_DOMAIN + self._body_text()

    def signed(self, key: Ed25519PrivateKey, meter: Ed25519PrivateKey | None = None) -> PublicPart:
        """This part with its proof of possession by ``key`` (and a household's by its
        ``meter`` key)."""
        meter_proof = meter.sign(self._meter_message()) if meter is not None else b""
        return replace(self, proof=key.sign(self._message()), meter_proof=meter_proof)

    def to_json(self) -> str:
        """The JSON file the party hands on."""
        data = {**self.body(), "proof": b64e(self.proof)}
        if self.role == "household":
            data["meter_proof"] = b64e(self.meter_proof)
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "public part") -> PublicPart:
        """Read a public part (its proof is checked by :meth:`check`).

        Raises:
            KeygenError: malformed, or a private key inside.
        """
        if "PRIVATE KEY" in text:
            raise KeygenError(f"{source} holds a private key: never hand one on")
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT!r}")
            part = cls(
                role=str(data["role"]),
                id=str(data["id"]),
                key=b64d(data["key"]),
                url=str(data.get("url", "")),
                tls_cert=str(data.get("tls_cert", "")).encode(),
                mpc_cert=str(data.get("mpc_cert", "")).encode(),
                supplier=str(data.get("supplier", "")),
                region=str(data.get("region", "")),
                meter_key=b64d(data.get("meter_key", "")),
                proof=b64d(data["proof"]),
                meter_proof=b64d(data.get("meter_proof", "")),
            )
            if part.role == "server" and data.get("tls_sha256") != certs.fingerprint(part.tls_cert):
                raise ValueError("tls_sha256 is not the certificate's fingerprint")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeygenError(f"{source} is malformed: {exc}") from None
        return part

    @classmethod
    def load(cls, path: Path) -> PublicPart:
        """Read a public part file.

        Raises:
            KeygenError: unreadable or malformed.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeygenError(f"cannot read {path}: {exc}") from None
        except UnicodeDecodeError:
            raise KeygenError(f"{path}: not a public part (not UTF-8 text)") from None
        return cls.from_json(text, str(path))

    def check(self) -> None:
        """Check the part on its own: fields of its role, the proof, the certificates.

        Raises:
            KeygenError: what is wrong.
        """
        who = f"{self.role} {self.id!r}"
        if self.role not in ROLES:
            raise KeygenError(f"unknown role {self.role!r}")
        check_id(self.role, self.id)
        if self.role == "household":
            if not self.supplier:
                raise KeygenError(f"{who}: no supplier")
            if not self.region:
                raise KeygenError(f"{who}: no region (made before regions; run keygen again)")
            for what, value in (("supplier", self.supplier), ("region", self.region)):
                problem = id_problem(value)
                if problem:
                    raise KeygenError(f"{who}: {what}: {problem}")
        # strictly, as every signature under these keys will be (wire.verify_bytes): a
        # small-order key, under which one forged proof passes for every message, is refused
        if not verify_bytes(self._message(), self.proof, self.key):
            raise KeygenError(f"{who}: the proof does not verify under its key")
        if self.role == "household":
            if not verify_bytes(self._meter_message(), self.meter_proof, self.meter_key):
                raise KeygenError(f"{who}: no meter key, or its proof does not verify under it")
            if self.meter_key == self.key:
                raise KeygenError(f"{who}: the meter's key must not be the household's own")
        if self.role != "server":
            return
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname or parts.port is None:
            raise KeygenError(f"{who}: URL {self.url!r} is not https://host:port")
        n = self.party
        try:
            certs.check_pinnable(self.tls_cert, server_common_name(n), server_tls_name(n))
            certs.check_pinnable(self.mpc_cert, certs.party_name(n), certs.party_name(n))
        except ValueError as exc:
            raise KeygenError(f"{who}: {exc}") from None


@dataclass(frozen=True)
class Keygen:
    """What :func:`keygen` wrote: private files (mode 0600) and the public part's file."""

    part: PublicPart
    public: Path
    private: tuple[Path, ...]


def check_id(role: str, party_id: str) -> None:
    """A server's id is its party index; the TSO's ``tso``; a DSO's its region; others' a
    short file-name-safe name (a household's not ending with ``.meter``).

    Raises:
        KeygenError: not such an id.
    """
    if role == "server":
        if not party_id.isdigit() or str(int(party_id)) != party_id:
            raise KeygenError(f"a server's id is its party index (0, 1, …), not {party_id!r}")
        return
    if role == "tso" and party_id != TSO_ID:
        raise KeygenError(f"the TSO's id is {TSO_ID!r}, not {party_id!r}")
    problem = id_problem(party_id, household=role == "household")
    if problem:
        raise KeygenError(problem)


def public_name(role: str, party_id: str) -> str:
    """The public part's file name in the party's directory."""
    return f"server-{party_id}.json" if role == "server" else f"{party_id}.json"


def _exclusive_private(path: Path, data: bytes) -> None:
    """Write a private file with mode 0600 that must not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeygenError(f"{path} exists: keygen never overwrites a key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _ed25519_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def keygen(
    role: str,
    party_id: str,
    out: Path,
    *,
    url: str = "",
    supplier: str = "",
    region: str = "",
    days: int = DEFAULT_DAYS,
) -> Keygen:
    """Make one party's private keys in ``out`` (its own directory) and its public part.

    A server (``party_id`` = its party index, ``url`` its HTTPS URL) gets ``signing.key``
    (Ed25519), ``tls.key`` with the self-signed ``tls.crt`` (names ``sealgrid-server-N`` and
    the URL's host), and ``.config/party_N.key`` with ``.config/party_N.crt`` (MPyC); its
    public part is ``server-N.json``. Any other party gets ``ID.key`` (Ed25519) and the public
    part ``ID.json``. A household (``supplier`` and ``region`` required) also gets its smart
    meter's signing key ``ID.meter.key`` (Ed25519), and its public part names its supplier,
    its region and the meter's public key: it is also its profile. A DSO's ``party_id`` is its
    region, the TSO's ``tso``. Private files are created with mode 0600 and never
    overwritten; nothing is written outside ``out``.

    Raises:
        KeygenError: unknown role, bad id, missing URL, supplier or region, or a key already
            there.
    """
    if role not in ROLES:
        raise KeygenError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    check_id(role, party_id)
    if role == "server" and not url:
        raise KeygenError("a server needs its URL (https://host:port)")
    if role == "household" and not supplier:
        raise KeygenError("a household needs its supplier")
    if role == "household" and not region:
        raise KeygenError("a household needs its region")
    if role != "household" and (supplier or region):
        raise KeygenError("only a household has a supplier and a region")
    for what, value in (("supplier", supplier), ("region", region)):
        problem = id_problem(value) if value else None
        if problem:
            raise KeygenError(f"{what}: {problem}")
    if days < 1:
        raise KeygenError("certificates must be valid at least one day")
    out = Path(out)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    public = out / public_name(role, party_id)
    if public.exists():
        raise KeygenError(f"{public} exists: keygen never overwrites a party's keys")
    signing = Ed25519PrivateKey.generate()
    meter: Ed25519PrivateKey | None = None
    private: tuple[Path, ...]
    if role == "household":
        meter = Ed25519PrivateKey.generate()
        private = (out / f"{party_id}.key", out / f"{party_id}{METER_SUFFIX}.key")
        for path in private:
            if path.exists():
                raise KeygenError(f"{path} exists: keygen never overwrites a key")
        _exclusive_private(private[0], _ed25519_pem(signing))
        _exclusive_private(private[1], _ed25519_pem(meter))
        part = PublicPart(
            role,
            party_id,
            raw_public(signing),
            supplier=supplier,
            region=region,
            meter_key=raw_public(meter),
        )
    elif role != "server":
        private = (out / f"{party_id}.key",)
        _exclusive_private(private[0], _ed25519_pem(signing))
        part = PublicPart(role, party_id, raw_public(signing))
    else:
        n = int(party_id)
        host = urlsplit(url).hostname or ""
        private = (out / "signing.key", out / "tls.key", out / ".config" / f"party_{n}.key")
        for path in private:
            if path.exists():
                raise KeygenError(f"{path} exists: keygen never overwrites a key")
        _exclusive_private(private[0], _ed25519_pem(signing))
        tls_key = certs.new_key()
        tls = certs.self_signed(
            tls_key, server_common_name(n), [server_tls_name(n), host], days=days
        ).public_bytes(serialization.Encoding.PEM)
        _exclusive_private(private[1], certs.key_pem(tls_key))
        (out / "tls.crt").write_bytes(tls)
        mpc = certs.make_party_key(out, n, days=days)
        part = PublicPart(role, party_id, raw_public(signing), url=url, tls_cert=tls, mpc_cert=mpc)
    part = part.signed(signing, meter)
    part.check()
    public.write_text(part.to_json())
    return Keygen(part, public, private)


def build_registry(parts: Iterable[PublicPart]) -> Registry:
    """Check public parts and assemble the registry from them (nothing private is read).

    Checks: every part on its own (:meth:`PublicPart.check`); one part per role and id;
    servers numbered 0, 1, … without gaps; no key (Ed25519, meter or TLS) used twice; every
    household's supplier registered; at most one TSO; and, when any DSO part is given, a DSO
    for every household's region (with no DSO part at all the registry has no DSOs, as
    before DSOs existed; a DSO whose region has no household yet is allowed).

    Raises:
        KeygenError: what does not check out.
    """
    by_role: dict[str, dict[str, PublicPart]] = {r: {} for r in ROLES}
    seen: set[bytes] = set()
    for part in parts:
        part.check()
        if part.id in by_role[part.role]:
            raise KeygenError(f"two public parts for {part.role} {part.id!r}")
        by_role[part.role][part.id] = part
        keys = [part.key]
        if part.role == "household":
            keys.append(part.meter_key)
        if part.role == "server":
            keys += [_spki(part.tls_cert), _spki(part.mpc_cert)]
        for k in keys:
            if k in seen:
                raise KeygenError(f"{part.role} {part.id!r} reuses a key already registered")
            seen.add(k)
    servers = sorted(by_role["server"].values(), key=lambda p: p.party)
    if [p.party for p in servers] != list(range(len(servers))) or not servers:
        raise KeygenError(f"servers must be numbered 0…n-1, got {[p.id for p in servers]}")
    dsos = by_role["dso"]
    for hid, part in sorted(by_role["household"].items()):
        if part.supplier not in by_role["supplier"]:
            raise KeygenError(f"household {hid!r}: supplier {part.supplier!r} is not registered")
        if dsos and part.region not in dsos:
            raise KeygenError(
                f"household {hid!r}: region {part.region!r} has no DSO (DSO parts were given "
                "for " + ", ".join(sorted(dsos)) + "; every household's region needs one)"
            )
    households = sorted(by_role["household"].items())
    registry = Registry(
        servers=tuple((p.url, p.key) for p in servers),
        households={i: p.key for i, p in households},
        suppliers={i: p.key for i, p in sorted(by_role["supplier"].items())},
        operators={i: p.key for i, p in sorted(by_role["operator"].items())},
        tls_certs=tuple(p.tls_cert for p in servers),
        mpc_certs=tuple(p.mpc_cert for p in servers),
        contracts={i: Contract(p.supplier, p.region, p.meter_key) for i, p in households},
        dsos={i: p.key for i, p in sorted(dsos.items())},
        tso=by_role["tso"][TSO_ID].key if by_role["tso"] else None,
    )
    check_registry(registry)
    return registry


def _spki(pem: bytes) -> bytes:
    return (
        x509.load_pem_x509_certificate(pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_parts(paths: Iterable[Path]) -> list[PublicPart]:
    """Read public part files (directories: every ``*.json`` public part in them).

    Raises:
        KeygenError: a file is unreadable, malformed or holds a private key.
    """
    found: list[PublicPart] = []
    for path in paths:
        path = Path(path)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        found += [PublicPart.load(f) for f in files]
    return found


def write_registry(registry: Registry, out: Path, trust: Path | None = None) -> Path:
    """Write ``registry.json`` to ``out`` and the servers' pinned certificates to ``trust``
    (default ``servers.pem`` next to it); return the trust file's path. Both are public."""
    out = Path(out)
    trust = Path(trust) if trust is not None else out.with_name(TRUST)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(registry.to_json())
    trust.write_text(registry.trust_pem())
    return trust


def install_server(
    server_dir: Path,
    registry_path: Path,
    *,
    trust_path: Path | None = None,
    listen: str | None = None,
    period_seconds: int = 900,
    extra: dict[str, Any] | None = None,
    billing: BillingConfig | None = None,
) -> Path:
    """Set up a server's own directory for a registry: MPC trust file and ``server.toml``.

    ``server_dir`` holds that server's keys and public part (from :func:`keygen`). The
    registry must pin exactly this server's Ed25519 key, HTTPS and MPC certificates; the
    ``registry_path`` and ``trust_path`` are referred to from ``server.toml`` as they are
    (copy them into ``server_dir`` first for a self-contained directory). ``billing`` goes
    into the TOML's ``[billing]`` table; it must hold a tariff for every registered supplier
    and no other (default: :data:`~sealgrid.service.config.DEFAULT_TARIFF` for each, a 30-day
    month of periods, 4 periods of grace). Returns the TOML's path.

    Raises:
        KeygenError: no single public part here, the registry does not pin these keys, or
            the tariffs do not match the registered suppliers.
    """
    from sealgrid.service.config import BillingConfig, ConfigError, write_server_config

    server_dir = Path(server_dir).resolve()
    found = sorted(server_dir.glob("server-*.json"))
    if len(found) != 1:
        raise KeygenError(f"{server_dir} holds {len(found)} server public parts, not one")
    part = PublicPart.load(found[0])
    registry = Registry.load(registry_path)
    n = part.party
    pinned = n < len(registry.servers) and (
        registry.servers[n] == (part.url, part.key)
        and registry.tls_certs[n] == part.tls_cert
        and registry.mpc_certs[n] == part.mpc_cert
    )
    if not pinned:
        raise KeygenError(f"the registry {registry_path} does not pin server {n}'s own keys")
    billing = billing or BillingConfig.default(period_seconds, registry.suppliers)
    try:
        billing.check_suppliers(registry.suppliers)
    except ConfigError as exc:
        raise KeygenError(str(exc)) from None
    trust_path = (
        Path(trust_path) if trust_path is not None else Path(registry_path).with_name(TRUST)
    )
    certs.write_party_trust(server_dir, registry.mpc_certs)
    toml = server_dir / "server.toml"
    write_server_config(
        toml,
        party=n,
        data_dir=server_dir.parent,
        urls=[u for u, _ in registry.servers],
        period_seconds=period_seconds,
        extra=extra or {},
        server_dir=server_dir,
        registry=Path(registry_path).resolve(),
        ca=trust_path.resolve(),
        listen=listen,
        billing=billing,
    )
    return toml


def copy_public(src: Path, dst_dir: Path) -> Path:
    """Copy a public file (registry, trust file) into ``dst_dir``; refuse a private key.

    Raises:
        KeygenError: the file holds a private key or cannot be copied.
    """
    src, dst = Path(src).resolve(), Path(dst_dir).resolve() / Path(src).name
    try:
        if b"PRIVATE KEY" in src.read_bytes():
            raise KeygenError(f"{src} holds a private key: never hand one on")
        if src != dst:
            shutil.copyfile(src, dst)
    except OSError as exc:
        raise KeygenError(f"cannot copy {src} to {dst_dir}: {exc}") from None
    return dst


def one_machine(
    data_dir: Path,
    *,
    households: Sequence[Assignment],
    suppliers: Sequence[str],
    operators: Sequence[str],
    urls: Sequence[str],
    period_seconds: int,
    extra: dict[str, Any],
    regions: Sequence[str] = (),
    tso: bool = True,
    billing: BillingConfig | None = None,
    days: int = DEFAULT_DAYS,
) -> Registry:
    """Run every party's keygen in its own directory under ``data_dir``, then the same two
    steps as the multi-party path (the demo of all of them; see :func:`init_data_dir`).

    Servers in ``server-N/``; households (with their meters' keys), suppliers, operators,
    one DSO per region of ``regions`` and the households' regions, and the TSO (unless
    ``tso`` is false) in their role's folder (:data:`~sealgrid.service.keys.ROLE_DIRS`).
    ``billing`` goes into every server's TOML (default: the default tariff for each of
    ``suppliers``)."""
    publics: list[Path] = []
    for i, url in enumerate(urls):
        publics.append(
            keygen("server", str(i), data_dir / f"server-{i}", url=url, days=days).public
        )
    folder = {role: data_dir / name for role, name in ROLE_DIRS.items()}
    for a in households:
        publics.append(
            keygen(
                "household", a.household, folder["household"], supplier=a.supplier, region=a.region
            ).public
        )
    for sid in suppliers:
        publics.append(keygen("supplier", sid, folder["supplier"]).public)
    for oid in operators:
        publics.append(keygen("operator", oid, folder["operator"]).public)
    for region in _unique([*regions, *(a.region for a in households)]):
        publics.append(keygen("dso", region, folder["dso"]).public)
    if tso:
        publics.append(keygen("tso", TSO_ID, folder["tso"]).public)
    registry = build_registry(load_parts(publics))  # from the public files alone
    write_registry(registry, data_dir / REGISTRY, data_dir / TRUST)
    for i in range(len(urls)):
        install_server(
            data_dir / f"server-{i}",
            data_dir / REGISTRY,
            period_seconds=period_seconds,
            extra=extra,
            billing=billing,
        )
    return registry


def _unique(items: Iterable[str]) -> list[str]:
    """The items in order of first appearance, each once."""
    return list(dict.fromkeys(items))


def init_data_dir(
    data_dir: Path,
    *,
    households: int = 10,
    servers: int = 3,
    suppliers: tuple[str, ...] = DEFAULT_SUPPLIERS,
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    contracts: Sequence[Assignment] | None = None,
    tariffs: Mapping[str, Tariff] | None = None,
    cycle_periods: int | None = None,
    reading_grace_periods: int | None = None,
    base_port: int = 8440,
    period_seconds: int = 900,
    extra_config: dict[str, Any] | None = None,
    urls: Sequence[str] | None = None,
) -> Registry:
    """Make a one-machine demo data directory the multi-party way; return its registry.

    Runs every party's keygen, each in that party's own directory (``server-N/``;
    ``households/`` with each household's meter key, ``suppliers/``, ``operators/``,
    ``dsos/`` one DSO per region, ``tso/``, with files named by id), then builds the registry
    from the public parts alone and installs it in each server's directory
    (:func:`sealgrid.service.setup.one_machine`).

    Households: ``contracts`` (e.g. from
    :func:`sealgrid.service.contracts.read_households_csv`; the suppliers and regions are
    then those they name), else ``h0001 …`` round-robin over ``suppliers`` and ``regions``
    (:func:`sealgrid.service.contracts.round_robin`). Server ``N`` is at
    ``https://127.0.0.1:{base_port + N}`` unless ``urls`` are given. Billing, written into
    every server's ``[billing]`` table: ``tariffs`` (one per supplier, no other; default
    :data:`~sealgrid.service.config.DEFAULT_TARIFF` for each), ``cycle_periods`` (default a
    30-day month of periods), ``reading_grace_periods`` (default 4). Everything is checked
    before any key is made.

    Raises:
        DataDirError: ``data_dir`` already holds a registry (nothing is overwritten), or the
            households, tariffs or cycle do not check out.
    """
    from sealgrid.service.config import BillingConfig, ConfigError

    data_dir = Path(data_dir).resolve()
    if (data_dir / REGISTRY).exists():
        raise DataDirError(f"{data_dir} already holds a registry; choose an empty directory")
    if contracts is None:
        try:
            house = round_robin(households, suppliers, regions)
        except ValueError as exc:
            raise DataDirError(str(exc)) from None
        suppliers = tuple(_unique(suppliers))
        regions = tuple(_unique(regions))
    else:
        house = list(contracts)
        suppliers = tuple(_unique(a.supplier for a in house))
        regions = tuple(_unique(a.region for a in house))
    _check_assignments(house)
    base = BillingConfig.default(period_seconds, suppliers)
    try:
        billing = BillingConfig(
            dict(tariffs) if tariffs is not None else base.tariffs,
            cycle_periods if cycle_periods is not None else base.cycle_periods,
            reading_grace_periods
            if reading_grace_periods is not None
            else base.reading_grace_periods,
        )
        billing.check_suppliers(suppliers)
    except (ConfigError, ValueError, TypeError) as exc:
        raise DataDirError(str(exc)) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    urls = list(urls or [f"https://127.0.0.1:{base_port + i}" for i in range(servers)])
    return one_machine(
        data_dir,
        households=house,
        suppliers=suppliers,
        operators=(DEFAULT_OPERATOR,),
        urls=urls,
        period_seconds=period_seconds,
        extra=extra_config or {},
        regions=regions,
        billing=billing,
    )


def _check_assignments(house: Sequence[Assignment]) -> None:
    seen: set[str] = set()
    for a in house:
        problem = id_problem(a.household, household=True) or next(
            (p for p in (id_problem(a.supplier), id_problem(a.region)) if p), None
        )
        if problem:
            raise DataDirError(f"household {a.household!r}: {problem}")
        if a.household in seen:
            raise DataDirError(f"household {a.household!r} is listed twice")
        seen.add(a.household)
