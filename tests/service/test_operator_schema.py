"""A server's database records its schema; an older one is brought forward when opened (one
transaction, rows intact), a newer one is refused untouched.

Each old database is built here from its own DDL, as that sealgrid wrote it, not from the
store's current tables.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sealgrid.service import storage
from sealgrid.service.storage import (
    MIGRATIONS,
    OLDEST_SCHEMA,
    SCHEMA_VERSION,
    StorageError,
    Store,
)

from .test_storage import postgres_url  # noqa: F401 - a fixture

CLOSED, OPEN = "2026-11-22T21:45:00Z", "2026-11-22T22:00:00Z"

#: Every schema's tables as its sealgrid created them ({blob}: BLOB or BYTEA; {norowid}:
#: SQLite's WITHOUT ROWID, from schema 2 on).
V1 = [
    "CREATE TABLE bids (period TEXT NOT NULL, pseudonym {blob} NOT NULL, seq INTEGER NOT NULL,"
    " bid {blob} NOT NULL, payload {blob} NOT NULL, receipt {blob} NOT NULL,"
    " PRIMARY KEY (period, pseudonym))",
    "CREATE TABLE participations (period TEXT NOT NULL, household TEXT NOT NULL,"
    " PRIMARY KEY (period, household))",
    "CREATE TABLE periods (period TEXT PRIMARY KEY, status TEXT NOT NULL, agreed {blob},"
    " excluded {blob}, outcome TEXT, statement {blob})",
    "CREATE TABLE issuers (period TEXT PRIMARY KEY, private_key {blob} NOT NULL)",
    "CREATE TABLE outputs (period TEXT NOT NULL, role TEXT NOT NULL, subject TEXT NOT NULL,"
    " shares {blob} NOT NULL, PRIMARY KEY (period, role, subject))",
]
V2 = [
    "CREATE TABLE meta (name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name)){norowid}",
    "CREATE TABLE bids (period TEXT NOT NULL, pseudonym {blob} NOT NULL, bid {blob} NOT NULL,"
    " payload {blob} NOT NULL, receipt {blob} NOT NULL, PRIMARY KEY (period, pseudonym))"
    "{norowid}",
    "CREATE TABLE closed_bids (period TEXT NOT NULL, pseudonym {blob} NOT NULL,"
    " bid {blob} NOT NULL, payload {blob} NOT NULL, receipt {blob} NOT NULL,"
    " PRIMARY KEY (period, pseudonym)){norowid}",
    "CREATE TABLE participations (period TEXT NOT NULL, household TEXT NOT NULL,"
    " PRIMARY KEY (period, household)){norowid}",
    "CREATE TABLE participant_sets (period TEXT NOT NULL, households {blob} NOT NULL,"
    " PRIMARY KEY (period)){norowid}",
    "CREATE TABLE periods (period TEXT NOT NULL, status TEXT NOT NULL, agreed {blob},"
    " excluded {blob}, outcome TEXT, statement {blob}, PRIMARY KEY (period)){norowid}",
    "CREATE TABLE issuers (period TEXT NOT NULL, private_key {blob} NOT NULL,"
    " PRIMARY KEY (period)){norowid}",
    "CREATE TABLE outputs (period TEXT NOT NULL, role TEXT NOT NULL, subject TEXT NOT NULL,"
    " shares {blob} NOT NULL, PRIMARY KEY (period, role, subject)){norowid}",
]
V3 = [
    *V2,
    "CREATE TABLE credentials (household TEXT NOT NULL, share {blob} NOT NULL,"
    " since TEXT NOT NULL, PRIMARY KEY (household)){norowid}",
    "CREATE TABLE readings (period TEXT NOT NULL, household TEXT NOT NULL,"
    " shares {blob} NOT NULL, PRIMARY KEY (period, household)){norowid}",
    "CREATE TABLE settlements (period TEXT NOT NULL, households {blob} NOT NULL,"
    " status TEXT NOT NULL, lines {blob} NOT NULL, void INTEGER NOT NULL,"
    " bidders INTEGER NOT NULL, price INTEGER, PRIMARY KEY (period)){norowid}",
]
V4 = [
    *V3,
    "CREATE TABLE used_challenges (nonce {blob} NOT NULL, until TEXT NOT NULL,"
    " PRIMARY KEY (nonce)){norowid}",
]
V5 = [
    *V4,
    "CREATE TABLE segments (period TEXT NOT NULL, idx INTEGER NOT NULL, members {blob} NOT NULL,"
    " result {blob}, digest {blob}, PRIMARY KEY (period, idx)){norowid}",
]
V6 = [
    *V5,
    "CREATE TABLE closed_readings (period TEXT NOT NULL, PRIMARY KEY (period)){norowid}",
]
DDL = {1: V1, 2: V2, 3: V3, 4: V4, 5: V5, 6: V6}

#: Rows of every table, by the schema that first has the table (v1's bids carry seq).
ROWS: dict[str, list[tuple[Any, ...]]] = {
    "bids_v1": [(CLOSED, b"p1", 1, b"bid1", b"pay1", b"old receipt with seq and time"),
                (OPEN, b"p2", 2, b"bid2", b"pay2", b"old receipt with seq and time")],
    "participations_v1": [(CLOSED, "h1"), (CLOSED, "h2"), (OPEN, "h3")],
    "meta": [("schema", "{version}")],
    "bids": [(OPEN, b"p2", b"bid2", b"pay2", b"receipt2")],
    "closed_bids": [(CLOSED, b"p1", b"bid1", b"pay1", b"receipt1")],
    "participations": [(OPEN, "h3")],
    "participant_sets": [(CLOSED, b"\x00\x02h1\x00\x02h2")],
    "periods": [(CLOSED, "cleared", b"\x00\x02p1", b"", '{"price": "98"}', b"statement")],
    "issuers": [(CLOSED, b"k" * 32), (OPEN, b"j" * 32)],
    "outputs": [(CLOSED, "household", "cDE", b"\x01\x02")],
    "credentials": [("h1", b"share", CLOSED)],
    "readings": [(CLOSED, "h1", b"shares")],
    "settlements": [(CLOSED, b"\x00\x02h1", '["settled"]', b"\x00" * 48, 0, 2, 98)],
    "used_challenges": [(b"\x07" * 32, OPEN)],
    "segments": [(CLOSED, 0, b"\x00\x02p1", b"result", b"d" * 32)],
    "closed_readings": [(CLOSED,)],
}
#: What schema 1's rows become: the closed period's bid sealed (its old receipt dropped), the
#: open one's kept; the closed period's participations one set.
FROM_V1: dict[str, list[tuple[Any, ...]]] = {
    "bids": [(OPEN, b"p2", b"bid2", b"pay2", b"")],
    "closed_bids": [(CLOSED, b"p1", b"bid1", b"pay1", b"")],
    "participations": [(OPEN, "h3")],
    "participant_sets": [(CLOSED, b"\x00\x02h1\x00\x02h2")],
    **{t: ROWS[t] for t in ("periods", "issuers", "outputs")},
}


class Db:
    """Plain SQL on one test database (SQLite file or PostgreSQL), beside the store."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = url.startswith("postgresql")
        if self.pg:
            import psycopg

            self.conn: Any = psycopg.connect(url, autocommit=True)
        else:
            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql.replace("?", "%s") if self.pg else sql, params)
        rows = cur.fetchall() if cur.description else []
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def build(self, version: int) -> None:
        """Make a database of schema ``version`` with rows in every table."""
        blob, norowid = ("BYTEA", "") if self.pg else ("BLOB", " WITHOUT ROWID")
        for ddl in DDL[version]:
            self.run(ddl.format(blob=blob, norowid=norowid if version > 1 else ""))
        for table in self.tables():
            for row in ROWS[f"{table}_v1" if version == 1 and f"{table}_v1" in ROWS else table]:
                row = tuple(str(version) if v == "{version}" else v for v in row)
                self.run(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)

    def tables(self) -> list[str]:
        if self.pg:
            rows = self.run("SELECT table_name FROM information_schema.tables"
                            " WHERE table_schema = current_schema()")
        else:
            rows = self.run("SELECT name FROM sqlite_master WHERE type = 'table'")
        return sorted(r[0] for r in rows)

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return sorted(self.run(f"SELECT * FROM {table}"))

    def columns(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's columns (name, type, nullability, key) as the engine reports them."""
        if self.pg:
            return {t: self.run(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?"
                " ORDER BY ordinal_position", (t,)) for t in self.tables()}
        return {t: self.run(f"PRAGMA table_info({t})") + self.run(
            "SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_master WHERE name = ?", (t,))
            for t in self.tables()}

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bids.sqlite'}"


def _fresh_columns(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The tables of a database this sealgrid makes new, at ``url`` (empty)."""
    Store(url).close()
    db = Db(url)
    try:
        return db.columns()
    finally:
        db.close()


def _opened_and_checked(url: str, version: int) -> None:
    """Build a database of schema ``version`` at ``url``, open it with the store, and check
    that it is of the current schema, its tables are a new database's, its rows are there."""
    db = Db(url)
    db.build(version)
    before = {t: db.rows(t) for t in db.tables()}
    Store(url).close()  # migrates
    assert db.run("SELECT value FROM meta WHERE name = 'schema'") == [(str(SCHEMA_VERSION),)]
    expected = FROM_V1 if version == 1 else {t: r for t, r in before.items() if t != "meta"}
    for table, rows in expected.items():
        assert db.rows(table) == rows, table
    added = set(db.tables()) - set(before) - {"meta"}
    assert all(db.rows(t) == [] for t in added - set(FROM_V1)), added  # new tables, empty
    store = Store(url)  # opening it again changes nothing; the store reads what was kept
    try:
        assert store.issuers() == dict(ROWS["issuers"])
        assert store.participants(CLOSED) == ("h1", "h2")
        assert [b.pseudonym for b in store.bids(CLOSED)] == [b"p1"]
        assert store.output(CLOSED, "household", "cDE") == b"\x01\x02"
        assert store.add_reading(OPEN, "h3", b"new") == "stored"  # the newest tables work
        assert store.use_challenge(b"nonce", OPEN) and not store.use_challenge(b"nonce", OPEN)
        store.add_segment(OPEN, 0, [b"p2"])
        assert [s.members for s in store.segments(OPEN)] == [(b"p2",)]
        store.close_readings(OPEN)
        assert store.add_reading(OPEN, "h4", b"late") == "closed"
    finally:
        store.close()
    db.close()


@pytest.mark.parametrize("version", range(OLDEST_SCHEMA, SCHEMA_VERSION))
def test_an_older_database_is_migrated_with_its_rows(tmp_path: Path, version: int) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    _opened_and_checked(url, version)
    # ... into the very tables a new database has (names, columns, keys, no rowid)
    db = Db(url)
    assert db.columns() == _fresh_columns(f"sqlite:///{tmp_path / 'new.sqlite'}")
    db.close()


def test_the_migrations_lead_step_by_step_to_this_schema() -> None:
    assert [m.to for m in MIGRATIONS] == list(range(OLDEST_SCHEMA + 1, SCHEMA_VERSION + 1))
    assert set(DDL) == set(range(OLDEST_SCHEMA, SCHEMA_VERSION))  # a test DDL for each


def test_a_failed_migration_leaves_the_database_as_it_was(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step runs in the one transaction: a step that fails undoes the steps before."""
    db = Db(sqlite_url)
    db.build(2)
    before = {t: db.rows(t) for t in db.tables()}
    broken = replace(MIGRATIONS[-1], statements=lambda store, cur: [
        ("CREATE TABLE request_counts (idx BLOB)", ()), ("INSERT INTO nowhere VALUES (1)", ())])
    monkeypatch.setattr(storage, "MIGRATIONS", (*MIGRATIONS[:-1], broken))
    with pytest.raises(StorageError, match="no such table: nowhere"):
        Store(sqlite_url)
    assert {t: db.rows(t) for t in db.tables()} == before  # no step-3 table, still schema 2
    monkeypatch.undo()
    Store(sqlite_url).close()  # the real steps then succeed
    assert {"used_challenges", "segments", "closed_readings", "request_counts"} <= set(
        db.tables())
    db.close()


def test_a_database_of_a_newer_schema_is_refused_untouched(sqlite_url: str) -> None:
    Store(sqlite_url).close()
    db = Db(sqlite_url)
    db.run("UPDATE meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION + 3),))
    db.run("DROP TABLE used_challenges")  # a newer schema is not ours to complete
    before = {t: db.rows(t) for t in db.tables()}
    with pytest.raises(StorageError) as refused:
        Store(sqlite_url)
    assert str(refused.value) == (
        f"{sqlite_url.removeprefix('sqlite:///')}: database schema {SCHEMA_VERSION + 3}, newer"
        f" than this sealgrid (schema {SCHEMA_VERSION}); upgrade sealgrid (a database is opened"
        " only by a sealgrid of its schema or later)")
    assert {t: db.rows(t) for t in db.tables()} == before
    db.close()


def test_a_newer_database_stops_serve_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sealgrid.cli import main
    from sealgrid.service.local import free_port_range
    from sealgrid.service.setup import init_data_dir

    init_data_dir(tmp_path / "d", households=1, base_port=free_port_range(3))
    url = f"sqlite:///{tmp_path / 'd' / 'server-0' / 'bids.sqlite'}"
    Store(url).close()
    Db(url).run("UPDATE meta SET value = '99' WHERE name = 'schema'")
    import logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert main(["serve", "--config", str(tmp_path / "d" / "server-0" / "server.toml")]) == 1
    finally:
        root.handlers[:], root.level = saved
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "database schema 99, newer than this sealgrid" in err, err


def test_postgresql_databases_are_migrated_once_by_workers_starting_together(
    postgres_url: str,  # noqa: F811 - the fixture
) -> None:
    """Schema 3 on PostgreSQL; two stores opening it at once (two workers of one server):
    both open it, one migrates, the rows stay."""
    url = postgres_url
    db = Db(url)
    db.build(3)
    before = {t: db.rows(t) for t in db.tables() if t != "meta"}
    opened: list[Store | BaseException] = []

    def open_store() -> None:
        try:
            opened.append(Store(url))
        except BaseException as exc:  # reported below
            opened.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(s, Store) for s in opened) and len(opened) == 2, opened
    for s in opened:
        assert isinstance(s, Store)
        s.close()
    assert db.run("SELECT value FROM meta WHERE name = 'schema'") == [(str(SCHEMA_VERSION),)]
    assert {t: db.rows(t) for t in before} == before
    assert db.rows("used_challenges") == []
    db.close()
    _check_pg_tables(url)


def _check_pg_tables(url: str) -> None:
    """The migrated PostgreSQL database has a new database's columns (made in a schema of
    its own beside it)."""
    db = Db(url)
    migrated = db.columns()
    db.run("CREATE SCHEMA fresh")
    db.close()
    fresh = _fresh_columns(url + "?options=-csearch_path%3Dfresh")
    assert migrated == fresh

