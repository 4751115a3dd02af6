"""The life of a trading period after its gate closes, as one pure state machine.

In the style of :mod:`sealgrid.service.intake` (h11's habit): the server shell feeds events
with the current time and gets back what to do; it only performs the I/O. A period goes

    closed → agreed → cleared | no_trade | failed

``closed``: the gate has passed, the bid set is frozen; ``agreed``: the servers' common bid set
is fixed; ``cleared`` / ``no_trade``: the clearing ran and its outputs are stored; ``failed``:
the deadline passed without a clearing, for good. A clearing attempt that fails (a peer
unreachable, an MPC party that died, a timeout) is tried again with backoff — 1 s, doubling
up to 8 s — until the period's *deadline*, the end of ``t_{i−2}`` (SPEC §2: the servers clear
``t_i`` during ``t_{i−2}`` and deliver its outputs before it ends; the gate of ``t_i`` is the
start of ``t_{i−2}``). A server restarted before the deadline resumes from what it stored.

Events in: :class:`GateClosed`, :class:`BidSetAgreed`, :class:`AttemptFailed`,
:class:`ClearingDone`, :class:`Tick`. Events out: :class:`StartAttempt` (run one attempt
now), :class:`GiveUp` (store ``failed`` with the reason every household will read).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from sealgrid.service.schedule import Schedule

#: The first wait after a failed attempt, and the longest.
FIRST_BACKOFF = dt.timedelta(seconds=1)
MAX_BACKOFF = dt.timedelta(seconds=8)


class PeriodStatus(enum.Enum):
    """Where a period is after its gate closed (the values are what the servers store)."""

    CLOSED = "closed"
    AGREED = "agreed"
    CLEARED = "cleared"
    NO_TRADE = "no_trade"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether nothing more happens to the period."""
        return self in (PeriodStatus.CLEARED, PeriodStatus.NO_TRADE, PeriodStatus.FAILED)


# --------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class GateClosed:
    """The gate of ``period`` has passed (or a restarted server found it unfinished)."""

    period: str
    now: dt.datetime
    status: PeriodStatus = PeriodStatus.CLOSED


@dataclass(frozen=True)
class BidSetAgreed:
    """This attempt fixed the servers' common bid set."""

    period: str


@dataclass(frozen=True)
class AttemptFailed:
    """This attempt did not clear the period (``reason`` says why)."""

    period: str
    reason: str
    now: dt.datetime


@dataclass(frozen=True)
class ClearingDone:
    """The clearing ran; its outcome is stored (``status``: cleared or no_trade)."""

    period: str
    status: PeriodStatus


@dataclass(frozen=True)
class Tick:
    """Time passed."""

    now: dt.datetime


# --------------------------------------------------------------------------- events out


@dataclass(frozen=True)
class StartAttempt:
    """Run one attempt of ``period`` now; ``deadline`` bounds every wait inside it."""

    period: str
    attempt: int
    deadline: dt.datetime


@dataclass(frozen=True)
class GiveUp:
    """The deadline passed: store ``period`` as failed for good, with ``reason``."""

    period: str
    reason: str


Out = StartAttempt | GiveUp


@dataclass
class _Period:
    status: PeriodStatus
    deadline: dt.datetime
    attempts: int = 0
    running: bool = False
    next_try: dt.datetime | None = None
    last_reason: str = ""


@dataclass
class Lifecycle:
    """Every finishing period's state; :meth:`receive` is the one place it changes."""

    schedule: Schedule
    _periods: dict[str, _Period] = field(default_factory=dict)

    def deadline(self, period: str) -> dt.datetime:
        """The end of ``t_{i−2}``: the gate closure of ``period`` plus one period."""
        start = self.schedule.parse_period(period)
        return self.schedule.gate_closure(start) + self.schedule.length

    def status(self, period: str) -> PeriodStatus | None:
        """The period's status, None when it is not (or no longer) followed here."""
        state = self._periods.get(period)
        return None if state is None else state.status

    def attempts(self, period: str) -> int:
        """How many attempts of ``period`` have started."""
        state = self._periods.get(period)
        return 0 if state is None else state.attempts

    def receive(self, event: GateClosed | BidSetAgreed | AttemptFailed | ClearingDone | Tick
                ) -> list[Out]:
        """Process one event; return what the shell must do."""
        if isinstance(event, GateClosed):
            if event.period in self._periods or event.status.final:
                return []
            state = _Period(event.status, self.deadline(event.period), next_try=event.now)
            self._periods[event.period] = state
            return self._due(event.now)
        if isinstance(event, BidSetAgreed):
            found = self._periods.get(event.period)
            if found is not None and found.status is PeriodStatus.CLOSED:
                found.status = PeriodStatus.AGREED
            return []
        if isinstance(event, ClearingDone):
            if not event.status.final or event.status is PeriodStatus.FAILED:
                raise ValueError("a clearing is done as cleared or no_trade")
            self._periods.pop(event.period, None)
            return []
        if isinstance(event, AttemptFailed):
            failed = self._periods.get(event.period)
            if failed is None:
                return []
            state = failed
            state.running = False
            state.last_reason = event.reason
            wait = min(FIRST_BACKOFF * 2 ** max(0, state.attempts - 1), MAX_BACKOFF)
            if event.now + wait >= state.deadline:
                del self._periods[event.period]
                return [GiveUp(event.period, self._reason(state))]
            state.next_try = event.now + wait
            return []
        return self._due(event.now)

    def _reason(self, state: _Period) -> str:
        tried = f"{state.attempts} attempt{'s' if state.attempts != 1 else ''}"
        last = f"; the last: {state.last_reason}" if state.last_reason else ""
        return f"not cleared by the deadline {state.deadline.isoformat()} ({tried}{last})"

    def _due(self, now: dt.datetime) -> list[Out]:
        out: list[Out] = []
        for period, state in sorted(self._periods.items()):
            if state.running:
                continue
            if now >= state.deadline:
                del self._periods[period]
                out.append(GiveUp(period, self._reason(state)))
            elif state.next_try is not None and now >= state.next_try:
                state.running = True
                state.attempts += 1
                state.next_try = None
                out.append(StartAttempt(period, state.attempts, state.deadline))
        return out
