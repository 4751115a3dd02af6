"""Suite-wide rules: under CI (``CI=true``) a skipped test fails; no check is skipped silently.
Every test runs on the event loop the servers run (:mod:`sealgrid.service.eventloop`)."""

from __future__ import annotations

import asyncio
import os

import pytest

from sealgrid.service import eventloop

if eventloop.loop_name() == "uvloop":  # what the servers and MPyC's parties run, everywhere:
    import uvloop  # not only after a test happened to import MPyC, which sets it

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI, which counts as a failure: {reason}"
