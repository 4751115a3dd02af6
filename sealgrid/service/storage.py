"""Durable storage of bids, periods and outputs; assumes one server process owns its database.

SQLite (stdlib ``sqlite3``, WAL journal, ``synchronous=FULL``) by default; PostgreSQL when
the URL says ``postgresql://`` (needs ``psycopg`` 3). The SQL is the same for both apart from
the placeholder style and the binary column type. :meth:`Store.add` commits before it
returns, so a receipt is only ever handed out for a bid that survives a crash; the server hands
it many bids (and participations) arriving together, committed in one transaction (group commit).

What is kept: each accepted bid as the signed pseudonymous message, its payload and the
receipt (no household id); separately, which households got a token for which period (one
per household and period); and each period's issuer key (a VOPRF secret scalar: a database
holds secrets). Nothing links a household to its bid: the blinded evaluation hides it,
and nothing stored keeps the order or time of arrival (docs/privacy.md, "Unlinkability"):

* every table is keyed by what it stores — bids by (period, pseudonym), participations by
  (period, household) — with no serial id, no sequence number and no time finer than the
  period; SQLite tables are ``WITHOUT ROWID`` (a table scan follows the key, not arrival);
* every read sorts by the key;
* the engine's own bookkeeping still follows arrival while rows are being added: SQLite's
  pages (which cell, which overflow page was written first) and its write-ahead log, read as
  raw bytes; PostgreSQL's ``xmin`` (inserting transaction) and ``ctid`` (heap position), which
  any SQL reader sees, and its heap order, which a plain scan returns. So when a period's
  gate closes (nothing of the period is written afterwards) the period is *sealed*
  (:meth:`Store.seal`, in steps of at most :data:`SEAL_ROWS` rows; or in the transaction of
  :meth:`Store.set_period` recording ``closed``): its bids are copied in key order into
  ``closed_bids``, its participations become one sorted set of households
  (``participant_sets``), and the old rows are deleted one by one in a random order. SQLite
  overwrites deleted content with zeros (``secure_delete``) and, after the last commit,
  empties its write-ahead log. PostgreSQL keeps dead row versions on disk until ``VACUUM``
  (no SQL reader sees them; a reader of its raw files does).

While a period is open its rows are where arrival put them: what the server could also see by
watching its requests live (docs/privacy.md).

Every database records its schema version (:data:`SCHEMA_VERSION`) in its ``meta`` table.
When a server opens an older one, the forward migrations of :data:`MIGRATIONS` from its
version on run in order, all in one transaction with the new version's record (a migration
that fails leaves the database as it was); a database of a newer schema is refused,
untouched. A database of the first schema (``bids.seq``, receipts with ``seq`` and
``accepted_at``, rowid tables; recognised by having no ``meta`` table) is migrated so: rows
are copied in key order, ``seq`` goes, the stored receipts of those bids are dropped (they
carried the arrival order; the households keep theirs), and the participations of every
period whose gate has closed become sets. A SQLite file is then rebuilt (``VACUUM``) so that
no page still holds the old order.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import logging
import random
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sealgrid.service.intake import Participation, StoredBid

log = logging.getLogger("sealgrid.storage")

#: The schema's version, kept in the ``meta`` table (row ``schema``). 1 had no ``meta`` table
#: (rowid tables, ``bids.seq``); 2 keeps no order of arrival; 3 adds the settlement's tables
#: (credentials, readings, settlements); 4 adds ``used_challenges`` (several intake workers on
#: one database); 5 adds ``segments`` (bids validated in segments while their period is
#: open); 6 adds ``closed_readings``; 7 adds ``request_counts`` (several intake workers'
#: metrics). An older database is brought forward by :data:`MIGRATIONS` when it is opened; a
#: newer one is refused.
SCHEMA_VERSION = 7
#: The most bids (or participations) a period's seal moves in one transaction
#: (:meth:`Store.seal_steps`): a server's other writes wait for one such step, not for the
#: whole seal (21 s at 100,000 bids in one transaction on a 2-core machine).
SEAL_ROWS = 1000

#: Households' output shares are stored this many to a row of ``outputs`` (role
#: ``household-block``, subject the hex of the block's first pseudonym, the blocks in key
#: order), each entry its pseudonym, the length of its share and the share, 64 bytes: a
#: city's gate writes 200 rows, not 100,000 (0.5 s of its statement's transaction on a
#: 2-core machine). A household's read takes the block whose first pseudonym is the last at
#: or before its own and finds its entry by bisection.
OUTPUT_BLOCK = 512
_BLOCK_ROLE = "household-block"
_ENTRY = 64  # a 32-byte pseudonym, one byte of length, a share of up to 31 bytes


def _pseudonym(subject: str) -> bytes | None:
    """The 32 bytes of a household subject in canonical base64, or None."""
    try:
        raw = base64.b64decode(subject, validate=True)
    except (ValueError, TypeError):
        return None
    if len(raw) != 32 or base64.b64encode(raw).decode() != subject:
        return None
    return raw


def _blocks(households: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str, bytes]]:
    """The ``outputs`` rows of households' ``(pseudonym, shares)``: blocks of
    :data:`OUTPUT_BLOCK` in key order (a share that fits no entry keeps a row of its own,
    under the pseudonym in base64 as a household asks for it)."""
    rows, entries = [], []
    for key, shares in households:
        if len(key) != 32:
            raise ValueError("a household output's subject is a 32-byte pseudonym")
        if len(shares) > _ENTRY - 33:
            rows.append(("household", base64.b64encode(key).decode(), shares))
        else:
            entries.append(key + bytes([len(shares)]) + shares.ljust(_ENTRY - 33, b"\0"))
    entries.sort()
    for i in range(0, len(entries), OUTPUT_BLOCK):
        block = entries[i:i + OUTPUT_BLOCK]
        rows.append((_BLOCK_ROLE, block[0][:32].hex(), b"".join(block)))
    return rows


def _in_block(block: bytes, key: bytes) -> bytes | None:
    """The share of pseudonym ``key`` in a stored block, or None."""
    lo, hi = 0, len(block) // _ENTRY
    while lo < hi:
        mid = (lo + hi) // 2
        if block[mid * _ENTRY:mid * _ENTRY + 32] < key:
            lo = mid + 1
        else:
            hi = mid
    at = lo * _ENTRY
    if block[at:at + 32] != key:
        return None
    return block[at + 33:at + 33 + block[at + 32]]


#: The oldest schema a database may have and still be opened (and migrated).
OLDEST_SCHEMA = 1

#: Every table: its columns and key, and the key that every read of it sorts by. Bids and
#: participations of a period whose gate is open are in ``bids`` and ``participations``; at
#: the gate they move to ``closed_bids`` and ``participant_sets`` (see :meth:`Store._seal`).
TABLES: dict[str, tuple[str, str]] = {
    "meta": ("name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name)", "name"),
    "bids": (
        "period TEXT NOT NULL, pseudonym {blob} NOT NULL, bid {blob} NOT NULL,"
        " payload {blob} NOT NULL, receipt {blob} NOT NULL, PRIMARY KEY (period, pseudonym)",
        "period, pseudonym",
    ),
    "closed_bids": (
        "period TEXT NOT NULL, pseudonym {blob} NOT NULL, bid {blob} NOT NULL,"
        " payload {blob} NOT NULL, receipt {blob} NOT NULL, PRIMARY KEY (period, pseudonym)",
        "period, pseudonym",
    ),
    "participations": (
        "period TEXT NOT NULL, household TEXT NOT NULL, PRIMARY KEY (period, household)",
        "period, household",
    ),
    "participant_sets": (  # the households, sorted, length-prefixed
        "period TEXT NOT NULL, households {blob} NOT NULL, PRIMARY KEY (period)",
        "period",
    ),
    "periods": (
        "period TEXT NOT NULL, status TEXT NOT NULL, agreed {blob}, excluded {blob},"
        " outcome TEXT, statement {blob}, PRIMARY KEY (period)",
        "period",
    ),
    "issuers": (
        "period TEXT NOT NULL, private_key {blob} NOT NULL, PRIMARY KEY (period)",
        "period",
    ),
    "outputs": (
        "period TEXT NOT NULL, role TEXT NOT NULL, subject TEXT NOT NULL,"
        " shares {blob} NOT NULL, PRIMARY KEY (period, role, subject)",
        "period, role, subject",
    ),
    # the settlement (named: households enrol and meters read under their names)
    "credentials": (  # a household's share of κ, and the period in which it enrolled
        "household TEXT NOT NULL, share {blob} NOT NULL, since TEXT NOT NULL,"
        " PRIMARY KEY (household)",
        "household",
    ),
    "readings": (
        "period TEXT NOT NULL, household TEXT NOT NULL, shares {blob} NOT NULL,"
        " PRIMARY KEY (period, household)",
        "period, household",
    ),
    # periods whose reading set was read after their deadline (the settlement's): no reading
    # of them is stored afterwards, by this process or by another worker of the server
    "closed_readings": ("period TEXT NOT NULL, PRIMARY KEY (period)", "period"),
    # challenges used by signed requests, while several intake workers share the database
    # (a challenge is good at any worker, once): ``nonce`` is its SHA-256 (the challenge
    # itself starts with its expiry to the second); ``until`` the end of the period in which
    # it expires (no time finer than the period); rows are pruned after it
    "used_challenges": (
        "nonce {blob} NOT NULL, until TEXT NOT NULL, PRIMARY KEY (nonce)",
        "nonce",
    ),
    # segments of a period still open, validated jointly before its gate (docs/service.md,
    # "Streaming"): members sorted, length-prefixed; result the protocol's file of this
    # server's part, digest the SHA-256 every server compares at the gate (both empty until
    # the validation is done). Deleted when the period is sealed: which segment a bid was in
    # tells roughly when it arrived.
    "segments": (
        "period TEXT NOT NULL, idx INTEGER NOT NULL, members {blob} NOT NULL,"
        " result {blob}, digest {blob}, PRIMARY KEY (period, idx)",
        "period, idx",
    ),
    # with several intake workers: the requests every worker answered, as its metrics count
    # them (sealgrid.service.metrics), by the period-long window in which they were answered
    # (``period``: the window's start; the empty name: the older windows, summed) and by what
    # was counted (``name``: its canonical JSON list, e.g. route, method and status), written
    # when the window has ended: the numbers ``/metrics`` publishes at each period boundary
    "request_counts": (
        "period TEXT NOT NULL, name TEXT NOT NULL, count BIGINT NOT NULL,"
        " PRIMARY KEY (period, name)",
        "period, name",
    ),
    "settlements": (  # households: the registry's order; status: JSON list per household
        "period TEXT NOT NULL, households {blob} NOT NULL, status TEXT NOT NULL,"
        " lines {blob} NOT NULL, void INTEGER NOT NULL, bidders INTEGER NOT NULL,"
        " price INTEGER, PRIMARY KEY (period)",
        "period",
    ),
}

_BID = "period, pseudonym, bid, payload, receipt"
#: A request count inserted where one is stored already: added to it.
_ADD_COUNT = (" ON CONFLICT (period, name) DO UPDATE"
              " SET count = request_counts.count + excluded.count")


def _columns(table: str) -> str:
    """The column names of one of :data:`TABLES`, comma-separated."""
    definitions = TABLES[table][0].split(", PRIMARY KEY")[0]
    return ", ".join(d.split()[0] for d in definitions.split(", "))

#: Period statuses, in order. ``closed``: gate passed, bid set frozen; ``agreed``: the
#: servers' common bid set fixed; ``cleared`` / ``failed``: outputs (or the reason) stored.
STATUSES = ("closed", "agreed", "cleared", "failed")


@dataclass(frozen=True)
class SettlementRecord:
    """One settled period on this server: the households (registry order), their public
    statuses and this server's shares of their lines (H × 6 little-endian u64)."""

    period: str
    households: tuple[str, ...]
    status: tuple[str, ...]
    lines: bytes
    void: int
    bidders: int
    price: int | None


@dataclass(frozen=True)
class Stored:
    """What one accepted request stores (all or nothing): bids, participations, and the
    challenge it used (with several workers), with the end of its expiry period."""

    bids: Sequence[StoredBid] = ()
    participations: Sequence[Participation] = ()
    nonce: bytes = b""
    until: str = ""


def _nonce_key(nonce: bytes) -> bytes:
    """What ``used_challenges`` keeps of a challenge: its SHA-256, not the challenge, whose
    first bytes are its expiry to the second (a time finer than the period)."""
    return hashlib.sha256(nonce).digest()


def _is_conflict(exc: Exception) -> bool:
    """Whether a database error is a key already stored (SQLite's or PostgreSQL's)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    return type(exc).__name__ in ("UniqueViolation", "IntegrityError")


class StorageError(Exception):
    """The database could not be opened or written."""


@dataclass(frozen=True)
class SegmentRecord:
    """One segment of a period still open: its members (sorted) and, once validated, this
    server's result file and the digest the servers compare."""

    period: str
    index: int
    members: tuple[bytes, ...]
    result: bytes
    digest: bytes

    @property
    def done(self) -> bool:
        """Whether its validation finished here."""
        return bool(self.digest)


@dataclass(frozen=True)
class PeriodRecord:
    """What a server has stored about one period after its gate closed."""

    period: str
    status: str
    agreed: tuple[bytes, ...]
    excluded: tuple[bytes, ...]
    outcome: str
    statement: bytes


def _join(items: Sequence[bytes]) -> bytes:
    if items and all(len(x) == 32 for x in items):  # pseudonyms: one length, one prefix
        return b"\x00\x20" + b"\x00\x20".join(items)
    return b"".join(len(x).to_bytes(2, "big") + x for x in items)


def _split(blob: bytes | None) -> tuple[bytes, ...]:
    data = bytes(blob or b"")
    n = len(data) // 34
    if data and len(data) == 34 * n and data[0::34] == bytes(n) and data[1::34] == b" " * n:
        return tuple(data[i + 2:i + 34] for i in range(0, len(data), 34))  # pseudonyms
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 2], "big")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return tuple(out)


#: The tables of schema 2 (their columns have not changed since).
_V2_TABLES = ("meta", "bids", "closed_bids", "participations", "participant_sets", "periods",
              "issuers", "outputs")
#: The prefix of a period's reading lock (PostgreSQL's advisory lock on its hash; a bid's
#: lock is the period's name alone).
_READINGS_LOCK = "readings "
#: PostgreSQL's advisory lock held while a database's schema is read and brought forward.
_SCHEMA_LOCK = 0x5EA16E1D


@dataclass(frozen=True)
class Migration:
    """One forward step of the schema: to version ``to`` from the one before, by the
    statements ``statements(store, cursor)`` returns (run in the opening transaction)."""

    to: int
    what: str
    statements: Callable[[Store, Any], Sequence[tuple[str, Sequence[Any]]]]


def _created(*names: str) -> Callable[[Store, Any], Sequence[tuple[str, Sequence[Any]]]]:
    """A migration that adds the tables ``names``, empty (as :data:`TABLES` has them: a later
    schema that changes their columns must give this step their old definition)."""
    return lambda store, cur: [store._create(name) for name in names]


#: Every forward migration, in order; the last one's ``to`` is :data:`SCHEMA_VERSION`. A new
#: schema adds its step here (and its tables or columns to :data:`TABLES`, which a new
#: database is made of).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "no order of arrival (tables by key, no seq, old receipts dropped, closed"
              " periods' participations as sets)", lambda store, cur: store._from_v1(cur)),
    Migration(3, "the settlement's tables (credentials, readings, settlements)",
              _created("credentials", "readings", "settlements")),
    Migration(4, "used_challenges (several intake workers)", _created("used_challenges")),
    Migration(5, "segments (validation while a period is open)", _created("segments")),
    Migration(6, "closed_readings (no reading after a period's set was read)",
              _created("closed_readings")),
    Migration(7, "request_counts (several intake workers' metrics, summed)",
              _created("request_counts")),
)


def _where(url: str) -> str:
    """A database's name for messages: its SQLite file, or its PostgreSQL URL without the
    password."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Many(list[Sequence[Any]]):
    """The parameters of one statement run once per row (``executemany``) in a write."""


class Store:
    """A repository over one SQLite file or one PostgreSQL database."""

    def __init__(self, url: str, *, reads_only: bool = False) -> None:
        """Open ``url`` and create or migrate its schema; ``reads_only``: a second
        connection for reads only (:meth:`reader`), which neither migrates nor writes."""
        self.url = url
        self.reads_only = reads_only
        self._snapshot = False  # inside snapshot(): reads do not end their transaction
        self._pg = url.startswith(("postgresql://", "postgres://"))
        #: set when several intake workers share this database (PostgreSQL): no bid of a
        #: period is stored once its gate's record is (see :meth:`add_batch`)
        self.guard_closed = False
        try:
            if self._pg:
                import psycopg

                self._conn: Any = psycopg.connect(url)
                if reads_only:
                    self._conn.read_only = True
            else:
                path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                if reads_only:  # the writer set the file's WAL mode, which readers share
                    self._conn.execute("PRAGMA query_only=ON")
                else:
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute("PRAGMA synchronous=FULL")
                    self._conn.execute("PRAGMA secure_delete=ON")  # deleted content is zeroed
        except (sqlite3.Error, OSError, ImportError) as exc:
            raise StorageError(f"cannot open the database {_where(url)}: {exc}") from exc
        except Exception as exc:  # psycopg errors, without importing it here
            raise StorageError(f"cannot open the database {_where(url)}: {exc}") from exc
        if reads_only:
            return
        try:
            self._schema()
        except StorageError:
            self._conn.close()
            raise
        except Exception as exc:
            self._conn.close()
            raise StorageError(f"cannot set up the database {_where(url)}: {exc}") from exc

    # -- schema

    def _create(self, name: str, as_name: str | None = None) -> tuple[str, Sequence[Any]]:
        columns = TABLES[name][0].format(blob="BYTEA" if self._pg else "BLOB")
        without_rowid = "" if self._pg else " WITHOUT ROWID"
        return f"CREATE TABLE IF NOT EXISTS {as_name or name} ({columns}){without_rowid}", ()

    def _schema(self) -> None:
        """Create the tables of a new database, or bring an older one forward (one
        transaction; see :data:`MIGRATIONS`), or refuse one of a newer schema."""
        cur = self._conn.cursor()
        try:
            if self._pg:  # workers of one server may start together: one migrates
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            else:
                cur.execute("BEGIN IMMEDIATE")
            version = self._version(cur)
            if version is not None and version > SCHEMA_VERSION:
                raise StorageError(
                    f"{_where(self.url)}: database schema {version}, newer than this sealgrid"
                    f" (schema {SCHEMA_VERSION}); upgrade sealgrid (a database is opened only"
                    " by a sealgrid of its schema or later)")
            if version is None:  # a new database
                for name in TABLES:
                    cur.execute(*self._create(name))
            done = [m for m in MIGRATIONS if version is not None and m.to > version]
            for migration in done:
                for sql, params in migration.statements(self, cur):
                    cur.execute(self._sql(sql), params)
            if version != SCHEMA_VERSION:
                cur.execute(self._sql("INSERT INTO meta (name, value) VALUES ('schema', ?)"
                                      " ON CONFLICT (name) DO UPDATE SET value = excluded.value"),
                            (str(SCHEMA_VERSION),))
            self._conn.commit() if self._pg else cur.execute("COMMIT")
        except Exception:
            self._conn.rollback() if self._pg else self._conn.execute("ROLLBACK")
            raise
        if not done:
            return
        if version == 1 and not self._pg:  # rebuild the file: no page may keep the old order
            self._conn.execute("VACUUM")
            self._truncate_wal()
        log.warning(
            "migrated the database to schema %d from schema %d (%s): %s", SCHEMA_VERSION,
            version, _where(self.url), "; ".join(f"{m.to}: {m.what}" for m in done))

    def _version(self, cur: Any) -> int | None:
        """The schema of the open database (inside the migration's transaction): None for a
        new one.

        Raises:
            StorageError: a database of no known schema, or older than :data:`OLDEST_SCHEMA`.
        """
        if self._pg:
            cur.execute("SELECT table_name FROM information_schema.tables"
                        " WHERE table_schema = current_schema()")
        else:
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {r[0] for r in cur.fetchall()}
        if "meta" in tables:
            cur.execute("SELECT value FROM meta WHERE name = 'schema'")
            row = cur.fetchone()
            if row is None:  # tables made, the record not: a new database (as before)
                return None
            version = int(row[0])
        elif "bids" in tables:
            if not {"participations", "periods", "issuers", "outputs"} <= tables:
                raise StorageError(
                    f"{_where(self.url)}: the database is of no known schema (it has a 'bids'"
                    " table but not the rest); give the server an empty database")
            version = 1
        else:
            return None
        if version < OLDEST_SCHEMA:
            raise StorageError(
                f"{_where(self.url)}: database schema {version} is older than the oldest this"
                f" sealgrid migrates ({OLDEST_SCHEMA})")
        return version

    def _from_v1(self, cur: Any) -> list[tuple[str, Sequence[Any]]]:
        """Schema 1 → 2: copy a first-schema database into the second schema's tables, in key
        order (see the module's docstring); its participations of closed periods as sets."""
        v1 = ("bids", "participations", "periods", "issuers", "outputs")
        closed: dict[str, list[bytes]] = {}
        cur.execute("SELECT period, household FROM participations"
                    " WHERE period IN (SELECT period FROM periods) ORDER BY period, household")
        for period, household in cur.fetchall():
            closed.setdefault(period, []).append(household.encode())
        done = "period IN (SELECT period FROM periods_v1)"
        statements: list[tuple[str, Sequence[Any]]] = [
            (f"ALTER TABLE {t} RENAME TO {t}_v1", ()) for t in v1
        ]
        statements += [self._create(name) for name in _V2_TABLES]
        statements += [  # the old receipts go: they carried seq and accepted_at
            (
                f"INSERT INTO {into} ({_BID}) SELECT period, pseudonym, bid, payload, ?"
                f" FROM bids_v1 WHERE {cond} ORDER BY period, pseudonym",
                (b"",),
            )
            for into, cond in (("bids", f"NOT {done}"), ("closed_bids", done))
        ]
        statements.append(
            (
                "INSERT INTO participations (period, household) SELECT period, household"
                f" FROM participations_v1 WHERE NOT {done} ORDER BY period, household",
                (),
            )
        )
        statements += [
            ("INSERT INTO participant_sets (period, households) VALUES (?, ?)", (p, _join(h)))
            for p, h in sorted(closed.items())
        ]
        for name in ("periods", "issuers", "outputs"):
            columns = _columns(name)
            statements.append(
                (
                    f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {name}_v1"
                    f" ORDER BY {TABLES[name][1]}",
                    (),
                )
            )
        statements += [(f"DROP TABLE {t}_v1", ()) for t in v1]
        return statements

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._pg else text

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        cur = self._conn.cursor()
        try:
            if not self._pg:
                cur.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                if isinstance(params, Many):
                    cur.executemany(self._sql(sql), params)
                else:
                    cur.execute(self._sql(sql), params)
            self._conn.commit() if self._pg else cur.execute("COMMIT")
        except Exception as exc:
            self._conn.rollback() if self._pg else self._conn.execute("ROLLBACK")
            raise StorageError(f"write failed: {exc}") from exc

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Make the reads inside see one committed state: one read transaction (SQLite's
        under its write-ahead log; PostgreSQL's at ``REPEATABLE READ``), for counts that must
        agree while another connection writes. Inside one already, it adds nothing."""
        if self._snapshot:
            yield
            return
        if self._pg:
            self._conn.commit()  # what came before ends; the snapshot's statement starts one
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        else:
            self._conn.execute("BEGIN")
        self._snapshot = True
        try:
            yield
        finally:
            self._snapshot = False
            self._conn.commit() if self._pg else self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), params)
        rows = cur.fetchall()
        if self._pg and not self._snapshot:
            self._conn.commit()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def reader(self) -> Store:
        """A second connection to this database, for reads only: under SQLite's write-ahead
        log (and PostgreSQL's snapshots) it reads the last committed state while this one
        holds a long write, such as a period's seal. Use each from one thread at a time."""
        return Store(self.url, reads_only=True)

    # -- bids

    def add(
        self, bids: Sequence[StoredBid] = (), participations: Sequence[Participation] = ()
    ) -> None:
        """Store accepted bids and granted participations in one committed transaction.

        Raises:
            StorageError: nothing was stored (a key was stored already, or the write failed).
        """
        if self.add_batch([Stored(bids, participations)]) != [None]:
            raise StorageError("a bid or participation is stored already; nothing was stored")

    def add_issuer(self, period: str, secret: bytes) -> bytes:
        """Store a period's issuer key (before any evaluation under it leaves the server) and
        return the one stored: another worker's, if it stored one first."""
        self._write([("INSERT INTO issuers (period, private_key) VALUES (?, ?)"
                      " ON CONFLICT DO NOTHING", (period, secret))])
        return bytes(self._read("SELECT private_key FROM issuers WHERE period = ?",
                                (period,))[0][0])

    def issuer(self, period: str) -> bytes | None:
        """Return the stored issuer key of ``period``, if any."""
        rows = self._read("SELECT private_key FROM issuers WHERE period = ?", (period,))
        return bytes(rows[0][0]) if rows else None

    def add_batch(self, items: Sequence[Stored]) -> list[str | None]:
        """Store several requests' records in one committed transaction (group commit), each
        request all or nothing: return, per item, ``None`` (stored) or why it was not —
        ``"conflict"`` (a key already stored: the pseudonym's bid, the household's
        participation in a period, or the challenge), or ``"closed"`` (with
        :attr:`guard_closed`: the period's gate was closed in the database first).

        With several intake workers on one PostgreSQL database the keys are what makes one
        pseudonym count once and one token per household and period; :attr:`guard_closed`
        makes a bid committed after the gate's record impossible (each transaction holds a
        shared advisory lock per period, which recording ``closed`` takes exclusively).

        Raises:
            StorageError: nothing was stored.
        """
        cur = self._conn.cursor()
        out: list[str | None] = []
        locked: set[str] = set()
        try:
            if not self._pg:
                cur.execute("BEGIN IMMEDIATE")
            for item in items:
                cur.execute("SAVEPOINT item")
                try:
                    why = self._add_item(cur, item, locked)
                except Exception as exc:
                    if not _is_conflict(exc):
                        raise
                    why = "conflict"
                if why is None:
                    cur.execute("RELEASE SAVEPOINT item")
                else:
                    cur.execute("ROLLBACK TO SAVEPOINT item")
                    cur.execute("RELEASE SAVEPOINT item")
                out.append(why)
            self._conn.commit() if self._pg else cur.execute("COMMIT")
        except Exception as exc:
            self._conn.rollback() if self._pg else self._conn.execute("ROLLBACK")
            raise StorageError(f"write failed: {exc}") from exc
        return out

    def _add_item(self, cur: Any, item: Stored, locked: set[str]) -> str | None:
        for b in item.bids:
            if self.guard_closed and self._pg:
                if b.period not in locked:
                    cur.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))",
                                (b.period,))
                    locked.add(b.period)
                cur.execute(
                    f"INSERT INTO bids ({_BID}) SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS"
                    " (SELECT 1 FROM periods WHERE period = %s)",
                    (b.period, b.pseudonym, b.bid, b.payload, b.receipt, b.period))
                if cur.rowcount != 1:
                    return "closed"
            else:
                cur.execute(self._sql(f"INSERT INTO bids ({_BID}) VALUES (?, ?, ?, ?, ?)"),
                            (b.period, b.pseudonym, b.bid, b.payload, b.receipt))
        for p in item.participations:
            cur.execute(self._sql("INSERT INTO participations (period, household)"
                                  " VALUES (?, ?)"), (p.period, p.household))
        if item.nonce:
            cur.execute(self._sql("INSERT INTO used_challenges (nonce, until) VALUES (?, ?)"),
                        (_nonce_key(item.nonce), item.until))
        return None

    def unrecorded_issuer_periods(self) -> list[str]:
        """Periods with an issuer key but no record yet (tokens were issued; not finished)."""
        rows = self._read("SELECT period FROM issuers WHERE period NOT IN"
                          " (SELECT period FROM periods) ORDER BY period")
        return [r[0] for r in rows]

    def use_challenge(self, nonce: bytes, until: str) -> bool:
        """Record a challenge as used (several workers); return False if it already was."""
        return self.add_batch([Stored(nonce=nonce, until=until)]) == [None]

    def challenge_used(self, nonce: bytes) -> bool:
        """Whether a challenge's use is recorded."""
        return bool(self._read("SELECT 1 FROM used_challenges WHERE nonce = ?",
                               (_nonce_key(nonce),)))

    def prune_challenges(self, before: str) -> None:
        """Forget used challenges whose period of expiry ended before ``before``."""
        self._write([("DELETE FROM used_challenges WHERE until < ?", (before,))])

    def add_request_counts(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Add one worker's counts of ended windows (``{window's period: {name: count}}``) to
        what the server's workers counted before (one transaction)."""
        rows = Many((period, name, n) for period, named in sorted(counts.items())
                    for name, n in sorted(named.items()))
        self._write([("INSERT INTO request_counts (period, name, count) VALUES (?, ?, ?)"
                      + _ADD_COUNT, rows)])

    def request_counts(self, until: str, window: str) -> tuple[dict[str, int], dict[str, int]]:
        """Every worker's counts summed: over the windows that started before ``until`` (the
        older windows' row too), and in the window ``window``."""
        with self.snapshot():
            total = self._read("SELECT name, SUM(count) FROM request_counts WHERE period < ?"
                               " GROUP BY name", (until,))
            last = self._read("SELECT name, count FROM request_counts WHERE period = ?",
                              (window,))
        return ({name: int(n) for name, n in total}, {name: int(n) for name, n in last})

    def fold_request_counts(self, before: str) -> None:
        """Sum the windows that started before ``before`` into the row of older windows (the
        empty period name): the table keeps a few windows, not one a period forever.

        On PostgreSQL one statement deletes the rows and adds what it deleted, so a worker's
        addition to one of them that commits meanwhile is deleted and added, not lost (two
        statements would see two snapshots); SQLite has one writer at a time."""
        older = "period <> '' AND period < ?"
        if self._pg:
            self._write([
                (f"WITH gone AS (DELETE FROM request_counts WHERE {older}"
                 " RETURNING name, count) INSERT INTO request_counts (period, name, count)"
                 f" SELECT '', name, SUM(count) FROM gone GROUP BY name{_ADD_COUNT}", (before,))])
            return
        self._write([
            ("INSERT INTO request_counts (period, name, count) SELECT '', name, SUM(count)"
             f" FROM request_counts WHERE {older} GROUP BY name{_ADD_COUNT}", (before,)),
            (f"DELETE FROM request_counts WHERE {older}", (before,)),
        ])

    def pseudonyms(self, period: str) -> tuple[bytes, ...]:
        """Return the stored pseudonyms of ``period``'s bids, sorted."""
        rows = self._read(
            "SELECT pseudonym FROM bids WHERE period = ? UNION ALL"
            " SELECT pseudonym FROM closed_bids WHERE period = ? ORDER BY pseudonym",
            (period, period))
        return tuple(bytes(r[0]) for r in rows)

    def stored_bid(self, period: str, pseudonym: bytes) -> bytes | None:
        """Return the stored wire bytes of one bid, if any."""
        return self._bid_column("bid", period, pseudonym)

    def participates(self, period: str, household: str) -> bool:
        """Whether ``household`` holds its token for ``period`` here."""
        return household in self.participants(period)

    def closed_counts(self) -> dict[str, int]:
        """The public counts of ``GET /v1/info`` from the database: periods with a record
        (their gate has closed), and the bids in them."""
        with self.snapshot():  # a period recorded, its bids not yet counted: never
            (periods,), = self._read("SELECT COUNT(*) FROM periods")
            (bids,), = self._read(
                "SELECT (SELECT COUNT(*) FROM closed_bids WHERE period IN (SELECT period FROM"
                " periods)) + (SELECT COUNT(*) FROM bids WHERE period IN (SELECT period FROM"
                " periods))")
        return {"closed_periods": int(periods), "bids_in_closed_periods": int(bids)}

    def issuers(self) -> dict[str, bytes]:
        """Return every stored issuer key by period (a VOPRF secret scalar, 32 bytes; a PEM RSA
        key in a database of the first token scheme)."""
        return dict(self._read("SELECT period, private_key FROM issuers ORDER BY period"))

    def bids(self, period: str) -> list[StoredBid]:
        """Return the stored bids of ``period``, sorted by pseudonym."""
        rows = self._read(
            f"SELECT {_BID} FROM bids WHERE period = ?"
            f" UNION ALL SELECT {_BID} FROM closed_bids WHERE period = ? ORDER BY pseudonym",
            (period, period),
        )
        return [StoredBid(*r) for r in rows]

    def receipt(self, period: str, pseudonym: bytes) -> bytes | None:
        """Return the stored receipt of one bid, if any (empty for a bid migrated from the
        first schema, whose receipt carried the order of arrival and was dropped)."""
        return self._bid_column("receipt", period, pseudonym)

    def _bid_column(self, column: str, period: str, pseudonym: bytes) -> bytes | None:
        """One column of one stored bid, open or sealed, if the bid is stored."""
        rows = self._read(
            f"SELECT {column} FROM bids WHERE period = ? AND pseudonym = ? UNION ALL"
            f" SELECT {column} FROM closed_bids WHERE period = ? AND pseudonym = ?",
            (period, pseudonym, period, pseudonym),
        )
        return bytes(rows[0][0]) if rows else None

    def load_state(self) -> tuple[list[StoredBid], list[Participation], set[str]]:
        """Return what the intake machine needs after a restart: bids, participations, closed."""
        done = {r[0] for r in self._read("SELECT period FROM periods ORDER BY period")}
        bids = [
            StoredBid(*r)
            for r in self._read(
                f"SELECT {_BID} FROM bids UNION ALL SELECT {_BID} FROM closed_bids"
                " ORDER BY period, pseudonym"
            )
        ]
        parts = [
            Participation(*r)
            for r in self._read(
                "SELECT period, household FROM participations ORDER BY period, household"
            )
        ]
        for period, households in self._read(
            "SELECT period, households FROM participant_sets ORDER BY period"
        ):
            parts += [Participation(period, h.decode()) for h in _split(households)]
        parts.sort(key=lambda p: (p.period, p.household))
        return bids, parts, done

    # -- periods and outputs

    def set_period(
        self,
        period: str,
        status: str,
        *,
        agreed: Sequence[bytes] = (),
        excluded: Sequence[bytes] = (),
        outcome: str = "",
        statement: bytes = b"",
        outputs: Sequence[tuple[str, str, bytes]] = (),
        households: Sequence[tuple[bytes, bytes]] = (),
        seal: bool = True,
    ) -> None:
        """Record a period's status (and its outputs) in one committed transaction:
        ``outputs`` one row each, by role and subject; ``households``, each bid slot's
        ``(pseudonym, output shares)``, in blocks of :data:`OUTPUT_BLOCK`.

        Recording ``closed`` (the gate has passed: no bid or participation of the period is
        written any more) also seals the period, in the same transaction, unless ``seal`` is
        false (the server seals once the period's statement is stored, with :meth:`seal`, so
        that copying the bids is not on the way from the gate to the results).
        """
        if status not in STATUSES:
            raise ValueError(f"unknown period status {status!r}")
        sealing = status == "closed" and seal
        statements = [s for step in self._seal(period) for s in step] if sealing else []
        if status == "closed" and self._pg:  # waits for workers' bids of the period in flight
            statements.insert(0, ("SELECT pg_advisory_xact_lock(hashtext(?))", (period,)))
        statements += [
            ("DELETE FROM periods WHERE period = ?", (period,)),
            (
                "INSERT INTO periods (period, status, agreed, excluded, outcome, statement)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (period, status, _join(agreed), _join(excluded), outcome, statement),
            ),
        ]
        rows = [*outputs, *_blocks(households)]
        if rows:
            statements.append((
                "INSERT INTO outputs (period, role, subject, shares) VALUES (?, ?, ?, ?)",
                Many([(period, role, subject, shares) for role, subject, shares in rows]),
            ))
        self._write(statements)
        if sealing and not self._pg:
            self._truncate_wal()

    def seal(self, period: str) -> None:
        """Seal a period whose gate has closed: its bids move in key order to
        ``closed_bids`` and its participations become one sorted set (see :meth:`_seal`), in
        the committed transactions of :meth:`seal_steps`, run one after another; on SQLite
        the write-ahead log is emptied after the last. Sealing a sealed period changes
        nothing."""
        for step in self.seal_steps(period):
            step()

    def seal_steps(self, period: str, rows: int | None = None) -> list[Callable[[], None]]:
        """The seal of ``period`` (:meth:`seal`) as steps to run in order, on the thread that
        uses this store: each one committed transaction of at most ``rows`` bids or
        participations (:data:`SEAL_ROWS`), the last emptying SQLite's write-ahead log. A
        server runs them one at a time, so that its other writes (the next periods' bids)
        wait for one step and not for the whole seal. After every step each bid is in
        ``bids`` or ``closed_bids``, never in both; a seal stopped between steps is finished
        by sealing again."""
        steps: list[Callable[[], None]] = [
            functools.partial(self._write, step) for step in self._seal(period, rows)
        ]
        if not self._pg:
            steps.append(self._truncate_wal)
        return steps

    def unsealed(self) -> list[str]:
        """Periods with a final status (cleared or failed) whose rows are not sealed yet (the
        server stopped between storing the statement and sealing)."""
        rows = self._read(
            "SELECT period FROM periods WHERE status IN ('cleared', 'failed') AND ("
            " period IN (SELECT period FROM bids)"
            " OR period IN (SELECT period FROM participations)) ORDER BY period"
        )
        return [r[0] for r in rows]

    def _truncate_wal(self) -> None:
        """Copy SQLite's write-ahead log into the file and empty it (its frames are in
        commit order). The data is committed either way: a failure here is only logged. A
        reader that keeps the checkpoint busy past SQLite's busy timeout (5 s; the read
        connection, :meth:`reader`, serves households meanwhile) does not make it raise:
        it says so in its result, which is logged as well."""
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("could not truncate the write-ahead log: %s", exc)
            return
        if busy is not None and busy[0]:
            log.warning("could not truncate the write-ahead log: a reader kept it busy; it"
                        " is emptied at the next seal, or when the server stops")

    def _seal(self, period: str, rows: int | None = None
              ) -> list[list[tuple[str, Sequence[Any]]]]:
        """The transactions that leave no order of arrival in a closed period's records.

        Its bids are copied, in key order, into ``closed_bids`` (on SQLite into pages that
        were free or new, never the ones they leave; on PostgreSQL in key order on the heap),
        and its participation rows give way to one sorted set. The old rows are deleted one
        by one in a random order: SQLite zeroes them and lists their pages as free in the
        order they were freed, which must tell nothing. Each transaction moves at most
        ``rows`` bids (a range of the key: copied, then deleted in a random order) or
        deletes at most ``rows`` participations (a random draw of them; the set is stored
        with the first); the last also deletes the period's segments. Sealing twice changes
        nothing.
        """
        rows = max(1, rows or SEAL_ROWS)
        households = [
            r[0]
            for r in self._read(
                "SELECT household FROM participations WHERE period = ? ORDER BY household",
                (period,),
            )
        ]
        pseudonyms = [
            r[0] for r in self._read(
                "SELECT pseudonym FROM bids WHERE period = ? ORDER BY pseudonym", (period,))
        ]
        shuffle = random.SystemRandom().shuffle
        steps: list[list[tuple[str, Sequence[Any]]]] = []
        for i in range(0, len(pseudonyms), rows):
            keys = pseudonyms[i:i + rows]
            gone = list(keys)
            shuffle(gone)
            steps.append([
                (
                    f"INSERT INTO closed_bids ({_BID}) SELECT {_BID} FROM bids WHERE period = ?"
                    " AND pseudonym >= ? AND pseudonym <= ? ORDER BY pseudonym",
                    (period, keys[0], keys[-1]),
                ),
                ("DELETE FROM bids WHERE period = ? AND pseudonym = ?",
                 Many([(period, p) for p in gone])),
            ])
        gone = list(households)
        shuffle(gone)
        steps.append([(
            "INSERT INTO participant_sets (period, households) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            (period, _join([h.encode() for h in households])),
        )])
        for i in range(0, len(gone), rows):
            if i:
                steps.append([])
            steps[-1].append(("DELETE FROM participations WHERE period = ? AND household = ?",
                              Many([(period, h) for h in gone[i:i + rows]])))
        steps[-1].append(("DELETE FROM segments WHERE period = ?", (period,)))
        return steps

    # -- segments (validation while the period is open)

    def add_segment(self, period: str, index: int, members: Sequence[bytes]) -> None:
        """Record segment ``index`` of ``period`` (its members, sorted), before its joint
        validation starts.

        Raises:
            StorageError: it is recorded already (the index was used).
        """
        self._write([("INSERT INTO segments (period, idx, members) VALUES (?, ?, ?)",
                      (period, index, _join(sorted(members))))])

    def segment_done(self, period: str, index: int, result: bytes, digest: bytes) -> None:
        """Store what the validation of a recorded segment left this server."""
        self._write([("UPDATE segments SET result = ?, digest = ? WHERE period = ? AND idx = ?",
                      (result, digest, period, index))])

    def open_periods(self) -> list[str]:
        """Periods with stored bids and no record yet (their gate has not closed), sorted."""
        rows = self._read("SELECT DISTINCT period FROM bids WHERE period NOT IN"
                          " (SELECT period FROM periods) ORDER BY period")
        return [r[0] for r in rows]

    def period_payloads(self, period: str) -> dict[bytes, bytes]:
        """Every stored payload of ``period`` (open or sealed), by pseudonym: what the gate's
        clearing reads, without the signed bids and receipts around them."""
        rows = self._read(
            "SELECT pseudonym, payload FROM bids WHERE period = ?"
            " UNION ALL SELECT pseudonym, payload FROM closed_bids WHERE period = ?",
            (period, period),
        )
        return {bytes(p): bytes(v) for p, v in rows}

    def payloads(self, period: str, pseudonyms: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored payloads of some of ``period``'s bids (open or sealed), by pseudonym
        (those found)."""
        found: dict[bytes, bytes] = {}
        items = sorted(set(pseudonyms))
        for i in range(0, len(items), 400):
            chunk = items[i:i + 400]
            marks = ", ".join("?" * len(chunk))
            for pseudonym, payload in self._read(
                    f"SELECT pseudonym, payload FROM bids WHERE period = ? AND pseudonym IN"
                    f" ({marks}) UNION ALL SELECT pseudonym, payload FROM closed_bids WHERE"
                    f" period = ? AND pseudonym IN ({marks})", (period, *chunk, period, *chunk)):
                found[bytes(pseudonym)] = bytes(payload)
        return found

    def segments(self, period: str) -> list[SegmentRecord]:
        """Every recorded segment of ``period``, by index (``result`` and ``digest`` empty
        until its validation is done)."""
        rows = self._read("SELECT idx, members, result, digest FROM segments WHERE period = ?"
                          " ORDER BY idx", (period,))
        return [SegmentRecord(period, int(i), _split(m), bytes(r or b""), bytes(d or b""))
                for i, m, r, d in rows]

    def participants(self, period: str) -> tuple[str, ...]:
        """Return the households that got a pseudonym signed for ``period``, sorted."""
        rows = self._read("SELECT households FROM participant_sets WHERE period = ?", (period,))
        if rows:
            return tuple(h.decode() for h in _split(rows[0][0]))
        rows = self._read(
            "SELECT household FROM participations WHERE period = ? ORDER BY household", (period,)
        )
        return tuple(r[0] for r in rows)

    def period(self, period: str) -> PeriodRecord | None:
        """Return what is stored about ``period`` after its gate closed, if anything."""
        rows = self._read(
            "SELECT period, status, agreed, excluded, outcome, statement FROM periods"
            " WHERE period = ?",
            (period,),
        )
        if not rows:
            return None
        p, status, agreed, excluded, outcome, statement = rows[0]
        return PeriodRecord(
            p, status, _split(agreed), _split(excluded), outcome or "", bytes(statement or b"")
        )

    def unfinished(self) -> list[str]:
        """Return the periods whose gate closed but that are not yet cleared or failed."""
        rows = self._read(
            "SELECT period FROM periods WHERE status IN ('closed', 'agreed') ORDER BY period"
        )
        return [r[0] for r in rows]

    def output(self, period: str, role: str, subject: str) -> bytes | None:
        """Return this server's stored output shares for one subject, if any (a household's
        from its block, :data:`OUTPUT_BLOCK`)."""
        key = _pseudonym(subject) if role == "household" else None
        if key is not None:
            byte_order = ' COLLATE "C"' if self._pg else ""  # SQLite compares bytes already
            rows = self._read(
                f"SELECT shares FROM outputs WHERE period = ? AND role = ? AND subject{byte_order}"
                f" <= ? ORDER BY subject{byte_order} DESC LIMIT 1",
                (period, _BLOCK_ROLE, key.hex()))
            found = _in_block(bytes(rows[0][0]), key) if rows else None
            if found is not None:
                return found
        rows = self._read(  # every other output, and households' stored before the blocks
            "SELECT shares FROM outputs WHERE period = ? AND role = ? AND subject = ?",
            (period, role, subject),
        )
        return rows[0][0] if rows else None

    # -- settlement

    def enrol(self, household: str, share: bytes, since: str) -> bytes:
        """Store a household's credential share unless it has one; return the stored one."""
        rows = self._read("SELECT share FROM credentials WHERE household = ?", (household,))
        if rows:
            return bytes(rows[0][0])
        self._write([("INSERT INTO credentials (household, share, since) VALUES (?, ?, ?)",
                      (household, share, since))])
        return share

    def credentials(self, before: str) -> dict[str, bytes]:
        """Every household's credential share enrolled in a period before ``before``."""
        rows = self._read("SELECT household, share, since FROM credentials ORDER BY household")
        return {h: bytes(s) for h, s, since in rows if since < before}

    def add_reading(self, period: str, household: str, shares: bytes) -> str:
        """Store a meter reading, in one transaction; return ``"stored"``, ``"duplicate"``
        (the household has one: nothing written) or ``"closed"`` (the period's reading set
        was read, :meth:`close_readings`: nothing written). On PostgreSQL it holds the
        period's shared reading lock, which closing takes exclusively: a reading that
        another worker checked before the deadline commits before the set is read, or not
        at all.

        Raises:
            StorageError: the write failed (nothing was stored).
        """
        cur = self._conn.cursor()
        try:
            if self._pg:
                cur.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))",
                            (_READINGS_LOCK + period,))
            else:
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(self._sql("SELECT 1 FROM closed_readings WHERE period = ?"), (period,))
            if cur.fetchall():
                found = "closed"
            else:
                cur.execute(self._sql(
                    "INSERT INTO readings (period, household, shares) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING"), (period, household, shares))
                found = "stored" if cur.rowcount == 1 else "duplicate"
            self._conn.commit() if self._pg else cur.execute("COMMIT")
        except Exception as exc:
            self._conn.rollback() if self._pg else self._conn.execute("ROLLBACK")
            raise StorageError(f"write failed: {exc}") from exc
        return found

    def close_readings(self, period: str) -> None:
        """Record that ``period``'s reading set is read (its deadline has passed): no reading
        of it is stored afterwards (:meth:`add_reading`). Closing twice changes nothing."""
        statements: list[tuple[str, Sequence[Any]]] = []
        if self._pg:  # waits for readings of the period that workers are storing
            statements.append(("SELECT pg_advisory_xact_lock(hashtext(?))",
                               (_READINGS_LOCK + period,)))
        statements.append(("INSERT INTO closed_readings (period) VALUES (?)"
                           " ON CONFLICT DO NOTHING", (period,)))
        self._write(statements)

    def readings(self, period: str) -> dict[str, bytes]:
        """The period's stored readings by household."""
        rows = self._read("SELECT household, shares FROM readings WHERE period = ?"
                          " ORDER BY household", (period,))
        return {h: bytes(s) for h, s in rows}

    def reading_periods(self) -> list[str]:
        """Periods with at least one stored reading and no settlement yet, in order."""
        rows = self._read("SELECT DISTINCT period FROM readings WHERE period NOT IN"
                          " (SELECT period FROM settlements) ORDER BY period")
        return [r[0] for r in rows]

    def closed_unsettled(self) -> list[str]:
        """Cleared or failed periods without a settlement yet, in order."""
        rows = self._read("SELECT period FROM periods WHERE status IN ('cleared', 'failed')"
                          " AND period NOT IN (SELECT period FROM settlements) ORDER BY period")
        return [r[0] for r in rows]

    def add_settlement(self, period: str, households: Sequence[str], status: Sequence[str],
                       lines: bytes, void: int, bidders: int, price: int | None) -> None:
        """Store a period's settlement (this server's shares of every household's line)."""

        self._write([("INSERT INTO settlements (period, households, status, lines, void,"
                      " bidders, price) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (period, _join([h.encode() for h in households]), json.dumps(list(status)),
                       lines, void, bidders, price))])

    def settlements(self, first: str, last: str) -> list[SettlementRecord]:
        """The settlements of the periods from ``first`` to ``last`` (inclusive), in order."""

        rows = self._read("SELECT period, households, status, lines, void, bidders, price"
                          " FROM settlements WHERE period >= ? AND period <= ? ORDER BY period",
                          (first, last))
        return [SettlementRecord(p, tuple(h.decode() for h in _split(hh)),
                                 tuple(json.loads(st)), bytes(lines), int(v), int(b),
                                 None if price is None else int(price))
                for p, hh, st, lines, v, b, price in rows]
