"""Each party makes its own keys; the registry is built from public parts only.

The product's rule: every party makes its own private key and only its public part is
registered; no operator ever holds another party's private key. Three steps:

1. :func:`keygen` (``sealgrid keygen``), run by each party on its own machine: makes that
   party's private keys in its own directory (mode 0600, written nowhere else) and a
   *public part*, a JSON file (:class:`PublicPart`): role, id, Ed25519 public key, and for a
   server its URL and its two self-signed TLS certificates (HTTPS and MPC), for a household
   its supplier. The public part is signed by the Ed25519 key it names (proof of
   possession); the certificates are self-signed (each proves its own key).
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
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sealgrid.protocol import certs
from sealgrid.service.keys import (
    DEFAULT_OPERATOR,
    DEFAULT_SUPPLIERS,
    REGISTRY,
    TRUST,
    DataDirError,
    Registry,
    check_registry,
    server_common_name,
    server_tls_name,
)
from sealgrid.service.wire import b64d, b64e, raw_public

FORMAT = "sealgrid-public/1"
ROLES = ("server", "household", "supplier", "operator")
PROOF_DOMAIN = b"sealgrid/v1/public-part\n"
DEFAULT_DAYS = 365
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class KeygenError(DataDirError):
    """A party's keys cannot be made, or a public part or registry does not check out."""


@dataclass(frozen=True)
class PublicPart:
    """What one party publishes: no private key, signed by the Ed25519 key it names.

    ``tls_cert`` (HTTPS, server and client towards the other servers) and ``mpc_cert``
    (MPyC links) are a server's self-signed certificates, PEM; ``supplier`` a household's.
    """

    role: str
    id: str
    key: bytes
    url: str = ""
    tls_cert: bytes = b""
    mpc_cert: bytes = b""
    supplier: str = ""
    proof: bytes = field(default=b"", repr=False)

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
        return data

    def _message(self) -> bytes:
        body = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return PROOF_DOMAIN + body.encode()

    def signed(self, key: Ed25519PrivateKey) -> PublicPart:
        """This part with its proof of possession by ``key``."""
        return replace(self, proof=key.sign(self._message()))

    def to_json(self) -> str:
        """The JSON file the party hands on."""
        return json.dumps({**self.body(), "proof": b64e(self.proof)}, indent=1) + "\n"

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
                proof=b64d(data["proof"]),
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
            text = Path(path).read_text()
        except OSError as exc:
            raise KeygenError(f"cannot read {path}: {exc}") from None
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
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(self.proof, self._message())
        except (ValueError, InvalidSignature):
            raise KeygenError(f"{who}: the proof does not verify under its key") from None
        if self.role == "household" and not self.supplier:
            raise KeygenError(f"{who}: no supplier")
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
    """A server's id is its party index; others' a short file-name-safe name.

    Raises:
        KeygenError: not such an id.
    """
    if role == "server":
        if not party_id.isdigit() or str(int(party_id)) != party_id:
            raise KeygenError(f"a server's id is its party index (0, 1, …), not {party_id!r}")
    elif not _ID.fullmatch(party_id):
        raise KeygenError(f"id {party_id!r}: use letters, digits, '.', '_', '-' (≤ 64)")


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
    days: int = DEFAULT_DAYS,
) -> Keygen:
    """Make one party's private keys in ``out`` (its own directory) and its public part.

    A server (``party_id`` = its party index, ``url`` its HTTPS URL) gets ``signing.key``
    (Ed25519), ``tls.key`` with the self-signed ``tls.crt`` (names ``sealgrid-server-N`` and
    the URL's host), and ``.config/party_N.key`` with ``.config/party_N.crt`` (MPyC); its
    public part is ``server-N.json``. Any other party gets ``ID.key`` (Ed25519) and the public
    part ``ID.json`` (a household's names its ``supplier``: it is also its profile). Private
    files are created with mode 0600 and never overwritten; nothing is written outside
    ``out``.

    Raises:
        KeygenError: unknown role, bad id, missing URL or supplier, or a key already there.
    """
    if role not in ROLES:
        raise KeygenError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    check_id(role, party_id)
    if role == "server" and not url:
        raise KeygenError("a server needs its URL (https://host:port)")
    if role == "household" and not supplier:
        raise KeygenError("a household needs its supplier")
    if days < 1:
        raise KeygenError("certificates must be valid at least one day")
    out = Path(out)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    public = out / public_name(role, party_id)
    if public.exists():
        raise KeygenError(f"{public} exists: keygen never overwrites a party's keys")
    signing = Ed25519PrivateKey.generate()
    private: tuple[Path, ...]
    if role != "server":
        private = (out / f"{party_id}.key",)
        _exclusive_private(private[0], _ed25519_pem(signing))
        part = PublicPart(role, party_id, raw_public(signing), supplier=supplier)
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
    part = part.signed(signing)
    part.check()
    public.write_text(part.to_json())
    return Keygen(part, public, private)


def build_registry(parts: Iterable[PublicPart]) -> Registry:
    """Check public parts and assemble the registry from them (nothing private is read).

    Checks: every part on its own (:meth:`PublicPart.check`); one part per role and id;
    servers numbered 0, 1, … without gaps; no key (Ed25519 or TLS) used twice; every
    household's supplier registered.

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
        if part.role == "server":
            keys += [_spki(part.tls_cert), _spki(part.mpc_cert)]
        for k in keys:
            if k in seen:
                raise KeygenError(f"{part.role} {part.id!r} reuses a key already registered")
            seen.add(k)
    servers = sorted(by_role["server"].values(), key=lambda p: p.party)
    if [p.party for p in servers] != list(range(len(servers))) or not servers:
        raise KeygenError(f"servers must be numbered 0…n-1, got {[p.id for p in servers]}")
    for hid, part in by_role["household"].items():
        if part.supplier not in by_role["supplier"]:
            raise KeygenError(f"household {hid!r}: supplier {part.supplier!r} is not registered")
    registry = Registry(
        servers=tuple((p.url, p.key) for p in servers),
        households={i: p.key for i, p in sorted(by_role["household"].items())},
        suppliers={i: p.key for i, p in sorted(by_role["supplier"].items())},
        operators={i: p.key for i, p in sorted(by_role["operator"].items())},
        tls_certs=tuple(p.tls_cert for p in servers),
        mpc_certs=tuple(p.mpc_cert for p in servers),
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
) -> Path:
    """Set up a server's own directory for a registry: MPC trust file and ``server.toml``.

    ``server_dir`` holds that server's keys and public part (from :func:`keygen`). The
    registry must pin exactly this server's Ed25519 key, HTTPS and MPC certificates; the
    ``registry_path`` and ``trust_path`` are referred to from ``server.toml`` as they are
    (copy them into ``server_dir`` first for a self-contained directory). Returns the TOML's
    path.

    Raises:
        KeygenError: no single public part here, or the registry does not pin these keys.
    """
    from sealgrid.service.config import write_server_config

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
    households: Sequence[tuple[str, str]],
    suppliers: Sequence[str],
    operators: Sequence[str],
    urls: Sequence[str],
    period_seconds: int,
    extra: dict[str, Any],
    days: int = DEFAULT_DAYS,
) -> Registry:
    """Run every party's keygen in its own directory under ``data_dir``, then the same two
    steps as the multi-party path (the demo of all of them; see :func:`init_data_dir`)."""
    publics: list[Path] = []
    for i, url in enumerate(urls):
        publics.append(
            keygen("server", str(i), data_dir / f"server-{i}", url=url, days=days).public
        )
    for hid, supplier in households:
        publics.append(keygen("household", hid, data_dir / "households", supplier=supplier).public)
    for sid in suppliers:
        publics.append(keygen("supplier", sid, data_dir / "suppliers").public)
    for oid in operators:
        publics.append(keygen("operator", oid, data_dir / "operators").public)
    registry = build_registry(load_parts(publics))  # from the public files alone
    write_registry(registry, data_dir / REGISTRY, data_dir / TRUST)
    for i in range(len(urls)):
        install_server(
            data_dir / f"server-{i}",
            data_dir / REGISTRY,
            period_seconds=period_seconds,
            extra=extra,
        )
    return registry


def init_data_dir(
    data_dir: Path,
    *,
    households: int = 10,
    servers: int = 3,
    suppliers: tuple[str, ...] = DEFAULT_SUPPLIERS,
    base_port: int = 8440,
    period_seconds: int = 900,
    extra_config: dict[str, Any] | None = None,
    urls: Sequence[str] | None = None,
) -> Registry:
    """Make a one-machine demo data directory the multi-party way; return its registry.

    Runs every party's keygen, each in that party's own directory (``server-N/``;
    ``households/``, ``suppliers/``, ``operators/`` with files named by id), then builds the
    registry from the public parts alone and installs it in each server's directory
    (:func:`sealgrid.service.setup.one_machine`). Households are ``h0001 …``; household
    ``i`` is contracted with supplier ``suppliers[(i - 1) % len(suppliers)]``. Server ``N``
    is at ``https://127.0.0.1:{base_port + N}`` unless ``urls`` are given.

    Raises:
        DataDirError: ``data_dir`` already holds a registry (nothing is overwritten).
    """
    data_dir = Path(data_dir).resolve()
    if (data_dir / REGISTRY).exists():
        raise DataDirError(f"{data_dir} already holds a registry; choose an empty directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    urls = list(urls or [f"https://127.0.0.1:{base_port + i}" for i in range(servers)])
    house = [(f"h{i:04d}", suppliers[(i - 1) % len(suppliers)]) for i in range(1, households + 1)]
    return one_machine(
        data_dir,
        households=house,
        suppliers=suppliers,
        operators=(DEFAULT_OPERATOR,),
        urls=urls,
        period_seconds=period_seconds,
        extra=extra_config or {},
    )
