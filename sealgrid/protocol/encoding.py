"""Household side of the secure clearing: assumes honest-majority servers and private channels.

A bid becomes one vector of field elements, split into Shamir shares of degree ``t`` for
``m`` servers (points 1..m, MPyC's convention, field of :mod:`sealgrid.protocol.field`). The price
level is split as ``level = L·hi + lo`` with ``L = ⌈√P⌉`` fine levels per coarse block:

* ``w`` (length 2H, H = ⌈P/L⌉): the quantity-weighted one-hot coarse vector, buy blocks then
  sell blocks — ``w[hi] = q`` for a buy, ``w[H + hi] = q`` for a sell, all else 0;
* ``e`` (length L): the one-hot fine vector, ``e[lo] = 1``;
* the ``b`` bits of ``q − 1`` and the ``b`` bits of ``max − q`` (``b`` = bit length of
  ``max − 1``), which prove ``1 ≤ q ≤ max`` exactly;
* ``s`` (length S): the one-hot supplier vector;
* the identity pair ``(h, κ)``: the household's registry index and its enrolled credential,
  unchecked at the clearing; after an oblivious shuffle the settlement opens ``h`` and checks
  ``κ`` against the credential enrolled under that name (:mod:`sealgrid.protocol.billing`).

For P = 256 that is 32 + 16 entries instead of 512 for a one-hot vector over all levels; the
servers rebuild each level's total as a sum of products ``w[hi]·e[lo]`` over all bids.

Each server receives one :class:`BidShares` (explicit, versioned wire format; never pickle).
The servers return the household's accepted quantity as shares; :func:`reconstruct` rebuilds it
and checks that all shares lie on one degree-t polynomial (the paper's integrity check).
"""

from __future__ import annotations

import math
import mmap
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sealgrid.mechanism.bids import DEFAULT_MAX_QUANTITY_WH, BidRejected, OrderBook, Reason
from sealgrid.mechanism.market import Market
from sealgrid.protocol import field as F

WIRE_VERSION = 3
_BID_MAGIC = b"SGB1"
_BATCH_MAGIC = b"SGSB"
_OUT_MAGIC = b"SGO1"
_HEADER = struct.Struct("<4sHHIIIQ")  # magic, version, party, levels, suppliers, max q, rows
#: A side's accepted total must stay below √(p/2) so that every reader can rebuild the exact
#: ratio V/L from its field element (rational reconstruction): about 2 GWh per side.
RATIO_LIMIT = 2**31


@dataclass(frozen=True)
class Layout:
    """Where each part of a bid sits in the shared vector, for one market configuration."""

    levels: int
    suppliers: int
    max_quantity_wh: int = DEFAULT_MAX_QUANTITY_WH

    def __post_init__(self) -> None:
        if self.levels < 1 or self.suppliers < 1 or self.max_quantity_wh < 1:
            raise ValueError("levels, suppliers and the maximum quantity must be positive")
        if self.max_quantity_wh >= 2**31:
            raise ValueError("the maximum quantity must be below 2^31 Wh")

    @classmethod
    def of(cls, market: Market) -> Layout:
        """The layout of ``market``'s bids (one supplier slot when it names none)."""
        return cls(market.levels, max(1, len(market.suppliers)), market.max_quantity_wh)

    @property
    def bits(self) -> int:
        """Bits used for each of ``q − 1`` and ``max − q``."""
        return max(1, (self.max_quantity_wh - 1).bit_length())

    @property
    def fine(self) -> int:
        """L: fine levels per coarse block (⌈√P⌉)."""
        return math.isqrt(self.levels - 1) + 1 if self.levels > 1 else 1

    @property
    def coarse(self) -> int:
        """H: coarse blocks (⌈P / L⌉)."""
        return -(-self.levels // self.fine)

    def split(self, level: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(hi, lo)`` with ``level = L·hi + lo``."""
        hi, lo = np.divmod(level, self.fine)
        return hi, lo

    @property
    def width(self) -> int:
        """Field elements per bid."""
        return 2 * self.coarse + self.fine + 2 * self.bits + self.suppliers + 2

    @property
    def w(self) -> slice:
        """The quantity-weighted coarse vector (buy blocks, then sell blocks)."""
        return slice(0, 2 * self.coarse)

    @property
    def e(self) -> slice:
        """The one-hot fine vector."""
        return slice(2 * self.coarse, 2 * self.coarse + self.fine)

    @property
    def low_bits(self) -> slice:
        """Bits of ``q − 1``."""
        start = self.e.stop
        return slice(start, start + self.bits)

    @property
    def high_bits(self) -> slice:
        """Bits of ``max − q``."""
        start = self.e.stop + self.bits
        return slice(start, start + self.bits)

    @property
    def supplier(self) -> slice:
        start = self.e.stop + 2 * self.bits
        return slice(start, start + self.suppliers)

    @property
    def identity(self) -> slice:
        """The pair ``(h, κ)``: registry index and credential (never checked at the clearing)."""
        return slice(self.supplier.stop, self.supplier.stop + 2)


def payload_size(layout: Layout) -> int:
    """Bytes of one household's upload to one server (:meth:`BidShares.to_bytes`)."""
    return _HEADER.size + 8 * layout.width


def threshold(parties: int) -> int:
    """The honest-majority threshold ``t = ⌊(m − 1)/2⌋`` (1 for 3 servers)."""
    if parties < 3 or parties % 2 == 0:
        raise ValueError("the secure clearing needs an odd number of servers, at least 3")
    return (parties - 1) // 2


def plain_vectors(
    layout: Layout, is_buy: np.ndarray, quantity: np.ndarray, level: np.ndarray,
    supplier: np.ndarray, identity: np.ndarray | None = None,
) -> np.ndarray:
    """Encode many bids as plaintext field vectors (rows), unchecked: callers check ranges.

    ``identity``: an (n, 2) array of field elements ``(h, κ)`` (zeros when absent).
    """
    n = len(is_buy)
    rows = np.zeros((n, layout.width), dtype=F.U64)
    idx = np.arange(n)
    hi, lo = layout.split(np.asarray(level, dtype=np.int64))
    rows[idx, np.where(is_buy, 0, layout.coarse) + hi] = F.from_int64(quantity)
    rows[idx, layout.e.start + lo] = 1
    q = np.asarray(quantity, dtype=np.int64)
    shifts = np.arange(layout.bits, dtype=np.int64)
    rows[:, layout.low_bits] = (((q - 1)[:, None] >> shifts) & 1).astype(F.U64)
    rows[:, layout.high_bits] = (((layout.max_quantity_wh - q)[:, None] >> shifts) & 1).astype(
        F.U64
    )
    rows[idx, layout.supplier.start + np.asarray(supplier, dtype=np.int64)] = 1
    if identity is not None:
        rows[:, layout.identity] = np.asarray(identity, dtype=F.U64)
    return rows


def share_rows(rows: np.ndarray, parties: int, key: bytes, label: str = "") -> list[np.ndarray]:
    """Split plaintext rows into ``parties`` Shamir sharings with fresh AES-CTR randomness."""
    t = threshold(parties)
    coeffs = [F.stream(key, f"share/{label}/{j}", rows.size).reshape(rows.shape)
              for j in range(t)]
    return F.share(rows, t, parties, coeffs)


@dataclass(frozen=True)
class BidShares:
    """One server's share of one household's bid: the message a household uploads."""

    party: int
    layout: Layout
    values: np.ndarray

    def to_bytes(self) -> bytes:
        """Serialise (explicit little-endian format, version :data:`WIRE_VERSION`)."""
        head = _HEADER.pack(_BID_MAGIC, WIRE_VERSION, self.party, self.layout.levels,
                            self.layout.suppliers, self.layout.max_quantity_wh, 1)
        return head + np.asarray(self.values, dtype="<u8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> BidShares:
        """Parse a message; raise :class:`BidRejected` (MALFORMED) when it is not one."""
        if len(data) < _HEADER.size:
            raise BidRejected(Reason.MALFORMED, "share message too short")
        magic, version, party, levels, suppliers, max_q, rows = _HEADER.unpack_from(data)
        if magic != _BID_MAGIC or version != WIRE_VERSION or rows != 1:
            raise BidRejected(Reason.MALFORMED, "not a share message of this wire format version")
        try:
            layout = Layout(levels, suppliers, max_q)
        except ValueError:
            raise BidRejected(Reason.MALFORMED, "impossible market layout in the header") from None
        body = data[_HEADER.size:]
        if len(body) != 8 * layout.width:
            raise BidRejected(Reason.MALFORMED, "share message has the wrong length")
        values = np.frombuffer(body, dtype="<u8").astype(F.U64)
        if np.any(values >= F.MODULUS):
            raise BidRejected(Reason.MALFORMED, "share value outside the field")
        return cls(party, layout, values)


def encode_bid(
    is_buy: bool, quantity_wh: int, level: int, supplier: int, layout: Layout, *,
    parties: int = 3, key: bytes | None = None, identity: tuple[int, int] = (0, 0),
) -> list[BidShares]:
    """Encode one bid and split it into one :class:`BidShares` per server (index = party).

    ``identity``: the household's registry index and enrolled credential (0, 0 outside the
    running market: such a bid clears like any other and is never settled).

    Raises:
        BidRejected: the bid breaks a market rule (an honest household never sends it).
    """
    if not quantity_wh >= 1:
        raise BidRejected(Reason.QUANTITY_NOT_POSITIVE)
    if quantity_wh > layout.max_quantity_wh:
        raise BidRejected(Reason.QUANTITY_TOO_LARGE)
    if not 0 <= level < layout.levels:
        raise BidRejected(Reason.PRICE_OFF_GRID)
    if not 0 <= supplier < layout.suppliers:
        raise BidRejected(Reason.UNKNOWN_SUPPLIER)
    row = plain_vectors(layout, np.array([is_buy]), np.array([quantity_wh]),
                        np.array([level]), np.array([supplier]),
                        F.from_ints(identity).reshape(1, 2))
    shares = share_rows(row, parties, key if key is not None else secrets.token_bytes(16))
    return [BidShares(i, layout, s[0]) for i, s in enumerate(shares)]


@dataclass(frozen=True)
class ShareBatch:
    """One server's stored shares of N bids (rows aligned with the period's bid slots)."""

    party: int
    layout: Layout
    rows: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @classmethod
    def from_payloads(cls, payloads: Sequence[BidShares], party: int, layout: Layout) -> ShareBatch:
        """Stack the payloads this server received (all must be for ``party`` and ``layout``)."""
        for p in payloads:
            if p.party != party or p.layout != layout:
                raise ValueError("a payload is for another server or market configuration")
        rows = (np.stack([p.values for p in payloads]) if payloads
                else np.zeros((0, layout.width), dtype=F.U64))
        return cls(party, layout, rows)

    @classmethod
    def from_messages(cls, messages: Sequence[bytes], party: int, layout: Layout) -> ShareBatch:
        """Parse and stack share messages (:meth:`BidShares.to_bytes`) for ``party`` and
        ``layout``: all at once when every one carries exactly their header and length (what
        the intake took), else one by one, so that the first bad one is named as
        :meth:`BidShares.from_bytes` names it.

        Raises:
            BidRejected: a message is not a share message (MALFORMED).
            ValueError: a message is for another server or market configuration.
        """
        head = _HEADER.pack(_BID_MAGIC, WIRE_VERSION, party, layout.levels, layout.suppliers,
                            layout.max_quantity_wh, 1)
        size = len(head) + 8 * layout.width
        if all(len(m) == size and m.startswith(head) for m in messages):
            body = b"".join(memoryview(m)[len(head):] for m in messages)
            rows = np.frombuffer(body, dtype="<u8").reshape(len(messages), layout.width)
            if not np.any(rows >= F.MODULUS):
                return cls(party, layout, rows.astype(F.U64))
        return cls.from_payloads([BidShares.from_bytes(m) for m in messages], party, layout)

    def save(self, path: Path) -> None:
        """Write the batch to ``path`` (header, then raw little-endian rows)."""
        with open(path, "wb") as f:
            write_batch_header(f, self.party, self.layout, len(self))
            f.write(np.ascontiguousarray(self.rows, dtype="<u8").tobytes())

    def release(self) -> None:
        """Give back the resident pages of a mapped batch: a pass over millions of bids then
        keeps about one block of the file in memory, not all of it (the pages come back from
        the page cache when next read). Nothing happens for a batch held in memory."""
        mapped = getattr(self.rows, "_mmap", None)
        if mapped is not None and hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_DONTNEED)

    @classmethod
    def load(cls, path: Path) -> ShareBatch:
        """Map a saved batch into memory (read-only, not copied)."""
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
        if len(head) != _HEADER.size:
            raise ValueError(f"{path} is shorter than a share batch's header")
        magic, version, party, levels, suppliers, max_q, rows = _HEADER.unpack(head)
        if magic != _BATCH_MAGIC or version != WIRE_VERSION:
            raise ValueError(f"{path} is not a version-{WIRE_VERSION} share batch")
        layout = Layout(levels, suppliers, max_q)
        data = np.memmap(path, dtype="<u8", mode="r", offset=_HEADER.size,
                         shape=(rows, layout.width)) if rows else np.zeros((0, layout.width), F.U64)
        return cls(party, layout, data)


def join_batches(path: Path, parts: Sequence[ShareBatch]) -> int:
    """Write the batches ``parts`` one after another as one batch file at ``path`` (their
    rows in order); return its number of rows.

    Raises:
        ValueError: the parts are of different servers or market configurations (or none).
    """
    if not parts or any((b.party, b.layout) != (parts[0].party, parts[0].layout)
                        for b in parts):
        raise ValueError("the batches to join are of different servers or markets")
    rows = sum(len(b) for b in parts)
    with open(path, "wb") as f:
        write_batch_header(f, parts[0].party, parts[0].layout, rows)
        for b in parts:
            f.write(np.ascontiguousarray(b.rows, dtype="<u8").data)
    return rows


def write_batch_header(f: object, party: int, layout: Layout, rows: int) -> None:
    """Write a batch file header (used when rows are streamed in chunks)."""
    f.write(_HEADER.pack(_BATCH_MAGIC, WIRE_VERSION, party, layout.levels,  # type: ignore[attr-defined]
                         layout.suppliers, layout.max_quantity_wh, rows))


def write_book_shares(
    book: OrderBook, layout: Layout, paths: Sequence[Path], *, key: bytes | None = None,
    chunk: int = 16384, identity: np.ndarray | None = None,
) -> None:
    """Encode every bid of ``book`` as its household would and write each server's batch file.

    Vectorised and chunked (the same shares as :func:`encode_bid`, many rows at once).
    ``identity``: each bid's ``(h, κ)`` as an (n, 2) field array (zeros when not given).
    """
    parties = len(paths)
    key = key if key is not None else secrets.token_bytes(16)
    files = [open(p, "wb") for p in paths]  # noqa: SIM115
    try:
        for i, f in enumerate(files):
            write_batch_header(f, i, layout, len(book))
        for start in range(0, len(book), chunk):
            sl = slice(start, start + chunk)
            rows = plain_vectors(layout, book.is_buy[sl], book.quantity_wh[sl], book.level[sl],
                                 book.supplier[sl], None if identity is None else identity[sl])
            for f, s in zip(files, share_rows(rows, parties, key, f"chunk{start}"), strict=True):
                f.write(s.astype("<u8").tobytes())
    finally:
        for f in files:
            f.close()


@dataclass(frozen=True)
class OutputShare:
    """One server's share of one output value (a household's or a supplier's)."""

    party: int
    values: np.ndarray

    def to_bytes(self) -> bytes:
        return (_OUT_MAGIC + struct.pack("<HI", self.party, len(self.values))
                + np.asarray(self.values, dtype="<u8").tobytes())

    @staticmethod
    def each(party: int, values: np.ndarray) -> list[bytes]:
        """``OutputShare(party, values[i:i+1]).to_bytes()`` for every ``i``, made at once."""
        head = _OUT_MAGIC + struct.pack("<HI", party, 1)
        raw = np.ascontiguousarray(values, dtype="<u8").tobytes()
        return [head + raw[i:i + 8] for i in range(0, len(raw), 8)]

    @classmethod
    def from_bytes(cls, data: bytes) -> OutputShare:
        if data[:4] != _OUT_MAGIC:
            raise ValueError("not an output share message")
        party, n = struct.unpack_from("<HI", data, 4)
        values = np.frombuffer(data[10:10 + 8 * n], dtype="<u8").astype(F.U64)
        if len(values) != n:
            raise ValueError("truncated output share message")
        return cls(party, values)


def reconstruct(shares: Sequence[OutputShare]) -> list[int]:
    """Rebuild output values from every server's share, checking their consistency.

    Raises:
        InconsistentShares: the shares do not lie on one degree-t polynomial — some server
            sent a wrong share (the integrity check of the paper's step 4).
    """
    ordered = sorted(shares, key=lambda s: s.party)
    if [s.party for s in ordered] != list(range(len(ordered))):
        raise ValueError("need exactly one share from every server")
    value = F.reconstruct([s.values for s in ordered], threshold(len(ordered)))
    return [int(v) for v in value]


def field_ratio(output: int, accepted_wh: int) -> int:
    """``output / accepted`` in the field: the side's ratio ``V/L`` as a field element.

    Raises:
        ValueError: the accepted quantity is not positive.
    """
    if accepted_wh <= 0:
        raise ValueError("the accepted quantity must be positive")
    return output * pow(accepted_wh, F.MODULUS - 2, F.MODULUS) % F.MODULUS


def side_ratio(output: int, accepted_wh: int) -> Fraction:
    """The rationing ratio ``V/L`` of a bid's side, exactly, from the rebuilt output
    ``q·V/L`` (a field element) and the reader's own accepted quantity ``q`` (a household's
    bid, a supplier's accepted total): ``1`` on the short side.

    Raises:
        ValueError: the output is not ``q`` times a ratio of numbers below the limit.
    """
    ratio = F.rational(field_ratio(output, accepted_wh), RATIO_LIMIT)
    if not 0 < ratio <= 1:
        raise ValueError("a rationing ratio lies in (0, 1]")
    return ratio
