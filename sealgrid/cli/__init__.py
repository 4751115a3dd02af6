"""The ``sealgrid`` command: thin, only parses arguments and calls the layers below.

Every module ``sealgrid/cli/<name>.py`` with a ``register(subparsers)`` function adds one
subcommand; modules named ``bench_<target>.py`` add ``sealgrid bench <target>``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from sealgrid import __version__


class CliError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 1, no traceback."""


def _modules(prefix: str) -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(__path__)]
    return sorted(n for n in names if n.startswith(prefix) if not n.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand found in this package."""
    parser = argparse.ArgumentParser(
        prog="sealgrid",
        description="A privacy-preserving local electricity market.",
    )
    parser.add_argument("--version", action="version", version=f"sealgrid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _modules(""):
        if name.startswith("bench_") or name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def register_bench_targets(sub: argparse._SubParsersAction) -> None:
    """Add every ``bench_<target>`` module's parser under ``sealgrid bench``."""
    for name in _modules("bench_"):
        importlib.import_module(f"{__name__}.{name}").register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sealgrid`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except CliError as exc:
        for line in str(exc).splitlines():
            print(f"sealgrid: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
