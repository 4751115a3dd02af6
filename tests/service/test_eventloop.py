"""The event loop sealgrid's servers run on: uvloop's (a dependency on Linux), or asyncio's
when ``SEALGRID_EVENT_LOOP=asyncio`` asks for it."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from sealgrid.service import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_the_servers_run_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_name() == "uvloop"  # installed with sealgrid
    assert eventloop.run(_loop_module()).startswith("uvloop")


async def _child_exit_code() -> int:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(7)")
    return await child.wait()


def test_asyncio_s_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, " AsyncIO ")
    assert eventloop.loop_name() == "asyncio"
    before = asyncio.get_event_loop_policy()  # uvloop's in this process (tests/conftest.py)
    assert eventloop.run(_loop_module()).startswith("asyncio")
    # with its own policy too: a server starts its MPC parties as child processes
    assert eventloop.run(_child_exit_code()) == 7
    assert asyncio.get_event_loop_policy() is before


def test_another_loop_is_refused_and_nothing_is_left_unawaited(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    main = _loop_module()
    with pytest.raises(ValueError, match="SEALGRID_EVENT_LOOP must be 'uvloop' or 'asyncio'"):
        eventloop.run(main)
    assert inspect.getcoroutinestate(main) == "CORO_CLOSED"  # closed, not left to warn
