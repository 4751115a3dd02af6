"""Each party makes its own keys; the registry is built from public parts only (docs/service.md,
"Keys and trust"). The multi-party path runs here in separate directories, one per party, and
no private key may appear in any file outside its owner's directory."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.cli import main
from sealgrid.service.api import serve
from sealgrid.service.client import HouseholdClient
from sealgrid.service.config import load_server_config
from sealgrid.service.keys import (
    TRUST,
    DataDirError,
    Registry,
    check_registry,
    load_signing_key,
)
from sealgrid.service.local import free_port_range
from sealgrid.service.server import Server
from sealgrid.service.setup import (
    KeygenError,
    PublicPart,
    build_registry,
    install_server,
    keygen,
    load_parts,
    write_registry,
)
from sealgrid.service.wire import raw_public


def _ports(n: int) -> list[int]:
    base = free_port_range(n)  # below the ephemeral range: no outgoing connection takes it
    return [base + i for i in range(n)]


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _secrets(private_file: Path) -> list[bytes]:
    """Every spelling of the secret in one private key file that could leak into another."""
    data = private_file.read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if isinstance(key, Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        raw = key.private_numbers().private_value.to_bytes(32, "big")
    body = b"".join(line for line in data.splitlines() if not line.startswith(b"-----"))
    return [
        raw,
        raw.hex().encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        body[8:40],  # a stretch of the PEM body itself
    ]


# -------------------------------------------------------------------- one party's keygen


@pytest.mark.parametrize(
    "role, pid, extra, private_names",
    [
        ("server", "1", {"url": "https://127.0.0.1:9441"},
         {"signing.key", "tls.key", ".config/party_1.key"}),
        ("household", "alice", {"supplier": "green", "region": "north"},
         {"alice.key", "alice.meter.key"}),
        ("supplier", "green", {}, {"green.key"}),
        ("operator", "dso", {}, {"dso.key"}),
        ("dso", "north", {}, {"north.key"}),
        ("tso", "tso", {}, {"tso.key"}),
    ],
)  # fmt: skip
def test_keygen_writes_0600_private_files_only_in_its_own_directory(
    tmp_path: Path, role: str, pid: str, extra: dict[str, str], private_names: set[str]
) -> None:
    (tmp_path / "neighbour.txt").write_text("untouched")
    before = _files(tmp_path)
    out = tmp_path / "party"
    made = keygen(role, pid, out, **extra)  # type: ignore[arg-type]
    after = _files(tmp_path)
    assert {p: d for p, d in after.items() if not p.is_relative_to(out)} == before
    assert {str(p.relative_to(out)) for p in made.private} == private_names
    for path, data in after.items():
        if path.is_relative_to(out) and b"PRIVATE KEY" in data:
            assert path in made.private, path
    for path in made.private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    public = made.public.read_text()
    assert "PRIVATE" not in public
    part = PublicPart.from_json(public)
    part.check()
    assert part == made.part and (part.role, part.id) == (role, pid)
    signing = made.private[0]
    assert raw_public(load_signing_key(signing)) == part.key
    for secret in (s for p in made.private for s in _secrets(p)):
        assert secret not in public.encode()
    with pytest.raises(KeygenError, match="never overwrites"):
        keygen(role, pid, out, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "role, pid, extra, fragment",
    [
        ("server", "one", {"url": "https://h:1"}, "party index"),
        ("server", "01", {"url": "https://h:1"}, "party index"),
        ("server", "0", {}, "needs its URL"),
        ("household", "h1", {}, "needs its supplier"),
        ("household", "h1", {"supplier": "s"}, "needs its region"),
        ("household", "../evil", {"supplier": "s", "region": "r"}, "letters, digits"),
        ("household", "x.meter", {"supplier": "s", "region": "r"}, "must not end with"),
        ("household", "h1", {"supplier": "s", "region": "r/1"}, "letters, digits"),
        ("supplier", "s1", {"region": "r1"}, "only a household"),
        ("tso", "national", {}, "TSO's id is 'tso'"),
        ("dso", "../r1", {}, "letters, digits"),
        ("auditor", "a", {}, "unknown role"),
    ],
)
def test_keygen_refuses_what_it_cannot_make(
    tmp_path: Path, role: str, pid: str, extra: dict[str, str], fragment: str
) -> None:
    with pytest.raises(KeygenError, match=fragment):
        keygen(role, pid, tmp_path / "p", **extra)  # type: ignore[arg-type]
    assert not any((tmp_path / "p").rglob("*.key"))


# ------------------------------------------------------------- the multi-party path


PARTIES = {  # name -> (role, id, extra)
    "op0": ("server", "0", {}),
    "op1": ("server", "1", {}),
    "op2": ("server", "2", {}),
    "alice": ("household", "alice", {"supplier": "green", "region": "north"}),
    "bob": ("household", "bob", {"supplier": "grey", "region": "south"}),
    "green": ("supplier", "green", {}),
    "grey": ("supplier", "grey", {}),
    "dso": ("operator", "dso", {}),
    "north": ("dso", "north", {}),
    "south": ("dso", "south", {}),
    "tso": ("tso", "tso", {}),
}


def _multi_party(tmp_path: Path) -> tuple[dict[str, Path], dict[str, list[Path]], Path]:
    """Every party makes its keys in its own directory and hands on its public part; a
    registrar builds the registry; each server operator installs it; each household takes a
    copy. Returns party directories, their private files, and the registrar's directory."""
    ports = _ports(3)
    dirs = {name: tmp_path / name for name in PARTIES}
    private: dict[str, list[Path]] = {}
    registrar = tmp_path / "registrar"
    (registrar / "inbox").mkdir(parents=True)
    for name, (role, pid, extra) in PARTIES.items():
        if role == "server":
            extra = {"url": f"https://127.0.0.1:{ports[int(pid)]}"}
        made = keygen(role, pid, dirs[name], **extra)  # type: ignore[arg-type]
        private[name] = list(made.private)
        shutil.copy(made.public, registrar / "inbox")  # the only thing that leaves
    registry = build_registry(load_parts([registrar / "inbox"]))
    write_registry(registry, registrar / "registry.json")
    for name, (role, _, _) in PARTIES.items():
        for public in ("registry.json", TRUST):
            shutil.copy(registrar / public, dirs[name])
        if role == "server":
            install_server(dirs[name], dirs[name] / "registry.json", period_seconds=60)
    return dirs, private, registrar


def test_the_multi_party_path_writes_no_private_key_outside_its_owners_directory(
    tmp_path: Path,
) -> None:
    dirs, private, registrar = _multi_party(tmp_path)
    everything = _files(tmp_path)
    secrets = {name: [s for p in paths for s in _secrets(p)] for name, paths in private.items()}
    assert sum(len(p) for p in private.values()) == 3 * 3 + 2 * 2 + 3 + 3
    for path, data in everything.items():
        owner = next((n for n, d in dirs.items() if path.is_relative_to(d)), None)
        if b"PRIVATE KEY" in data:  # only a party's own private files, mode 0600
            assert owner is not None and path in private[owner], path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for name, found in secrets.items():
            if name != owner:
                leaked = [s for s in found if s in data]
                assert not leaked, f"{name}'s private key in {path}"
    assert not any(b"PRIVATE KEY" in d for p, d in everything.items()
                   if p.is_relative_to(registrar))  # fmt: skip


def test_a_registry_built_from_public_parts_verifies(tmp_path: Path) -> None:
    dirs, _, registrar = _multi_party(tmp_path)
    registry = Registry.load(registrar / "registry.json")
    check_registry(registry)
    assert sorted(registry.households) == ["alice", "bob"]
    assert sorted(registry.suppliers) == ["green", "grey"] and list(registry.operators) == ["dso"]
    assert registry.regions == ("north", "south") and sorted(registry.dsos) == ["north", "south"]
    assert registry.dsos["north"] == raw_public(load_signing_key(dirs["north"] / "north.key"))
    assert registry.tso == raw_public(load_signing_key(dirs["tso"] / "tso.key"))
    alice = registry.contract("alice")
    assert (alice.supplier, alice.region) == ("green", "north")
    assert alice.meter_key == raw_public(load_signing_key(dirs["alice"] / "alice.meter.key"))
    for i in range(3):
        server = dirs[f"op{i}"]
        assert registry.tls_certs[i] == (server / "tls.crt").read_bytes()
        assert registry.mpc_certs[i] == (server / ".config" / f"party_{i}.crt").read_bytes()
        assert registry.servers[i][1] == raw_public(load_signing_key(server / "signing.key"))
        pinned = (server / ".config" / "mpyc_ca.crt").read_bytes()
        assert pinned == b"".join(registry.mpc_certs)
        cfg = load_server_config(server / "server.toml")
        assert (cfg.party, cfg.registry, cfg.ca) == (i, server / "registry.json", server / TRUST)
    assert (registrar / TRUST).read_text() == registry.trust_pem()
    assert main(["registry", "verify", str(registrar / "registry.json")]) == 0


def test_servers_and_households_set_up_apart_talk_over_pinned_tls(tmp_path: Path) -> None:
    """Three servers from their own directories; a household with only its key and copies of
    the registry and servers.pem proves its key to each (challenge and response)."""
    dirs, _, _ = _multi_party(tmp_path)

    async def main_() -> list[dict[str, object]]:
        servers, runners = [], []
        try:
            for i in range(3):
                server = Server(load_server_config(dirs[f"op{i}"] / "server.toml"))
                servers.append(server)
                runners.append(await serve(server))
            alice = dirs["alice"]
            registry = Registry.load(alice / "registry.json")
            key = load_signing_key(alice / "alice.key")
            async with HouseholdClient(registry, alice / TRUST, "alice", key) as client:
                return await client.register()
        finally:
            for runner in runners:
                await runner.cleanup()
            for server in servers:
                await server.stop()

    answers = asyncio.run(main_())
    assert [(a["server"], a["registered"]) for a in answers] == [(i, True) for i in range(3)]


IDENTITY = b"\x01" + bytes(31)  # the identity point's encoding: a key of order 1
ANY_PROOF = IDENTITY + bytes(32)  # R the identity, S = 0: [S]B = R + [k]A for every message


def test_a_tampered_or_incomplete_set_of_public_parts_is_refused(tmp_path: Path) -> None:
    dirs, _, registrar = _multi_party(tmp_path)
    parts = {(p.role, p.id): p for p in load_parts([registrar / "inbox"])}
    base = list(parts.values())

    def without(*keys: tuple[str, str]) -> list[PublicPart]:
        return [p for k, p in parts.items() if k not in keys]

    alice, bob = parts[("household", "alice")], parts[("household", "bob")]
    s0, s1 = parts[("server", "0")], parts[("server", "1")]
    import dataclasses as dc

    cases = [
        ([*without(("household", "alice")), dc.replace(alice, supplier="grey")], "proof"),
        ([*without(("server", "0")), dc.replace(s0, url="https://evil:1")], "proof"),
        ([*base, alice], "two public parts"),
        (without(("server", "1")), "numbered 0"),
        (without(("supplier", "green")), "'green' is not registered"),
        (without(("dso", "south")), "region 'south' has no DSO"),
        ([*without(("household", "alice")), dc.replace(alice, region="south")], "proof"),
        ([*without(("household", "alice")), dc.replace(alice, meter_key=bob.meter_key)],
         "proof"),
        ([*without(("household", "alice")), dc.replace(alice, meter_proof=bob.meter_proof)],
         "meter key, or its proof"),
        ([*without(("server", "1")), dc.replace(s1, tls_cert=s0.tls_cert)], "proof"),
        # a small-order key (the identity point) with the one proof that passes for every
        # message under it, which OpenSSL's Ed25519 check accepts: refused, as a key or a meter's
        ([*without(("household", "alice")), dc.replace(alice, key=IDENTITY, proof=ANY_PROOF)],
         "proof"),
        ([*without(("household", "alice")), dc.replace(
            dc.replace(alice, meter_key=IDENTITY).signed(
                load_signing_key(dirs["alice"] / "alice.key")), meter_proof=ANY_PROOF)],
         "meter key, or its proof"),
        ([*without(("household", "bob")),
          dc.replace(alice, id="bob").signed(load_signing_key(dirs["alice"] / "alice.key"),
                                             load_signing_key(dirs["alice"] / "alice.meter.key"))],
         "reuses a key"),
    ]  # fmt: skip
    for found, fragment in cases:
        with pytest.raises(KeygenError, match=fragment):
            build_registry(found)
    # a server's own certificate under another party's name, with a valid proof
    key = load_signing_key(dirs["op1"] / "signing.key")
    swapped = dc.replace(s1, tls_cert=s0.tls_cert).signed(key)
    with pytest.raises(KeygenError, match=r"does not name|is not 'sealgrid server 1'"):
        build_registry([*without(("server", "1")), swapped])
    # a file with a private key in it is never read as a public part
    leaky = registrar / "leaky.json"
    leaky.write_text(s0.to_json()[:-2] + ', "x": "' + (dirs["op0"] / "tls.key").read_text() + '"}')
    with pytest.raises(KeygenError, match="holds a private key"):
        load_parts([leaky])


def test_a_server_installs_only_a_registry_that_pins_its_own_keys(tmp_path: Path) -> None:
    dirs, _, registrar = _multi_party(tmp_path)
    impostor = keygen("server", "1", tmp_path / "impostor", url="https://127.0.0.1:1")
    parts = [p for p in load_parts([registrar / "inbox"]) if (p.role, p.id) != ("server", "1")]
    forged = build_registry([*parts, impostor.part])
    write_registry(forged, tmp_path / "forged" / "registry.json")
    with pytest.raises(KeygenError, match="does not pin server 1's own keys"):
        install_server(dirs["op1"], tmp_path / "forged" / "registry.json")
    install_server(dirs["op0"], tmp_path / "forged" / "registry.json")  # 0 is pinned there


def test_a_server_refuses_a_trust_file_other_than_the_registrys_pins(tmp_path: Path) -> None:
    dirs, _, _ = _multi_party(tmp_path)
    server = dirs["op0"]
    pinned = (server / TRUST).read_text()
    (server / TRUST).write_text(pinned + (dirs["op1"] / ".config" / "party_1.crt").read_text())
    srv = Server(load_server_config(server / "server.toml"))
    try:
        with pytest.raises(DataDirError, match="not the registry's pinned server certificates"):
            srv.tls_context()
    finally:
        srv.store.close()


def test_keygen_and_registry_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> dict[str, object]:
        assert main([*args, "--json"]) == 0
        out: dict[str, object] = json.loads(capsys.readouterr().out)
        return out

    ports = _ports(3)
    publics = []
    for i in range(3):
        url = f"https://127.0.0.1:{ports[i]}"
        got = run("keygen", "--role", "server", "--id", str(i),
                  "--out", str(tmp_path / f"s{i}"), "--url", url)  # fmt: skip
        assert len(got["private"]) == 3 and len(str(got["tls_sha256"])) == 64  # type: ignore[arg-type]
        publics.append(str(got["public"]))
    publics.append(str(run("keygen", "--role", "supplier", "--id", "s1",
                           "--out", str(tmp_path / "s1"))["public"]))  # fmt: skip
    publics.append(str(run("keygen", "--role", "household", "--id", "h1", "--supplier", "s1",
                           "--region", "r1", "--out", str(tmp_path / "h1"))["public"]))  # fmt: skip
    built = run("registry", "build", "--out", str(tmp_path / "reg" / "registry.json"), *publics)
    assert built["households"] == 1 and built["suppliers"] == ["s1"]
    assert Path(str(built["trust"])) == tmp_path / "reg" / TRUST
    assert main(["registry", "install", "--server-dir", str(tmp_path / "s2"),
                 "--registry", str(tmp_path / "reg" / "registry.json"), "--copy"]) == 0  # fmt: skip
    assert "server.toml" in capsys.readouterr().out
    cfg = load_server_config(tmp_path / "s2" / "server.toml")
    assert cfg.registry == tmp_path / "s2" / "registry.json" and cfg.ca == tmp_path / "s2" / TRUST
    assert main(["keygen", "--role", "server", "--id", "0", "--out", str(tmp_path / "s0"),
                 "--url", "https://127.0.0.1:1"]) == 1  # fmt: skip
    assert "never overwrites" in capsys.readouterr().err
    key_file = tmp_path / "s0" / "tls.key"
    assert main(["registry", "build", "--out", str(tmp_path / "x.json"), str(key_file)]) == 1
    assert "private key" in capsys.readouterr().err
