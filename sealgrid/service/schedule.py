"""Trading periods and gate closure (docs/service.md); pure functions, the clock is passed in.

Periods have a fixed length and start at whole multiples of it since the Unix epoch (UTC).
A period is named by its start in ISO 8601 with a ``Z`` suffix, e.g. ``2026-11-22T21:15:00Z``.
Bids for ``t_i`` are taken until the start of ``t_{i-2}`` (gate closure), so the servers clear
``t_i`` during ``t_{i-2}`` and deliver before ``t_{i-1}``.

Billing cycles (:class:`BillingCalendar`) are ``C`` consecutive periods, counted from the
epoch like the periods (cycle ``k`` holds periods ``k·C … k·C + C − 1``), and named by the
start of their first period. A period's meter reading is due by its *reading deadline*, the
end of the period plus ``G`` periods; a cycle is billed at the reading deadline of its last
period. Times outside what :mod:`datetime` can name (years 1 to 9999) give a ``ValueError``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sealgrid.mechanism.bids import Reason

Clock = Callable[[], dt.datetime]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
GATE_PERIODS = 2
#: A billing cycle is a 30-day month of periods by default (:func:`default_cycle_periods`).
DEFAULT_CYCLE_DAYS = 30
#: A period's meter reading is due this many periods after the period ends, by default.
DEFAULT_READING_GRACE_PERIODS = 4


def utc_now() -> dt.datetime:
    """Return the current time, timezone-aware UTC (the default clock)."""
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    """Format an aware time as ISO 8601 UTC with ``Z`` (microseconds kept when present)."""
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    """Parse ISO 8601 text into an aware UTC time.

    Raises:
        ValueError: not ISO 8601, or without a timezone.
    """
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; write UTC with a trailing Z")
    return t.astimezone(dt.UTC)


@dataclass(frozen=True)
class Schedule:
    """Fixed-length trading periods; ``horizon`` periods ahead are open for bids."""

    period_seconds: int = 900
    horizon: int = 96

    def __post_init__(self) -> None:
        if self.period_seconds <= 0 or self.horizon <= GATE_PERIODS:
            raise ValueError("period length must be positive and the horizon above 2 periods")

    @property
    def length(self) -> dt.timedelta:
        """The period length."""
        return dt.timedelta(seconds=self.period_seconds)

    def start_of(self, t: dt.datetime) -> dt.datetime:
        """Return the start of the period that contains ``t``."""
        offset = (t - EPOCH) // self.length
        return EPOCH + offset * self.length

    def period_id(self, start: dt.datetime) -> str:
        """Return the name of the period starting at ``start``."""
        return iso(start)

    def parse_period(self, period: str) -> dt.datetime:
        """Return the start of the named period.

        A period is only a period if its gate closure and its end can be named too (so no
        period of year 1 before ``GATE_PERIODS`` periods have passed, none ending in year
        10000): every time computed from a parsed period is then a time.

        Raises:
            ValueError: not a time, not on a period boundary, or out of range.
        """
        start = parse_time(period)
        if start != self.start_of(start) or self.period_id(start) != period:
            raise ValueError(f"{period!r} is not the start of a trading period")
        try:
            start - GATE_PERIODS * self.length
            start + self.length
        except OverflowError:
            raise _out_of_range(f"{period!r} (its gate closure or its end)") from None
        return start

    def gate_closure(self, start: dt.datetime) -> dt.datetime:
        """Return when bidding for the period starting at ``start`` closes.

        Raises:
            ValueError: that time cannot be named (not a period of :meth:`parse_period`).
        """
        try:
            return start - GATE_PERIODS * self.length
        except OverflowError:
            raise _out_of_range(f"the gate closure of {iso(start)}") from None

    def seconds_to_next_gate(self, now: dt.datetime) -> float:
        """Seconds from ``now`` until the next gate closure after it (gates fall on period
        boundaries, one a period)."""
        return (self.start_of(now) + self.length - now).total_seconds()

    def first_open(self, now: dt.datetime) -> dt.datetime:
        """Return the start of the earliest period still taking bids at ``now``."""
        start = self.start_of(now) + GATE_PERIODS * self.length
        if self.gate_closure(start) <= now:
            start += self.length
        return start

    def open_periods(self, now: dt.datetime) -> list[str]:
        """Return the names of every period taking bids at ``now``, earliest first."""
        first = self.first_open(now)
        return [self.period_id(first + k * self.length) for k in range(self.horizon)]

    def check(self, period: str, now: dt.datetime) -> tuple[Reason, str] | None:
        """Return why a bid for ``period`` cannot be taken at ``now``, or ``None`` if it can."""
        try:
            start = self.parse_period(period)
        except ValueError:
            return Reason.WRONG_PERIOD, "not the start of a trading period (ISO 8601, UTC)"
        gate = self.gate_closure(start)
        if now >= gate:
            return Reason.LATE, f"gate closure was {iso(gate)}"
        if start >= self.first_open(now) + self.horizon * self.length:
            return Reason.WRONG_PERIOD, f"bids are taken at most {self.horizon} periods ahead"
        return None


def default_cycle_periods(period_seconds: int) -> int:
    """The default billing cycle: a 30-day month of periods, ``30·86400 // period_seconds``
    (2880 periods of 15 minutes), at least one period.

    Raises:
        ValueError: the period length is not positive.
    """
    if period_seconds <= 0:
        raise ValueError("the period length must be positive")
    return max(1, DEFAULT_CYCLE_DAYS * 86400 // period_seconds)


class _OutOfRange(ValueError):
    """A time that :mod:`datetime` cannot name (before year 1 or after year 9999)."""


def _out_of_range(what: str) -> ValueError:
    return _OutOfRange(f"{what} is outside the dates that can be named (years 1 to 9999)")


@dataclass(frozen=True)
class BillingCalendar:
    """Billing cycles of ``cycle_periods`` periods and the meter readings' deadlines.

    Periods and cycles are named as by :class:`Schedule` (ISO 8601 UTC with ``Z``); a cycle
    by the start of its first period. Every period lies in exactly one cycle, and cycle
    ``k + 1`` starts where cycle ``k`` ends. Pure: the clock is passed in where it matters.
    """

    period_seconds: int = 900
    cycle_periods: int = 2880
    reading_grace_periods: int = DEFAULT_READING_GRACE_PERIODS

    def __post_init__(self) -> None:
        for name in ("period_seconds", "cycle_periods", "reading_grace_periods"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")

    @property
    def period_length(self) -> dt.timedelta:
        """One period."""
        return dt.timedelta(seconds=self.period_seconds)

    @property
    def cycle_length(self) -> dt.timedelta:
        """One billing cycle."""
        return self.cycle_periods * self.period_length

    @property
    def schedule(self) -> Schedule:
        """The trading periods (with the default horizon)."""
        return Schedule(self.period_seconds)

    def cycle_start(self, t: dt.datetime) -> dt.datetime:
        """Return the start of the billing cycle that contains the instant ``t``.

        Raises:
            ValueError: that start is before year 1.
        """
        try:
            return EPOCH + ((t - EPOCH) // self.cycle_length) * self.cycle_length
        except OverflowError:
            raise _out_of_range(f"the billing cycle of {iso(t)}") from None

    def _period(self, period: str) -> dt.datetime:
        try:
            return self.schedule.parse_period(period)
        except OverflowError:
            raise _out_of_range(repr(period)) from None

    def parse_cycle(self, cycle: str) -> dt.datetime:
        """Return the start of the named cycle.

        Raises:
            ValueError: not a period's start, or a period that does not start a cycle.
        """
        try:
            start = self.schedule.parse_period(cycle)
        except _OutOfRange:
            raise
        except ValueError:
            raise ValueError(
                f"{cycle!r} is not the start of a billing cycle: not the start of a trading "
                "period (ISO 8601 UTC, e.g. 2026-01-01T00:00:00Z)"
            ) from None
        except OverflowError:
            raise _out_of_range(repr(cycle)) from None
        first = self.cycle_start(start)
        if first != start:
            raise ValueError(
                f"{cycle!r} is not the start of a billing cycle (cycles of "
                f"{self.cycle_periods} periods from {iso(EPOCH)}); the cycle containing it "
                f"starts at {iso(first)}"
            )
        try:  # its billing time, the reading deadline of its last period, can be named
            start + (self.cycle_periods + self.reading_grace_periods) * self.period_length
        except OverflowError:
            raise _out_of_range(f"the billing time of the cycle {cycle!r}") from None
        return start

    def cycle_of(self, period: str) -> str:
        """Return the name of the cycle containing ``period``.

        Raises:
            ValueError: not a period's name, or a cycle out of range.
        """
        return iso(self.cycle_start(self._period(period)))

    def position(self, period: str) -> int:
        """Return ``period``'s place in its cycle, ``0 … cycle_periods − 1``.

        Raises:
            ValueError: not a period's name.
        """
        start = self._period(period)
        return (start - self.cycle_start(start)) // self.period_length

    def first_period(self, cycle: str) -> str:
        """Return the name of the cycle's first period (the cycle's own name).

        Raises:
            ValueError: not a cycle's name.
        """
        return iso(self.parse_cycle(cycle))

    def last_period(self, cycle: str) -> str:
        """Return the name of the cycle's last period.

        Raises:
            ValueError: not a cycle's name, or out of range.
        """
        start = self.parse_cycle(cycle)
        try:
            return iso(start + (self.cycle_periods - 1) * self.period_length)
        except OverflowError:
            raise _out_of_range(f"the last period of {cycle!r}") from None

    def periods(self, cycle: str) -> list[str]:
        """Return the names of the cycle's periods, in order.

        Raises:
            ValueError: not a cycle's name, or out of range.
        """
        start = self.parse_cycle(cycle)
        self.last_period(cycle)  # the whole cycle can be named
        return [iso(start + k * self.period_length) for k in range(self.cycle_periods)]

    def next_cycle(self, cycle: str) -> str:
        """Return the name of the cycle after ``cycle``.

        Raises:
            ValueError: not a cycle's name, or out of range.
        """
        start = self.parse_cycle(cycle)
        try:
            return iso(start + self.cycle_length)
        except OverflowError:
            raise _out_of_range(f"the cycle after {cycle!r}") from None

    def reading_deadline(self, period: str) -> dt.datetime:
        """Return the reading deadline of ``period``: its end plus ``reading_grace_periods``
        periods. A reading is due after the period's end and before this instant.

        Raises:
            ValueError: not a period's name, or out of range.
        """
        start = self._period(period)
        try:
            return start + (1 + self.reading_grace_periods) * self.period_length
        except OverflowError:
            raise _out_of_range(f"the reading deadline of {period!r}") from None

    def billing_time(self, cycle: str) -> dt.datetime:
        """Return when the cycle is billed: the reading deadline of its last period.

        Raises:
            ValueError: not a cycle's name, or out of range.
        """
        return self.reading_deadline(self.last_period(cycle))
