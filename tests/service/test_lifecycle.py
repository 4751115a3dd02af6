"""The period lifecycle as a pure state machine: attempts, backoff, the deadline."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from sealgrid.service.lifecycle import (
    AttemptFailed,
    BidSetAgreed,
    ClearingDone,
    GateClosed,
    GiveUp,
    Lifecycle,
    Out,
    PeriodStatus,
    StartAttempt,
    Tick,
)
from sealgrid.service.schedule import Schedule

S = Schedule(60)
PERIOD = "2026-11-29T12:00:00Z"
GATE = S.gate_closure(S.parse_period(PERIOD))  # 11:58
DEADLINE = GATE + dt.timedelta(seconds=60)  # the end of t_{i-2}


def at(seconds: float) -> dt.datetime:
    return GATE + dt.timedelta(seconds=seconds)


def test_the_deadline_is_the_end_of_the_period_after_the_gate() -> None:
    assert Lifecycle(S).deadline(PERIOD) == DEADLINE == S.parse_period(PERIOD) - S.length


def test_a_clean_period_takes_one_attempt() -> None:
    life = Lifecycle(S)
    assert life.receive(GateClosed(PERIOD, at(0))) == [StartAttempt(PERIOD, 1, DEADLINE)]
    assert life.receive(Tick(at(1))) == []  # running: nothing new
    life.receive(BidSetAgreed(PERIOD))
    assert life.status(PERIOD) is PeriodStatus.AGREED
    assert life.receive(ClearingDone(PERIOD, PeriodStatus.CLEARED)) == []
    assert life.status(PERIOD) is None and life.receive(Tick(at(30))) == []


def test_failed_attempts_are_retried_with_backoff_until_the_deadline() -> None:
    life = Lifecycle(S)
    life.receive(GateClosed(PERIOD, at(0)))
    starts = [0.0]
    now = 0.0
    while True:
        now += 0.5  # each attempt fails half a second after it started
        outs = life.receive(AttemptFailed(PERIOD, "server 2 did not give its bid set", at(now)))
        if outs:
            assert outs == [GiveUp(PERIOD, outs[0].reason)]  # type: ignore[union-attr]
            assert "server 2 did not give its bid set" in outs[0].reason  # type: ignore[union-attr]
            break
        started: list[Out] = []
        while not started:
            now += 0.25
            started = life.receive(Tick(at(now)))
        assert started == [StartAttempt(PERIOD, len(starts) + 1, DEADLINE)]
        starts.append(now)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[:4] == pytest.approx([1.5, 2.5, 4.5, 8.5], abs=0.26)  # 0.5 s run + 1, 2, 4, 8
    assert max(gaps) <= 8.75  # the backoff stops doubling at 8 s
    assert at(starts[-1]) < DEADLINE <= at(now) + dt.timedelta(seconds=8)
    assert life.status(PERIOD) is None


def test_a_period_found_unfinished_after_the_deadline_fails_at_once() -> None:
    life = Lifecycle(S)
    outs = life.receive(GateClosed(PERIOD, at(61), PeriodStatus.AGREED))
    assert len(outs) == 1 and isinstance(outs[0], GiveUp)
    assert "not cleared by the deadline" in outs[0].reason


def test_a_restarted_server_resumes_an_agreed_period_before_the_deadline() -> None:
    life = Lifecycle(S)
    outs = life.receive(GateClosed(PERIOD, at(10), PeriodStatus.AGREED))
    assert outs == [StartAttempt(PERIOD, 1, DEADLINE)]
    assert life.status(PERIOD) is PeriodStatus.AGREED
    assert life.receive(GateClosed(PERIOD, at(11))) == []  # told twice: once is enough
    assert life.receive(GateClosed("2026-11-29T12:01:00Z", at(11), PeriodStatus.CLEARED)) == []


def test_a_done_clearing_is_cleared_or_no_trade() -> None:
    life = Lifecycle(S)
    life.receive(GateClosed(PERIOD, at(0)))
    with pytest.raises(ValueError):
        life.receive(ClearingDone(PERIOD, PeriodStatus.FAILED))
    assert PeriodStatus.NO_TRADE.final and not PeriodStatus.AGREED.final
