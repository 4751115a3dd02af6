"""``sealgrid keygen`` (a party makes its own keys) and ``sealgrid registry build|install|verify``.

The multi-party set-up (docs/service.md, "Keys and trust"): each party runs ``keygen`` on its
own machine and hands on only the public part it writes; anyone builds the registry from the
public parts; each server operator installs the registry in its own directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sealgrid.mechanism.settlement import Tariff

ROLES = ("server", "household", "supplier", "operator", "dso", "tso")  # as setup.ROLES


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid keygen`` and ``sealgrid registry``."""
    parser = sub.add_parser(
        "keygen",
        help="make one party's private keys in its own directory and its public part",
        description="Make one party's private keys (mode 0600) in DIR, and a public part "
        "(JSON: role, id, Ed25519 public key; a server's URL and self-signed certificates; a "
        "household's supplier, region and smart meter's public key) to hand to whoever builds "
        "the registry. A household also gets its meter's signing key (ID.meter.key). Nothing "
        "private is written outside DIR, and nothing is overwritten.",
    )
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument(
        "--id",
        required=True,
        help="a server's party index; a DSO's region; the TSO's 'tso'; else a name",
    )
    parser.add_argument("--out", required=True, type=Path, help="this party's own directory")
    parser.add_argument("--url", default="", help="a server's HTTPS URL (https://host:port)")
    parser.add_argument("--supplier", default="", help="a household's supplier (required)")
    parser.add_argument("--region", default="", help="a household's region (required)")
    parser.add_argument(
        "--days", type=int, default=365, help="a server's certificates' validity (default 365)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run_keygen)

    reg = sub.add_parser("registry", help="build, install or verify a registry of public parts")
    what = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    build = what.add_parser(
        "build",
        help="assemble registry.json and servers.pem from public parts only",
        description="Check every public part (its proof of possession, a server's "
        "self-signed certificates, unique ids and keys, servers 0…n-1, every household's "
        "supplier registered, at most one TSO, and when any DSO is given a DSO for every "
        "household's region) and write the registry and the servers' pinned certificates. "
        "A file holding a private key is refused.",
    )
    build.add_argument("parts", nargs="+", type=Path, help="public part files or directories")
    build.add_argument("--out", required=True, type=Path, help="the registry file to write")
    build.add_argument(
        "--trust", type=Path, default=None, help="the trust file (default servers.pem beside it)"
    )
    build.add_argument("--json", action="store_true", help="one JSON object on stdout")
    build.set_defaults(func=run_build)

    install = what.add_parser(
        "install",
        help="set up a server's own directory for a registry (MPC trust, server.toml)",
    )
    install.add_argument("--server-dir", required=True, type=Path, help="the server's directory")
    install.add_argument("--registry", required=True, type=Path, help="the registry file")
    install.add_argument("--trust", type=Path, default=None, help="default: beside the registry")
    install.add_argument(
        "--copy", action="store_true", help="copy registry and trust file into the server dir"
    )
    install.add_argument("--listen", default=None, help="HOST:PORT (default: the URL's)")
    install.add_argument("--period-seconds", type=int, default=900)
    add_billing_arguments(install)
    install.set_defaults(func=run_install)

    verify = what.add_parser("verify", help="check a registry's pinned certificates")
    verify.add_argument("registry", type=Path)
    verify.set_defaults(func=run_verify)


def add_billing_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tariffs``, ``--cycle-periods`` and ``--reading-grace-periods`` (the server
    configuration's ``[billing]`` table; ``sealgrid init`` and ``registry install``)."""
    parser.add_argument(
        "--tariffs",
        type=Path,
        default=None,
        metavar="TARIFFS.csv",
        help="columns supplier,retail_ct_per_kwh,feed_in_ct_per_kwh,network_fee_ct_per_kwh "
        "(ct/kWh, as for 'sealgrid settle'; the older columns retail,feed_in,network_fee are "
        "ct/kWh here too), one row per supplier (default: retail 120, feed-in 80, network "
        "fee 5 for every supplier)",
    )
    parser.add_argument(
        "--cycle-periods",
        type=int,
        default=None,
        metavar="C",
        help="a billing cycle's length in periods (default: a 30-day month of periods)",
    )
    parser.add_argument(
        "--reading-grace-periods",
        type=int,
        default=None,
        metavar="G",
        help="a meter reading is due G periods after its period ends (default 4)",
    )


def billing_from_args(
    args: argparse.Namespace,
) -> tuple[dict[str, Tariff] | None, int | None, int | None]:
    """The tariffs read from ``--tariffs`` (``None`` without it), ``--cycle-periods`` and
    ``--reading-grace-periods`` (``None`` when not given).

    Raises:
        CliError: the tariffs file breaks a rule (each broken row named), or C or G below 1.
    """
    from sealgrid.cli import CliError
    from sealgrid.cli.settle import load_tariffs

    for name in ("cycle_periods", "reading_grace_periods"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise CliError(f"{flag} must be at least 1, not {value}")
    tariffs = dict(load_tariffs(args.tariffs)) if args.tariffs is not None else None
    return tariffs, args.cycle_periods, args.reading_grace_periods


def run_keygen(args: argparse.Namespace) -> int:
    """Make the party's keys and print where they are."""
    from sealgrid.cli import CliError
    from sealgrid.protocol.certs import fingerprint
    from sealgrid.service.setup import KeygenError, keygen

    try:
        made = keygen(
            args.role,
            args.id,
            args.out,
            url=args.url,
            supplier=args.supplier,
            region=args.region,
            days=args.days,
        )
    except KeygenError as exc:
        raise CliError(str(exc)) from exc
    part = made.part
    doc = {
        "role": part.role,
        "id": part.id,
        "public": str(made.public.resolve()),
        "private": [str(p.resolve()) for p in made.private],
        "key": part.body()["key"],
    }
    if part.role == "server":
        doc["tls_sha256"] = fingerprint(part.tls_cert)
        doc["mpc_sha256"] = fingerprint(part.mpc_cert)
    if part.role == "household":
        doc["supplier"], doc["region"] = part.supplier, part.region
        doc["meter_key"] = part.body()["meter_key"]
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"{part.role} {part.id}: private keys (mode 0600, keep them here):")
    for path in doc["private"]:
        print(f"  {path}")
    print(f"public part (hand this on for the registry): {doc['public']}")
    if part.role == "household":
        print(f"  supplier {part.supplier}, region {part.region}; meter key {doc['meter_key']}")
    if part.role == "server":
        print(f"  HTTPS certificate SHA-256 {doc['tls_sha256']}")
        print(f"  MPC certificate SHA-256   {doc['mpc_sha256']}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    """Build the registry from public parts."""
    from sealgrid.cli import CliError
    from sealgrid.protocol.certs import fingerprint
    from sealgrid.service.setup import KeygenError, build_registry, load_parts, write_registry

    try:
        registry = build_registry(load_parts(args.parts))
        trust = write_registry(registry, args.out, args.trust)
    except KeygenError as exc:
        raise CliError(str(exc)) from exc
    servers = [
        {"url": url, "tls_sha256": fingerprint(cert)}
        for (url, _), cert in zip(registry.servers, registry.tls_certs, strict=True)
    ]
    suppliers, operators = sorted(registry.suppliers), sorted(registry.operators)
    dsos, tso = sorted(registry.dsos), registry.tso is not None
    if args.json:
        print(json.dumps({
            "registry": str(args.out.resolve()), "trust": str(trust.resolve()),
            "servers": servers, "households": len(registry.households),
            "suppliers": suppliers, "operators": operators,
            "regions": list(registry.regions), "dsos": dsos, "tso": tso,
        }))  # fmt: skip
        return 0
    print(f"registry: {args.out.resolve()} (public parts only; no private key passed through)")
    print(f"trust file (the servers' pinned certificates, for every client): {trust.resolve()}")
    for i, s in enumerate(servers):
        print(f"server {i}: {s['url']}  HTTPS certificate SHA-256 {s['tls_sha256']}")
    print(
        f"households: {len(registry.households)}, suppliers: {', '.join(suppliers)}, "
        f"operators: {', '.join(operators)}"
    )
    print(
        f"regions: {', '.join(registry.regions) or '-'}; DSOs: {', '.join(dsos) or '-'}; "
        f"TSO: {'yes' if tso else 'no'}"
    )
    return 0


def run_install(args: argparse.Namespace) -> int:
    """Install a registry in one server's directory."""
    from sealgrid.cli import CliError
    from sealgrid.service.config import BillingConfig
    from sealgrid.service.keys import TRUST, DataDirError, Registry
    from sealgrid.service.setup import copy_public, install_server

    registry, trust = args.registry, args.trust or args.registry.with_name(TRUST)
    tariffs, cycle, grace = billing_from_args(args)
    try:
        base = BillingConfig.default(args.period_seconds, Registry.load(registry).suppliers)
        billing = BillingConfig(
            tariffs if tariffs is not None else base.tariffs,
            cycle if cycle is not None else base.cycle_periods,
            grace if grace is not None else base.reading_grace_periods,
        )
        if args.copy:
            registry = copy_public(registry, args.server_dir)
            trust = copy_public(trust, args.server_dir)
        toml = install_server(
            args.server_dir,
            registry,
            trust_path=trust,
            listen=args.listen,
            period_seconds=args.period_seconds,
            billing=billing,
        )
    except DataDirError as exc:
        raise CliError(str(exc)) from exc
    print(f"server configuration: {toml.resolve()}  (sealgrid serve --config {toml.resolve()})")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check a registry file."""
    from sealgrid.cli import CliError
    from sealgrid.protocol.certs import fingerprint
    from sealgrid.service.keys import DataDirError, Registry, check_registry

    try:
        registry = Registry.load(args.registry)
        check_registry(registry)
    except DataDirError as exc:
        raise CliError(str(exc)) from exc
    for i, ((url, _), cert) in enumerate(zip(registry.servers, registry.tls_certs, strict=True)):
        print(f"server {i}: {url}  HTTPS certificate SHA-256 {fingerprint(cert)}")
    print(f"{args.registry}: every server's pinned certificates check out")
    return 0
