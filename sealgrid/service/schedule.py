"""Trading periods and gate closure (docs/service.md); pure functions, the clock is passed in.

Periods have a fixed length and start at whole multiples of it since the Unix epoch (UTC).
A period is named by its start in ISO 8601 with a ``Z`` suffix, e.g. ``2026-11-22T21:15:00Z``.
Bids for ``t_i`` are taken until the start of ``t_{i-2}`` (gate closure), so the servers clear
``t_i`` during ``t_{i-2}`` and deliver before ``t_{i-1}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sealgrid.mechanism.bids import Reason

Clock = Callable[[], dt.datetime]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
GATE_PERIODS = 2


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

        Raises:
            ValueError: not a time, or not on a period boundary.
        """
        start = parse_time(period)
        if start != self.start_of(start) or self.period_id(start) != period:
            raise ValueError(f"{period!r} is not the start of a trading period")
        return start

    def gate_closure(self, start: dt.datetime) -> dt.datetime:
        """Return when bidding for the period starting at ``start`` closes."""
        return start - GATE_PERIODS * self.length

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
