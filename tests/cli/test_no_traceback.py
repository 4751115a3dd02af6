"""No traceback ever reaches a user: every command, with bad paths, bad numbers, a closed stdout.

The commands are found from the parser itself, so a command added later is tried too. Each is
run in-process through :func:`sealgrid.cli.main` with every option it has filled with a bad
value of one kind at a time; whatever it answers must be an exit status (1 for an error, 2 for
usage) and every line on stderr one ``sealgrid: …`` line (or argparse's usage), never a
Python traceback or an exception escaping ``main``.
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealgrid.cli import build_parser, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def leaves(parser: argparse.ArgumentParser,
           prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                           argparse.ArgumentParser]]:
    """Every runnable command: ``(words, its parser)``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for sub in subs:
        for name, child in sub.choices.items():
            yield from leaves(child, (*prefix, name))


COMMANDS = sorted(leaves(build_parser()))
#: Commands that run for minutes on good input: they are given bad input of every kind but
#: never the case that leaves every option at its default.
BAD_KINDS = ("missing", "directory", "garbage", "negative", "huge", "words")


def _value(action: argparse.Action, kind: str, tmp: Path) -> str:
    """A bad value of ``kind`` for one option."""
    if action.choices is not None:
        return "not-a-choice" if kind == "words" else str(next(iter(action.choices)))
    is_path = action.type is Path or any(
        w in action.dest for w in ("path", "file", "dir", "config", "out", "csv", "data"))
    if is_path:
        return {"missing": "/nonexistent/sealgrid/x", "directory": str(tmp),
                "garbage": str(tmp / "garbage.bin")}.get(kind, "/proc/nope/x")
    return {"negative": "-1", "huge": "1e400", "words": "twelve"}.get(kind, "nan")


def argv_for(words: tuple[str, ...], parser: argparse.ArgumentParser, kind: str,
             tmp: Path) -> list[str]:
    """The command with every option taking a value filled with a bad value of ``kind``."""
    argv = list(words)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if action.nargs == 0:  # flags: leave off (--secure and friends only add work)
            continue
        if not action.option_strings:  # positional
            argv.append(_value(action, kind, tmp))
            continue
        if action.dest in ("port", "workers", "worker", "timeout"):
            continue  # would bind sockets or wait; their bad values are argparse's own
        count = action.nargs if isinstance(action.nargs, int) else 1
        argv += [action.option_strings[-1]] + [_value(action, kind, tmp)] * count
    return argv


def check_answer(status: object, err: str, argv: list[str]) -> None:
    assert status in (1, 2), (argv, status, err)
    assert "Traceback" not in err, (argv, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, (argv, "an error must say what is wrong")
    if status == 1:
        assert all(line.startswith("sealgrid: ") for line in lines), (argv, err)
        # the last guard in main() catches what nothing else named: a defect, even if quiet
        assert "defect in sealgrid" not in err, (argv, err)
    else:
        assert lines[-1].startswith("usage: ") or "error: " in lines[-1], (argv, err)


@pytest.mark.parametrize(("words", "parser"), COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_every_command_answers_bad_input_without_a_traceback(
    words: tuple[str, ...], parser: argparse.ArgumentParser, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "garbage.bin").write_bytes(b"\xff\xfe\x00[servers\n,,,\"\n")
    failures = []
    for kind in BAD_KINDS:
        argv = argv_for(words, parser, kind, tmp_path)
        handlers, level = logging.root.handlers[:], logging.root.level
        try:
            status: object = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
        finally:  # a command that set up logging on this test's captured stderr: undo it
            logging.root.handlers[:], logging.root.level = handlers, level
        try:
            check_answer(status, capsys.readouterr().err, argv)
        except AssertionError as exc:
            failures.append(f"{kind}: {exc}")
    assert not failures, "\n".join(failures)


class _Closed(io.TextIOBase):
    """A standard output whose reader has gone (``sealgrid … | head``)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def writable(self) -> bool:
        return True


@pytest.mark.parametrize("argv", [
    ["clear", str(EXAMPLES / "bids.csv"), "--price-floor", "4", "--price-ceiling", "20"],
    ["clear", str(EXAMPLES / "bids.csv"), "--price-floor", "4", "--price-ceiling", "20",
     "--json"],
    ["pem", str(EXAMPLES / "agents.csv"), "--retail", "120", "--feed-in", "80",
     "--price-range", "90", "110", "--json"],
    ["settle", "--meters", str(EXAMPLES / "meters.csv"), "--tariffs",
     str(EXAMPLES / "tariffs.csv"), "--json"],
])
def test_a_closed_stdout_ends_the_command_quietly(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdout", _Closed())
    assert main(argv) == 1
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_in_a_real_shell() -> None:
    """``settle --json | head -c 10``: ten bytes through, nothing on stderr, no traceback."""
    cmd = (f"{sys.executable} -m sealgrid settle --json --meters {EXAMPLES / 'meters.csv'} "
           f"--tariffs {EXAMPLES / 'tariffs.csv'} | head -c 10")
    for _ in range(3):  # whether the write or the final flush meets the closed pipe varies
        done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True,
                              text=True, timeout=60)
        assert done.stdout == '{"units": '
        assert done.stderr == "", done.stderr


def test_the_cases_users_met(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each once printed a traceback (or said only ``'servers'``)."""
    existing = tmp_path / "summary.txt"
    existing.write_text("mine\n")
    bad_toml = tmp_path / "server.toml"
    bad_toml.write_text("[market]\nfloor = 80\n")
    cases = {
        "simulate --out FILE": (["simulate", "--mechanism", "none", "--homes", "2",
                                 "--windows", "1", "--quiet", "--out", str(existing)], 1),
        "simulate --out /proc": (["simulate", "--mechanism", "none", "--homes", "2",
                                  "--windows", "1", "--quiet", "--out", "/proc/nope"], 1),
        "pem --key-bits 1000": (["pem", str(EXAMPLES / "agents.csv"), "--retail", "120",
                                 "--feed-in", "80", "--price-range", "90", "110", "--secure",
                                 "--key-bits", "1000"], 1),
        "serve --log-level foo": (["serve", "--config", str(bad_toml), "--log-level", "foo"], 2),
        "serve with a bad TOML": (["serve", "--config", str(bad_toml)], 1),
    }
    for name, (argv, expected) in cases.items():
        try:
            status: object = main(argv)
        except SystemExit as exc:
            status = exc.code
        err = capsys.readouterr().err
        assert status == expected, (name, err)
        assert "Traceback" not in err and "defect in sealgrid" not in err, (name, err)
        if expected == 1:
            assert len(err.strip().splitlines()) == 1, (name, err)
    assert existing.read_text() == "mine\n"
