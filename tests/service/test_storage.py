"""Storage on real SQLite files (and a throwaway PostgreSQL cluster when one can be started)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.household import Pseudonym, make_submission
from sealgrid.service.intake import Accepted, Intake, IssueChallenge, SubmitBid
from sealgrid.service.schedule import Schedule
from sealgrid.service.storage import StorageError, Store

NOW = dt.datetime(2026, 11, 22, 21, 7, tzinfo=dt.UTC)
PERIOD = "2026-11-22T21:45:00Z"


def _accepted(n: int) -> tuple[Intake, list[Accepted]]:
    keys = {f"h{i}": Ed25519PrivateKey.generate() for i in range(n)}
    m = Intake(
        0,
        Ed25519PrivateKey.generate(),
        {h: wire.raw_public(k) for h, k in keys.items()},
        Schedule(900),
    )
    out = []
    for i, (h, k) in enumerate(keys.items()):
        (ch,) = m.receive(IssueChallenge(NOW, i.to_bytes(8, "big")))
        raw = make_submission(Pseudonym.fresh(PERIOD, h, k), 0, ch.nonce, os.urandom(64))
        (ev,) = m.receive(SubmitBid(NOW, raw))
        assert isinstance(ev, Accepted)
        out.append(ev)
    return m, out


def _roundtrip(url: str) -> None:
    _, accepted = _accepted(5)
    store = Store(url)
    store.add_bids(accepted[:3])
    with pytest.raises(StorageError):
        store.add_bids(accepted[3:] + accepted[:1])  # one duplicate: nothing of the batch stays
    store.close()
    store = Store(url)  # a new connection, as after a restart
    bids, parts, closed = store.load_state()
    assert sorted(b.pseudonym for b in bids) == sorted(a.bid.pseudonym for a in accepted[:3])
    assert {p.household for p in parts} == {a.participation.household for a in accepted[:3]}
    assert closed == set()
    stored = {b.pseudonym: b for b in store.bids(PERIOD)}
    for a in accepted[:3]:
        assert stored[a.bid.pseudonym] == a.bid
        assert store.receipt(PERIOD, a.bid.pseudonym) == wire.encode(a.receipt)
    store.set_period(PERIOD, "closed")
    assert store.unfinished() == [PERIOD]
    agreed = tuple(sorted(b.pseudonym for b in bids))
    store.set_period(
        PERIOD,
        "cleared",
        agreed=agreed,
        excluded=(b"\x00" * 32,),
        outcome="{}",
        statement=b"st",
        outputs=[("household", "abc", b"\x01\x02")],
    )
    rec = store.period(PERIOD)
    assert rec is not None and rec.status == "cleared" and rec.agreed == agreed
    assert rec.excluded == (b"\x00" * 32,) and rec.statement == b"st"
    assert store.output(PERIOD, "household", "abc") == b"\x01\x02"
    assert store.output(PERIOD, "household", "x") is None
    assert store.unfinished() == [] and store.load_state()[2] == {PERIOD}
    store.close()


def test_sqlite_round_trip_and_atomic_batches(tmp_path) -> None:
    path = tmp_path / "bids.sqlite"
    _roundtrip(f"sqlite:///{path}")
    import sqlite3

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # the stored bids hold no household id
    assert all(b'"household"' not in row[0] for row in conn.execute("SELECT bid FROM bids"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on loopback, owned by the 'postgres' user."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("runuser")):
        pytest.skip("PostgreSQL server binaries not installed")
    if os.geteuid() != 0:
        pytest.skip("starting a throwaway cluster needs root (to run as 'postgres')")
    pytest.importorskip("psycopg")
    import pathlib
    import tempfile

    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="sealgrid-pg-"))
    tmp_path.chmod(0o755)
    shutil.chown(tmp_path, "postgres")
    data = tmp_path / "pg"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_pg = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run(
        [*as_pg, "initdb", "-D", str(data), "-A", "trust", "-U", "sealgrid"], capture_output=True
    )
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr.decode()[-200:]}")
    opts = f"-p {port} -k {tmp_path} -c listen_addresses=127.0.0.1 -c fsync=on"
    subprocess.run(
        [
            *as_pg,
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            opts,
            "-w",
            "start",
            "-l",
            str(tmp_path / "pg.log"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://sealgrid@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_pg, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        time.sleep(0.1)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_postgresql_round_trip(postgres_url: str) -> None:
    _roundtrip(postgres_url)
