"""Durable storage of bids, periods and outputs; assumes one server process owns its database.

SQLite (stdlib ``sqlite3``, WAL journal, ``synchronous=FULL``) by default; PostgreSQL when
the URL says ``postgresql://`` (needs ``psycopg`` 3). The SQL is the same for both apart from
the placeholder style and the binary column type. :meth:`Store.add` commits before it
returns, so a receipt is only ever handed out for a bid that survives a crash; the server hands
it many bids (and participations) arriving together, committed in one transaction (group commit).

What is kept: each accepted bid as the signed pseudonymous message, its payload and the
receipt (no household id); separately, which households got a pseudonym signed for which
period (one per household and period); and each period's RSA issuer key (PEM, private: a
database holds secrets). Nothing links a household to its bid: the blind signature hides it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealgrid.service.intake import Participation, StoredBid

SCHEMA = """
CREATE TABLE IF NOT EXISTS bids (
    period TEXT NOT NULL, pseudonym {blob} NOT NULL, seq INTEGER NOT NULL,
    bid {blob} NOT NULL, payload {blob} NOT NULL, receipt {blob} NOT NULL,
    PRIMARY KEY (period, pseudonym));
CREATE TABLE IF NOT EXISTS participations (
    period TEXT NOT NULL, household TEXT NOT NULL, PRIMARY KEY (period, household));
CREATE TABLE IF NOT EXISTS periods (
    period TEXT PRIMARY KEY, status TEXT NOT NULL, agreed {blob}, excluded {blob},
    outcome TEXT, statement {blob});
CREATE TABLE IF NOT EXISTS issuers (
    period TEXT PRIMARY KEY, private_key {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    period TEXT NOT NULL, role TEXT NOT NULL, subject TEXT NOT NULL, shares {blob} NOT NULL,
    PRIMARY KEY (period, role, subject))
"""

#: Period statuses, in order. ``closed``: gate passed, bid set frozen; ``agreed``: the
#: servers' common bid set fixed; ``cleared`` / ``failed``: outputs (or the reason) stored.
STATUSES = ("closed", "agreed", "cleared", "failed")


class StorageError(Exception):
    """The database could not be opened or written."""


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
    return b"".join(len(x).to_bytes(2, "big") + x for x in items)


def _split(blob: bytes | None) -> tuple[bytes, ...]:
    out, i, data = [], 0, bytes(blob or b"")
    while i < len(data):
        n = int.from_bytes(data[i : i + 2], "big")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return tuple(out)


class Store:
    """A repository over one SQLite file or one PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg = url.startswith(("postgresql://", "postgres://"))
        try:
            if self._pg:
                import psycopg

                self._conn: Any = psycopg.connect(url)
                blob = "BYTEA"
            else:
                path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                blob = "BLOB"
            cur = self._conn.cursor()
            for stmt in SCHEMA.format(blob=blob).split(";"):
                cur.execute(stmt)
            if self._pg:
                self._conn.commit()
        except (sqlite3.Error, OSError, ImportError) as exc:
            raise StorageError(f"cannot open the database: {exc}") from exc
        except Exception as exc:  # psycopg errors, without importing it here
            raise StorageError(f"cannot open the database: {exc}") from exc

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._pg else text

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        cur = self._conn.cursor()
        try:
            if not self._pg:
                cur.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                cur.execute(self._sql(sql), params)
            self._conn.commit() if self._pg else cur.execute("COMMIT")
        except Exception as exc:
            self._conn.rollback() if self._pg else self._conn.execute("ROLLBACK")
            raise StorageError(f"write failed: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), params)
        rows = cur.fetchall()
        if self._pg:
            self._conn.commit()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- bids

    def add(
        self, bids: Sequence[StoredBid] = (), participations: Sequence[Participation] = ()
    ) -> None:
        """Store accepted bids and granted participations in one committed transaction.

        Raises:
            StorageError: nothing was stored.
        """
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT INTO bids (period, pseudonym, seq, bid, payload, receipt)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (b.period, b.pseudonym, b.seq, b.bid, b.payload, b.receipt),
            )
            for b in bids
        ]
        statements += [
            (
                "INSERT INTO participations (period, household) VALUES (?, ?)",
                (p.period, p.household),
            )
            for p in participations
        ]
        self._write(statements)

    def add_issuer(self, period: str, private_key_pem: bytes) -> None:
        """Store a period's issuer key (before any signature under it leaves the server)."""
        self._write(
            [("INSERT INTO issuers (period, private_key) VALUES (?, ?)", (period, private_key_pem))]
        )

    def issuers(self) -> dict[str, bytes]:
        """Return every stored issuer key (PEM) by period."""
        return dict(self._read("SELECT period, private_key FROM issuers"))

    def bids(self, period: str) -> list[StoredBid]:
        """Return the stored bids of ``period``, sorted by pseudonym."""
        rows = self._read(
            "SELECT period, pseudonym, bid, payload, receipt, seq FROM bids WHERE period = ?"
            " ORDER BY pseudonym",
            (period,),
        )
        return [StoredBid(*r) for r in rows]

    def receipt(self, period: str, pseudonym: bytes) -> bytes | None:
        """Return the stored receipt of one bid, if any."""
        rows = self._read(
            "SELECT receipt FROM bids WHERE period = ? AND pseudonym = ?", (period, pseudonym)
        )
        return rows[0][0] if rows else None

    def load_state(self) -> tuple[list[StoredBid], list[Participation], set[str]]:
        """Return what the intake machine needs after a restart: bids, participations, closed."""
        done = {r[0] for r in self._read("SELECT period FROM periods")}
        bids = [
            StoredBid(*r)
            for r in self._read("SELECT period, pseudonym, bid, payload, receipt, seq FROM bids")
        ]
        parts = [
            Participation(*r) for r in self._read("SELECT period, household FROM participations")
        ]
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
    ) -> None:
        """Record a period's status (and its outputs) in one committed transaction."""
        if status not in STATUSES:
            raise ValueError(f"unknown period status {status!r}")
        statements: list[tuple[str, Sequence[Any]]] = [
            ("DELETE FROM periods WHERE period = ?", (period,)),
            (
                "INSERT INTO periods (period, status, agreed, excluded, outcome, statement)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (period, status, _join(agreed), _join(excluded), outcome, statement),
            ),
        ]
        for role, subject, shares in outputs:
            statements.append(
                (
                    "INSERT INTO outputs (period, role, subject, shares) VALUES (?, ?, ?, ?)",
                    (period, role, subject, shares),
                )
            )
        self._write(statements)

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
        rows = self._read("SELECT period FROM periods WHERE status IN ('closed', 'agreed')")
        return sorted(r[0] for r in rows)

    def output(self, period: str, role: str, subject: str) -> bytes | None:
        """Return this server's stored output shares for one subject, if any."""
        rows = self._read(
            "SELECT shares FROM outputs WHERE period = ? AND role = ? AND subject = ?",
            (period, role, subject),
        )
        return rows[0][0] if rows else None
