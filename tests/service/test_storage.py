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
from sealgrid.service.blind import Issuer
from sealgrid.service.household import Pseudonym, accept_grant, issue_request, make_submission
from sealgrid.service.intake import (
    Accepted,
    Granted,
    Intake,
    IssueChallenge,
    IssuePseudonym,
    Participation,
    SubmitBid,
)
from sealgrid.service.schedule import Schedule
from sealgrid.service.storage import StorageError, Store

NOW = dt.datetime(2026, 11, 22, 21, 7, tzinfo=dt.UTC)
PERIOD = "2026-11-22T21:45:00Z"


ISSUER = Issuer.generate()


def _accepted(n: int) -> tuple[Intake, list[tuple[Accepted, Participation]]]:
    keys = {f"h{i}": Ed25519PrivateKey.generate() for i in range(n)}
    server = Ed25519PrivateKey.generate()
    m = Intake(0, server, {h: wire.raw_public(k) for h, k in keys.items()}, Schedule(900))
    m.add_issuer(PERIOD, ISSUER)
    out = []
    for i, (h, k) in enumerate(keys.items()):
        p = Pseudonym.fresh(PERIOD)
        (ch,) = m.receive(IssueChallenge(NOW, i.to_bytes(8, "big")))
        raw, blinding = issue_request(p, ISSUER.public, h, k, ch.nonce)
        (granted,) = m.receive(IssuePseudonym(NOW, raw))
        assert isinstance(granted, Granted)
        accept_grant(p, 0, wire.raw_public(server), granted.grant, blinding, ISSUER.public)
        (ch,) = m.receive(IssueChallenge(NOW, (1000 + i).to_bytes(8, "big")))
        (ev,) = m.receive(SubmitBid(NOW, make_submission(p, 0, os.urandom(64))))
        assert isinstance(ev, Accepted)
        out.append((ev, granted.participation))
    return m, out


def _roundtrip(url: str) -> None:
    _, pairs = _accepted(5)
    accepted = [a for a, _ in pairs]
    store = Store(url)
    store.add([a.bid for a in accepted[:3]], [p for _, p in pairs[:3]])
    with pytest.raises(StorageError):  # one duplicate: nothing of the batch stays
        store.add([a.bid for a in accepted[3:] + accepted[:1]], [p for _, p in pairs[3:]])
    store.add_issuer(PERIOD, b"pem")
    store.close()
    store = Store(url)  # a new connection, as after a restart
    bids, parts, closed = store.load_state()
    assert sorted(b.pseudonym for b in bids) == sorted(a.bid.pseudonym for a in accepted[:3])
    assert {p.household for p in parts} == {p.household for _, p in pairs[:3]}
    assert closed == set() and store.issuers() == {PERIOD: b"pem"}
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
