"""``sealgrid serve``'s logs: text lines stamped in UTC, or JSON objects; a bad level is a
usage error."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealgrid.cli import build_parser, main
from sealgrid.cli.serve import configure_logging
from sealgrid.service.local import free_port_range
from sealgrid.service.setup import init_data_dir

#: A zone far from UTC, and not by whole hours: a local time passed off as UTC is caught
#: (written the POSIX way, UTC+5:45, so that it needs no time zone database).
FAR_ZONE = "KTM-5:45"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _near_now(stamp: str) -> bool:
    """Whether ``stamp`` (ISO 8601 in UTC with ``Z``) is within a minute of now."""
    assert STAMP.match(stamp), stamp
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60


@pytest.fixture(scope="module")
def server_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logs") / "d"
    init_data_dir(root, households=1, base_port=free_port_range(3), period_seconds=60,
                  extra_config={"mpc_base_port": free_port_range(48)})
    return root / "server-0" / "server.toml"


def _serve(config: Path, *options: str) -> tuple[str, str]:
    """Run server 0 alone (its peers are down: it warns of them) until it has logged that,
    then stop it; return its stdout and stderr."""
    log = config.parent / "serve.err"
    with log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sealgrid", "serve", "--config", str(config), *options],
            stdout=subprocess.PIPE, stderr=err_file, text=True,
            env={**os.environ, "TZ": FAR_ZONE, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 60
            while ("stopped answering heartbeats" not in log.read_text()
                   and proc.poll() is None and time.monotonic() < deadline):
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
    return out, log.read_text()


def test_text_logs_begin_with_the_time_in_utc(server_toml: Path) -> None:
    out, err = _serve(server_toml, "--log-level", "warning")
    assert "server 0 listening on https://" in out
    lines = err.strip().splitlines()
    assert lines and all(" sealgrid." in line for line in lines), err
    assert not [line for line in lines if " INFO " in line]  # the level is kept to
    for line in lines:
        stamp, logger, level, message = line.split(" ", 3)
        assert _near_now(stamp), line
        assert logger.startswith("sealgrid.") and level == "WARNING" and message, line


def test_json_logs_are_one_object_per_line_in_utc(server_toml: Path) -> None:
    out, err = _serve(server_toml, "--log-format", "json", "--log-level", "INFO")
    assert out == ""  # even "listening" is a log line
    found = [json.loads(line) for line in err.strip().splitlines()]
    assert found and all(set(f) >= {"time", "level", "logger", "message"} for f in found)
    assert all(_near_now(f["time"]) for f in found), found
    assert {"INFO", "WARNING"} <= {f["level"] for f in found}
    assert any(f["logger"] == "sealgrid.serve" and "listening" in f["message"] for f in found)
    from sealgrid.service import eventloop

    assert {"logger": "sealgrid.serve", "message": f"event loop: {eventloop.loop_name()}"} in [
        {k: f[k] for k in ("logger", "message")} for f in found]
    assert not any("exception" in f for f in found)  # only when there is one


@pytest.fixture
def _root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = saved


@pytest.mark.usefixtures("_root_logging")
def test_a_text_line_with_an_exception_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", FAR_ZONE)
    time.tzset()
    assert time.localtime().tm_gmtoff == 5 * 3600 + 45 * 60  # the zone took
    try:
        configure_logging("info", "text")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("sealgrid.test").exception("settling %s failed", "p1")
    finally:
        monkeypatch.undo()
        time.tzset()
    first, *rest = capsys.readouterr().err.splitlines()
    stamp, tail = first.split(" ", 1)
    assert _near_now(stamp) and tail == "sealgrid.test ERROR settling p1 failed"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_a_log_level_is_one_of_logging_s_levels(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    for level in ("debug", "Warning", "ERROR", "warn"):  # any case; the old aliases too
        assert parse(["serve", "--config", "x.toml", "--log-level", level]).log_level == level
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", "x.toml", "--log-level", "foo"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "sealgrid serve: error: argument --log-level: invalid choice: 'foo' (choose from"
        " 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')")
