"""Storage on real SQLite files (and a throwaway PostgreSQL cluster when one can be started)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.household import Pseudonym, accept_grant, make_submission, token_request
from sealgrid.service.intake import (
    Accepted,
    ChallengeIssued,
    Granted,
    Intake,
    IssueChallenge,
    IssuePseudonym,
    Participation,
    SubmitBid,
)
from sealgrid.service.local import free_port_range
from sealgrid.service.schedule import Schedule
from sealgrid.service.storage import SCHEMA_VERSION, StorageError, Store
from sealgrid.service.voprf import Issuer
from sealgrid.service.wire import Outcome

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
        assert isinstance(ch, ChallengeIssued), ch
        raw, blindings = token_request([p], h, k, ch.nonce)
        (granted,) = m.receive(IssuePseudonym(NOW, raw))
        assert isinstance(granted, Granted)
        accept_grant([p], 0, wire.raw_public(server), granted.grant, blindings)
        (ch,) = m.receive(IssueChallenge(NOW, (1000 + i).to_bytes(8, "big")))
        (ev,) = m.receive(SubmitBid(NOW, make_submission(p, 0, os.urandom(64))))
        assert isinstance(ev, Accepted)
        out.append((ev, granted.participations[0]))
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
    assert [b.pseudonym for b in bids] == sorted(a.bid.pseudonym for a in accepted[:3])
    assert [p.household for p in parts] == sorted(p.household for _, p in pairs[:3])
    assert {p.household for p in parts} == {p.household for _, p in pairs[:3]}
    assert closed == set() and store.issuers() == {PERIOD: b"pem"}
    stored = {b.pseudonym: b for b in store.bids(PERIOD)}
    for a in accepted[:3]:
        assert stored[a.bid.pseudonym] == a.bid
        assert store.receipt(PERIOD, a.bid.pseudonym) == wire.encode(a.receipt)
    store.set_period(PERIOD, "closed")  # seals the period: bids and participations move
    assert store.unfinished() == [PERIOD]
    assert store.participants(PERIOD) == tuple(sorted(p.household for _, p in pairs[:3]))
    assert store.bids(PERIOD) == sorted(stored.values(), key=lambda b: b.pseudonym)
    for a in accepted[:3]:
        assert store.receipt(PERIOD, a.bid.pseudonym) == wire.encode(a.receipt)
    assert store.load_state()[:2] == (bids, parts)  # the same state, also after the seal
    store.set_period(PERIOD, "closed")  # sealing twice changes nothing
    assert store.load_state()[:2] == (bids, parts)
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
    assert all(
        b'"household"' not in row[0] for row in conn.execute("SELECT bid FROM closed_bids")
    )
    # no table keeps an order of arrival: no rowid, no sequence number, no time
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        with pytest.raises(sqlite3.OperationalError, match="rowid"):
            conn.execute(f"SELECT rowid FROM {table}")
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        assert not columns & {"seq", "accepted_at", "id", "created", "time"}, table
    assert (tmp_path / "bids.sqlite-wal").stat().st_size == 0  # emptied at the gate


V1_SCHEMA = """
CREATE TABLE bids (
    period TEXT NOT NULL, pseudonym {blob} NOT NULL, seq INTEGER NOT NULL,
    bid {blob} NOT NULL, payload {blob} NOT NULL, receipt {blob} NOT NULL,
    PRIMARY KEY (period, pseudonym));
CREATE TABLE participations (
    period TEXT NOT NULL, household TEXT NOT NULL, PRIMARY KEY (period, household));
CREATE TABLE periods (
    period TEXT PRIMARY KEY, status TEXT NOT NULL, agreed {blob}, excluded {blob},
    outcome TEXT, statement {blob});
CREATE TABLE issuers (
    period TEXT PRIMARY KEY, private_key {blob} NOT NULL);
CREATE TABLE outputs (
    period TEXT NOT NULL, role TEXT NOT NULL, subject TEXT NOT NULL, shares {blob} NOT NULL,
    PRIMARY KEY (period, role, subject))
"""  # the first schema, as sealgrid wrote it before it kept no order of arrival


def _migration(url: str, execute) -> None:
    """Write a first-schema database (a closed period and an open one), open it, check."""
    _, pairs = _accepted(4)
    blob = "BYTEA" if url.startswith("postgresql") else "BLOB"
    for stmt in V1_SCHEMA.format(blob=blob).split(";"):
        execute(stmt)
    rows = []
    for k, (a, p) in enumerate(pairs):  # households 0, 1 in PERIOD (closed), 2, 3 in LATER
        period = PERIOD if k < 2 else LATER
        b = a.bid
        execute(
            "INSERT INTO bids VALUES (?, ?, ?, ?, ?, ?)",
            (period, b.pseudonym, k + 1, b.bid, b.payload, b"receipt with seq and time"),
        )
        execute("INSERT INTO participations VALUES (?, ?)", (period, p.household))
        rows.append((period, b, p.household))
    execute("INSERT INTO periods VALUES (?, 'cleared', ?, ?, '{}', ?)",
            (PERIOD, b"", b"", b"st"))
    execute("INSERT INTO issuers VALUES (?, ?)", (PERIOD, b"pem"))
    execute("INSERT INTO outputs VALUES (?, 'household', 'x', ?)", (PERIOD, b"\x01"))
    store = Store(url)  # migrates
    bids, parts, closed = store.load_state()
    assert closed == {PERIOD} and store.issuers() == {PERIOD: b"pem"}
    assert [(b.period, b.pseudonym) for b in bids] == sorted(
        (period, b.pseudonym) for period, b, _ in rows)
    assert all(b.receipt == b"" for b in bids)  # the old receipts (seq, time) are gone
    assert [b.bid for b in store.bids(PERIOD)] == [
        b.bid for _, b in sorted((b.pseudonym, b) for period, b, _ in rows if period == PERIOD)]
    assert store.receipt(PERIOD, rows[0][1].pseudonym) == b""
    assert [(p.period, p.household) for p in parts] == sorted((r[0], r[2]) for r in rows)
    assert store.participants(PERIOD) == tuple(sorted(r[2] for r in rows if r[0] == PERIOD))
    assert store.output(PERIOD, "household", "x") == b"\x01"
    record = store.period(PERIOD)
    assert record is not None and record.statement == b"st"
    store.close()
    again = Store(url)  # opening it again changes nothing
    assert again.load_state() == (bids, parts, closed)
    again.close()


LATER = "2026-11-22T22:00:00Z"


def test_sqlite_database_of_the_first_schema_is_migrated(tmp_path, caplog) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    _migration(f"sqlite:///{path}", conn.execute)
    conn.close()
    assert f"migrated the database to schema {SCHEMA_VERSION}" in caplog.text
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    with pytest.raises(sqlite3.OperationalError, match="rowid"):
        conn.execute("SELECT rowid FROM bids")
    data = path.read_bytes()
    assert b"receipt with seq and time" not in data  # rebuilt: no page keeps the old rows


def test_a_database_of_a_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new.sqlite'}"
    Store(url).close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "new.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match=f"schema {SCHEMA_VERSION + 1}, newer than this"):
        Store(url)


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
    port = free_port_range(1)  # below the ephemeral range: no outgoing connection takes it
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
    import psycopg

    with psycopg.connect(postgres_url) as conn:  # the seal left one transaction, key order
        rows = conn.execute("SELECT xmin::text, pseudonym FROM closed_bids").fetchall()
        assert len({x for x, _ in rows}) == 1
        assert [bytes(p) for _, p in rows] == sorted(bytes(p) for _, p in rows)
        assert conn.execute("SELECT count(*) FROM bids").fetchone() == (0,)


def _sealed_in_steps(url: str) -> None:
    """A period's seal in steps of 3 rows: after every step each bid is in ``bids`` or in
    ``closed_bids``, never both and never lost, and a bid of the next period written between
    steps stays; a seal stopped after some steps (the store closed, as by a crash) is
    finished by sealing again: all bids in key order, the whole participant set, no row of
    the period left behind, the next period untouched."""
    _, pairs = _accepted(8)
    first, later = pairs[:7], pairs[7]
    store = Store(url)
    store.add([a.bid for a, _ in first], [p for _, p in first])
    store.add_segment(PERIOD, 0, [a.bid.pseudonym for a, _ in first[:4]])
    everyone = sorted(a.bid.pseudonym for a, _ in first)

    def where() -> tuple[list[bytes], list[bytes]]:
        return ([bytes(r[0]) for r in store._read(
                    "SELECT pseudonym FROM bids WHERE period = ? ORDER BY pseudonym", (PERIOD,))],
                [bytes(r[0]) for r in store._read(
                    "SELECT pseudonym FROM closed_bids WHERE period = ? ORDER BY pseudonym",
                    (PERIOD,))])

    steps = store.seal_steps(PERIOD, rows=3)
    assert len(steps) >= 3 + 3  # ceil(7 / 3) steps of bids, as many of participations
    moved = []
    for k, step in enumerate(steps[:4]):
        step()
        open_rows, closed_rows = where()
        assert sorted(open_rows + closed_rows) == everyone and not set(open_rows) & set(
            closed_rows), k
        moved.append(len(closed_rows))
        if k == 0:  # another period's bid between two steps
            nxt = dataclasses.replace(later[0].bid, period="2026-11-22T22:00:00Z")
            store.add([nxt])
    assert moved[:3] == [3, 6, 7]  # three rows a step, in key order
    store.close()
    store = Store(url)  # stopped part way: sealed again at the next start
    store.seal(PERIOD)
    assert where() == ([], everyone)
    assert store.bids(PERIOD) == sorted((a.bid for a, _ in first), key=lambda b: b.pseudonym)
    assert store.participants(PERIOD) == tuple(sorted(p.household for _, p in first))
    assert store._read("SELECT COUNT(*) FROM participations WHERE period = ?", (PERIOD,)) == [
        (0,)]
    assert store.segments(PERIOD) == []
    assert [b.pseudonym for b in store.bids("2026-11-22T22:00:00Z")] == [later[0].bid.pseudonym]
    store.seal(PERIOD)  # sealing twice changes nothing
    assert where() == ([], everyone)
    store.close()


def _counts_in_one_snapshot(url: str) -> None:
    """The public counts (``GET /v1/info``, the metrics) read on the read connection: in
    one snapshot, a commit of the writer meanwhile is not seen half; the metrics count the
    bids of a period whose gate is recorded whether or not its seal has moved them yet, as
    ``GET /v1/info`` does, and they do not move while the seal does."""
    from sealgrid.service.metrics import store_view

    _, pairs = _accepted(5)
    store = Store(url)
    store.add([a.bid for a, _ in pairs], [p for _, p in pairs])
    reader = store.reader()
    assert reader.closed_counts() == {"closed_periods": 0, "bids_in_closed_periods": 0}
    with reader.snapshot():
        before = reader._read("SELECT COUNT(*) FROM periods")
        store.set_period(PERIOD, "closed", seal=False)  # the writer commits meanwhile
        assert reader._read("SELECT COUNT(*) FROM periods") == before == [(0,)]
        assert reader.closed_counts()["closed_periods"] == 0
    assert reader.closed_counts() == {"closed_periods": 1, "bids_in_closed_periods": 5}
    seen = []
    for step in store.seal_steps(PERIOD, rows=2):
        seen.append((reader.closed_counts()["bids_in_closed_periods"],
                     store_view(reader).bids_in_closed_periods))
        step()
    seen.append((reader.closed_counts()["bids_in_closed_periods"],
                 store_view(reader).bids_in_closed_periods))
    assert set(seen) == {(5, 5)}, seen
    assert store_view(reader).periods == {"closed": 1}
    store.set_period("2026-11-22T22:00:00Z", "cleared",
                     outcome=wire.encode(Outcome("no_trade")).decode())
    store.set_period("2026-11-22T22:15:00Z", "cleared",
                     outcome=wire.encode(Outcome("cleared", level=3, price="1.0")).decode())
    view = store_view(reader)
    assert view.periods == {"closed": 1, "no_trade": 1, "cleared": 1}, view
    assert view.awaiting_settlement == 2 and view.settled == 0
    reader.close()
    store.close()


def test_sqlite_counts_are_read_in_one_snapshot(tmp_path) -> None:
    _counts_in_one_snapshot(f"sqlite:///{tmp_path / 'counts.sqlite'}")


def test_postgresql_counts_are_read_in_one_snapshot(postgres_url: str) -> None:
    _counts_in_one_snapshot(postgres_url)


def _request_counts(url: str) -> None:
    """Workers' request counts add up per window and name; folding the older windows into
    one row keeps every sum and the kept windows' own counts."""
    store = Store(url)
    w1, w2, w3 = "2026-11-22T21:00:00Z", "2026-11-22T21:15:00Z", "2026-11-22T21:30:00Z"
    a, b = '["bid","received"]', '["req","/v1/info","GET","200"]'
    store.add_request_counts({w1: {a: 3, b: 1}})
    store.add_request_counts({w1: {a: 2}, w2: {a: 4}})  # a second worker's
    store.add_request_counts({w3: {b: 7}})
    after = "2026-11-22T21:45:00Z"
    assert store.request_counts(after, w1) == ({a: 9, b: 8}, {a: 5, b: 1})
    assert store.request_counts(w3, w2) == ({a: 9, b: 1}, {a: 4})  # w3 not settled yet
    store.fold_request_counts(w3)  # w1 and w2 into the row of older windows
    assert store.request_counts(after, w3) == ({a: 9, b: 8}, {b: 7})
    assert store.request_counts(w3, w1) == ({a: 9, b: 1}, {})
    rows = store._read("SELECT period, name, count FROM request_counts ORDER BY period, name")
    assert rows == [("", a, 9), ("", b, 1), (w3, b, 7)]
    store.add_request_counts({w2: {a: 1}})  # a late worker's window, after the fold
    store.fold_request_counts(w3)
    assert store.request_counts(after, w3)[0] == {a: 10, b: 8}
    store.close()


def test_sqlite_request_counts_add_up_and_fold(tmp_path) -> None:
    _request_counts(f"sqlite:///{tmp_path / 'counts.sqlite'}")


def test_postgresql_request_counts_add_up_and_fold(postgres_url: str) -> None:
    _request_counts(postgres_url)


def test_postgresql_a_fold_loses_no_count_added_meanwhile(postgres_url: str) -> None:
    """A worker's late addition to an old window, its transaction still open when the leader
    folds: the fold waits for it and sums it, whichever commits first."""
    import psycopg

    store = Store(postgres_url)
    w1, w2 = "2026-11-22T21:00:00Z", "2026-11-22T21:15:00Z"
    name = '["bid","received"]'
    store.add_request_counts({w1: {name: 3}})
    late = psycopg.connect(postgres_url)  # another worker, its transaction held open
    late.execute("INSERT INTO request_counts (period, name, count) VALUES (%s, %s, 2)"
                 " ON CONFLICT (period, name) DO UPDATE"
                 " SET count = request_counts.count + excluded.count", (w1, name))
    folding = threading.Thread(target=store.fold_request_counts, args=(w2,))
    folding.start()
    folding.join(0.5)
    assert folding.is_alive()  # it waits for the worker's row
    late.commit()
    folding.join(10)
    assert not folding.is_alive()
    late.close()
    assert store._read("SELECT period, name, count FROM request_counts") == [("", name, 5)]
    store.close()


def _outputs_in_blocks(url: str) -> None:
    """A city's household outputs are stored in blocks (a few rows, not one per household)
    and each reads back as stored: invalid ones too, the first and last of every block; a
    pseudonym with no output, or a respelled one, reads nothing; other roles keep a row each,
    and a household output stored one row each (as before the blocks) still reads."""
    import base64

    from sealgrid.service.storage import OUTPUT_BLOCK

    n = 2 * OUTPUT_BLOCK + 3
    keys = sorted(os.urandom(32) for _ in range(n + 3))  # the last: a long share
    absent = [keys[0], keys[OUTPUT_BLOCK + 1], keys[n + 1]]  # before, inside, after
    stored = [k for k in keys[:-1] if k not in absent]
    shares = {k: (b"invalid" if i % 9 == 0 else os.urandom(18)) for i, k in enumerate(stored)}
    b64 = {k: base64.b64encode(k).decode() for k in keys}
    outputs = [("supplier", "s1", b"S" * 40), ("settlement", "rows", b"R" * 5000)]
    big = keys[-1]  # a share too long for a block's entry keeps a row of its own
    shares[big] = b"B" * 40
    store = Store(url)
    store.set_period(PERIOD, "cleared", outcome="{}", statement=b"st", outputs=outputs,
                     households=list(shares.items()))
    (rows,), = store._read("SELECT COUNT(*) FROM outputs WHERE period = ?", (PERIOD,))
    assert rows == 3 + 2 + 1  # three blocks, the supplier's, the settlement's, the long one
    for k, v in shares.items():
        assert store.output(PERIOD, "household", b64[k]) == v
    for k in absent:
        assert store.output(PERIOD, "household", b64[k]) is None
    respelled = b64[stored[1]][:-2] + chr(ord(b64[stored[1]][-2]) ^ 1) + "="
    assert store.output(PERIOD, "household", respelled) is None
    assert store.output(PERIOD, "supplier", "s1") == b"S" * 40
    assert store.output(PERIOD, "settlement", "rows") == b"R" * 5000
    older = "2026-11-22T22:00:00Z"  # written one row each, as before the blocks
    store._write([("INSERT INTO outputs (period, role, subject, shares) VALUES (?, ?, ?, ?)",
                   (older, "household", b64[absent[0]], b"old"))])
    assert store.output(older, "household", b64[absent[0]]) == b"old"
    assert store.output(older, "household", b64[absent[1]]) is None
    store.close()


def test_sqlite_outputs_in_blocks_read_back(tmp_path) -> None:
    _outputs_in_blocks(f"sqlite:///{tmp_path / 'blocks.sqlite'}")


def test_postgresql_outputs_in_blocks_read_back(postgres_url: str) -> None:
    _outputs_in_blocks(postgres_url)


def test_a_sqlite_seal_in_steps_loses_and_doubles_nothing(tmp_path) -> None:
    _sealed_in_steps(f"sqlite:///{tmp_path / 'steps.sqlite'}")


def test_a_postgresql_seal_in_steps_loses_and_doubles_nothing(postgres_url: str) -> None:
    _sealed_in_steps(postgres_url)


def test_postgresql_database_of_the_first_schema_is_migrated(postgres_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        _migration(postgres_url, lambda sql, params=(): conn.execute(
            sql.replace("?", "%s"), params) if sql.strip() else None)


def test_a_schema_2_database_gains_the_settlement_tables(tmp_path) -> None:
    """Opening a database of schema 2 adds the settlement's tables and the workers' used
    challenges, empty, and says the current schema; a reading is stored once and a
    credential share once."""
    import sqlite3

    path = tmp_path / "v2.sqlite"
    store = Store(f"sqlite:///{path}")
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for table in ("credentials", "readings", "settlements", "used_challenges"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema'")
    conn.close()
    store = Store(f"sqlite:///{path}")
    assert store.readings(PERIOD) == {} and store.credentials("9999") == {}
    assert store.add_reading(PERIOD, "h1", b"x" * 8) == "stored"
    assert store.add_reading(PERIOD, "h1", b"y" * 8) == "duplicate"  # not stored
    assert store.readings(PERIOD) == {"h1": b"x" * 8}
    assert store.enrol("h1", b"a" * 8, PERIOD) == b"a" * 8
    assert store.enrol("h1", b"b" * 8, PERIOD) == b"a" * 8  # the first share stays
    assert store.credentials(PERIOD) == {} and store.credentials(LATER) == {"h1": b"a" * 8}
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    assert conn.execute("SELECT COUNT(*) FROM used_challenges").fetchall() == [(0,)]


def test_a_reader_sees_the_last_commit_while_a_write_is_held_and_never_writes(
        tmp_path, caplog) -> None:
    """The read connection (``Store.reader``) answers from the last committed state while
    the writer holds a transaction (a period's seal), refuses to write, and a reader that
    keeps the write-ahead log's checkpoint busy is logged, not ignored: the log's frames
    keep the order in which rows were written until it is emptied."""
    import sqlite3

    store = Store(f"sqlite:///{tmp_path / 'bids.sqlite'}")
    reader = store.reader()
    try:
        store._write([("INSERT INTO meta (name, value) VALUES ('probe', 'one')", ())])
        store._conn.execute("BEGIN IMMEDIATE")
        store._conn.execute("UPDATE meta SET value = 'two' WHERE name = 'probe'")
        assert reader._read("SELECT value FROM meta WHERE name = 'probe'") == [("one",)]
        store._conn.execute("COMMIT")
        assert reader._read("SELECT value FROM meta WHERE name = 'probe'") == [("two",)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._conn.execute("DELETE FROM meta")
        reader._conn.execute("BEGIN")  # a read that lasts past the busy timeout
        reader._conn.execute("SELECT COUNT(*) FROM meta").fetchall()
        store._conn.execute("PRAGMA busy_timeout = 50")
        store._truncate_wal()
        assert "a reader kept it busy" in caplog.text
        reader._conn.execute("COMMIT")
        caplog.clear()
        store._truncate_wal()
        assert "could not truncate" not in caplog.text
        assert (tmp_path / "bids.sqlite-wal").stat().st_size == 0
    finally:
        reader.close()
        store.close()


def test_sets_of_pseudonyms_and_of_names_are_kept_as_given() -> None:
    """The length-prefixed sets (agreed pseudonyms, segment members, participant names) read
    back as written, whether all 32 bytes (read at once) or not (read one by one), also
    when mixed lengths add up to a multiple of a pseudonym's entry."""
    from sealgrid.service.storage import _join, _split

    for items in ([os.urandom(32) for _ in range(300)], [b"h1", b"h22"], [],
                  [os.urandom(32) for _ in range(3)] + [b"x"], [b"\0" * 32] * 5,
                  [b"a" * 30, b"b" * 34], [b" " * 32, b"\0" * 32]):
        assert _split(_join(items)) == tuple(items), items[:2]
