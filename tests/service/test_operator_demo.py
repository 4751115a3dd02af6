"""``sealgrid demo`` removes the data directory it made (unencrypted private keys) when it ends,
also after an error or Ctrl-C; ``--keep`` keeps it; a directory the user named that existed
before is never removed, only what the demo added to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from sealgrid.cli import main
from sealgrid.service import demo
from sealgrid.service.local import LocalMarketError


def _fake_demo(fail: BaseException | None = None) -> Any:
    """A stand-in for ``run_demo`` that writes what ``sealgrid init`` would (keys among it),
    then returns a report, or raises ``fail``."""

    async def run_demo(root: Path, **kw: Any) -> dict[str, Any]:
        root.mkdir(parents=True, exist_ok=True)
        (root / "registry.json").write_text("{}")
        (root / "server-0").mkdir()
        (root / "server-0" / "signing.key").write_text("a private key")
        (root / "server-0.log").write_text("log")
        if fail is not None:
            raise fail
        return {"data_dir": str(root), "households": kw["households"], "periods": [],
                "period_seconds": kw["period_seconds"], "wall_seconds": 0.1}

    return run_demo


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the demo's temporary directory is made in (empty)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _demo(monkeypatch: pytest.MonkeyPatch, *args: str, fail: BaseException | None = None
          ) -> int:
    monkeypatch.setattr(demo, "run_demo", _fake_demo(fail))
    return main(["demo", "--households", "2", "--periods", "1", *args])


def test_the_temporary_data_directory_is_removed_at_the_end(
    temp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _demo(monkeypatch, "--json") == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["data_dir_kept"] is False and report["data_dir"].startswith(str(temp))
    assert list(temp.iterdir()) == []  # the temporary directory too, not only data/
    assert err == f"data directory removed: {report['data_dir']} (keys, databases, server" \
        " logs; --keep keeps it)\n"


def test_keep_keeps_it_and_says_where(
    temp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _demo(monkeypatch, "--keep") == 0
    (made,) = temp.iterdir()
    assert (made / "data" / "server-0" / "signing.key").read_text() == "a private key"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f"data directory kept: {made / 'data'} (keys, databases, server logs; the"
                    " private keys are not encrypted: delete it when done)")


def test_a_named_directory_the_demo_made_is_removed_with_its_new_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    named = tmp_path / "a" / "b" / "demo"
    assert _demo(monkeypatch, "--data-dir", str(named)) == 0
    assert list(tmp_path.iterdir()) == []  # a/ and a/b/ were made for it, and were empty
    assert capsys.readouterr().out.strip().endswith(f"data directory removed: {named} (keys,"
                                                    " databases, server logs; --keep keeps it)")


def test_a_named_directory_that_existed_keeps_what_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    named = tmp_path / "mine"
    (named / "notes").mkdir(parents=True)
    (named / "notes" / "n.txt").write_text("the user's")
    (named / "todo.txt").write_text("the user's too")
    assert _demo(monkeypatch, "--data-dir", str(named)) == 0
    assert sorted(p.name for p in named.iterdir()) == ["notes", "todo.txt"]
    assert (named / "notes" / "n.txt").read_text() == "the user's"
    assert capsys.readouterr().out.strip().endswith(
        f"removed what the demo made in {named} (registry.json, server-0, server-0.log); the"
        " directory existed before and stays (--keep keeps it all)")


@pytest.mark.parametrize("fail, status", [(LocalMarketError("server 1 stopped"), 1),
                                          (KeyboardInterrupt(), 130)])
def test_an_error_or_ctrl_c_removes_it_too(
    temp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fail: BaseException, status: int,
) -> None:
    assert _demo(monkeypatch, fail=fail) == status
    assert list(temp.iterdir()) == []
    err = capsys.readouterr().err
    assert err.startswith("data directory removed: ") and "Traceback" not in err
    if status == 1:
        assert err.endswith("sealgrid: error: server 1 stopped\n")


def _processes_naming(text: str) -> list[int]:
    """The processes whose command line names ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_ctrl_c_in_a_real_demo_stops_the_servers_and_removes_the_keys(tmp_path: Path) -> None:
    """The real demo (three servers), interrupted once the bids are in: it stops its servers,
    then removes the data directory; exit 130."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    err_path = tmp_path / "err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sealgrid", "demo", "--households", "3", "--periods", "1"],
            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "TMPDIR": str(folder)},
        )
        try:
            deadline = time.monotonic() + 120
            while "3/3 bids sent" not in err_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.1)
            (made,) = folder.iterdir()
            assert (made / "data" / "server-0" / "signing.key").exists()
            assert len(_processes_naming(str(made))) == 3  # the servers
        finally:
            proc.send_signal(signal.SIGINT)
            status = proc.wait(timeout=60)
    said = err_path.read_text()
    assert status == 130, said[-2000:]
    assert list(folder.iterdir()) == [], said[-2000:]
    assert said.strip().splitlines()[-1] == (
        f"data directory removed: {made / 'data'} (keys, databases, server logs; --keep keeps"
        " it)")
    assert _processes_naming(str(made)) == []


def test_a_data_directory_that_cannot_be_made_removes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real demo, refused before it made anything: the user's file stays, and nothing is
    said to be removed."""
    (tmp_path / "a file").write_text("the user's")
    assert main(["demo", "--households", "2", "--data-dir", str(tmp_path / "a file" / "d")]) == 1
    assert (tmp_path / "a file").read_text() == "the user's"
    assert capsys.readouterr().err == f"sealgrid: error: {tmp_path / 'a file' / 'd'}: Not a" \
        " directory\n"
