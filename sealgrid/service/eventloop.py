"""The event loop a sealgrid process runs on: uvloop's where installed, asyncio's otherwise.

uvloop (libuv, with TLS in compiled code) is a dependency on Linux and macOS, and MPyC's
parties run on it too whenever it is installed. Against asyncio's own loop it takes about a
quarter off what a new TLS connection and its request cost a server (``sealgrid bench tls``;
docs/service.md, "Performance"). ``SEALGRID_EVENT_LOOP=asyncio`` runs asyncio's loop instead
(for comparison, or to rule the loop out when something goes wrong).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: The environment variable that chooses the loop: ``uvloop`` (the default) or ``asyncio``.
ENV = "SEALGRID_EVENT_LOOP"


def loop_name() -> str:
    """The loop :func:`run` uses here: ``uvloop`` when installed and not turned off by
    ``SEALGRID_EVENT_LOOP=asyncio``, else ``asyncio``.

    Raises:
        ValueError: ``SEALGRID_EVENT_LOOP`` names another loop.
    """
    wanted = os.environ.get(ENV, "uvloop").strip().lower() or "uvloop"
    if wanted not in ("uvloop", "asyncio"):
        raise ValueError(f"{ENV} must be 'uvloop' or 'asyncio', not {wanted!r}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop of the kind :func:`loop_name` says, as
    :func:`asyncio.run` does."""
    try:
        name = loop_name()
    except ValueError:
        main.close()
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    # asyncio's own loop and policy (its child watcher, for subprocesses), whatever policy an
    # import has set (MPyC's, with uvloop installed); that one is put back afterwards
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        return asyncio.run(main)
    finally:
        asyncio.set_event_loop_policy(before)
