"""The ``sealgrid`` command: thin, only parses arguments and calls the layers below.

Every module ``sealgrid/cli/<name>.py`` with a ``register(subparsers)`` function adds one
subcommand; modules named ``bench_<target>.py`` add ``sealgrid bench <target>``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from sealgrid import __version__
from sealgrid.mechanism.units import UnitWarning

_default_showwarning = warnings.showwarning


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


def _error(text: str) -> int:
    for line in text.splitlines() or [""]:
        print(f"sealgrid: error: {line}", file=sys.stderr)
    return 1


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Warnings meant for the user (older spellings) as one line each, without source lines."""
    if issubclass(category, UnitWarning):
        print(f"sealgrid: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sealgrid`` command line; return the exit status.

    No traceback reaches the user: a :class:`CliError` is its message, an unreadable or
    unwritable file its path and reason, a closed standard output (``sealgrid … | head``)
    ends the command quietly, and anything unforeseen is one line naming it (the traceback
    with ``SEALGRID_DEBUG=1``). Usage errors exit 2 (argparse), every other error 1.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            status: int = args.func(args)
        sys.stdout.flush()
    except CliError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of stdout went away: nothing left to tell it
        _silence_stdout()
        return 1
    except OSError as exc:
        if os.environ.get("SEALGRID_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")
    except Exception as exc:  # the last guard: one line, never a traceback
        if os.environ.get("SEALGRID_DEBUG"):
            raise
        return _error(f"unexpected {type(exc).__name__}: {exc} (this is a defect in sealgrid; "
                      "SEALGRID_DEBUG=1 shows where)")
    return status


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests): nothing to do
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
