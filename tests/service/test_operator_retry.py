"""The client tries a ``503 unavailable`` again, for requests that are safe to repeat only,
with backoff or the server's ``Retry-After``, a few times within a bounded time; against real
aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.service import wire
from sealgrid.service.client import (
    Client,
    HouseholdClient,
    Retry,
    ServiceError,
    Unreachable,
    retry_after_seconds,
)
from sealgrid.service.keys import Registry

FAST = Retry(attempts=3, total_seconds=5, first_wait=0.05, max_wait=0.2)


@dataclass
class Busy:
    """A server that answers 503 to its first ``busy`` requests of each path it is told to,
    then answers as it would; it keeps every request's time and body."""

    busy: dict[str, int]  # path → how many 503s (-1: always)
    retry_after: str | None = None
    seen: dict[str, list[tuple[float, bytes]]] = field(default_factory=dict)
    nonces: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        got = self.seen.setdefault(request.path, [])
        got.append((time.monotonic(), body))
        left = self.busy.get(request.path, 0)
        if left == -1 or len(got) <= left:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": "unavailable", "message": "retry"}, status=503,
                                     headers=headers)
        if request.path == "/v1/challenge":
            self.nonces += 1
            return web.json_response({"nonce": wire.b64e(self.nonces.to_bytes(16, "big"))})
        if request.path == "/v1/hello":
            return web.json_response({"server": 0, "registered": True})
        if request.path.startswith("/v1/periods/"):
            return web.json_response({"error": "not_finished", "message": "…"}, status=404)
        return web.json_response({"stored": True}, status=201)


@asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> AsyncIterator[str]:
    """Serve ``handler`` for every path on a loopback port; yield the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _registry(url: str) -> Registry:
    return Registry(servers=((url, b"\x00" * 32),), households={}, suppliers={}, operators={})


def _client(url: str, retry: Retry = FAST) -> HouseholdClient:
    """A household's client of the one server at ``url`` (plain HTTP: its own session)."""
    return HouseholdClient(_registry(url), Path("unused"), "h1", Ed25519PrivateKey.generate(),
                           open_session_plain(), retry=retry)


def open_session_plain() -> aiohttp.ClientSession:
    """A session for plain HTTP (the client's own trusts pinned certificates only)."""
    return aiohttp.ClientSession()


T = TypeVar("T")


async def _with(fake: Busy, retry: Retry, use: Callable[[HouseholdClient], Awaitable[T]]
                ) -> T:
    async with serving(fake.handle) as url:
        client = _client(url, retry)
        try:
            return await use(client)
        finally:
            assert client._session is not None
            await client._session.close()


def test_a_503_then_an_answer_is_retried_with_backoff() -> None:
    fake = Busy({"/v1/challenge": 2, "/v1/periods/2031-01-01T00:00:00Z": 3})
    nonce = asyncio.run(_with(fake, FAST, lambda c: c.challenge(0)))
    assert nonce == (1).to_bytes(16, "big") and len(fake.seen["/v1/challenge"]) == 3
    # a read: 503 three times, then "not finished" (the fourth try, within the bound)
    more = Retry(attempts=4, total_seconds=5, first_wait=0.05, max_wait=0.2)
    found = asyncio.run(_with(fake, more, lambda c: c.statement(0, "2031-01-01T00:00:00Z")))
    assert found is None and len(fake.seen["/v1/periods/2031-01-01T00:00:00Z"]) == 4


def test_a_bid_is_resent_unchanged_and_a_token_request_is_not() -> None:
    fake = Busy({"/v1/bids": 1, "/v1/pseudonyms": 1})

    async def use(c: HouseholdClient) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        bid = await c.call(0, "POST", "/v1/bids", b'{"bid": 1}')
        tokens = await c.call(0, "POST", "/v1/pseudonyms", b'{"signed over": "a challenge"}')
        return bid, tokens

    bid, tokens = asyncio.run(_with(fake, FAST, use))
    assert bid[0] == 201 and [b for _, b in fake.seen["/v1/bids"]] == [b'{"bid": 1}'] * 2
    assert tokens[0] == 503 and len(fake.seen["/v1/pseudonyms"]) == 1  # its challenge is spent


def test_a_signed_request_is_retried_over_a_fresh_challenge() -> None:
    fake = Busy({"/v1/hello": 2})
    answers = asyncio.run(_with(fake, FAST, lambda c: c.register()))
    assert answers == [{"server": 0, "registered": True}]
    nonces = [json.loads(body)["nonce"] for _, body in fake.seen["/v1/hello"]]
    assert len(nonces) == 3 and len(set(nonces)) == 3  # one challenge per try
    assert len(fake.seen["/v1/challenge"]) == 3


def test_retry_after_is_honoured() -> None:
    fake = Busy({"/v1/challenge": 1}, retry_after="1")
    asyncio.run(_with(fake, FAST, lambda c: c.challenge(0)))
    (first, _), (second, _) = fake.seen["/v1/challenge"]
    assert 1.0 <= second - first < 3.0  # not the backoff of at most 0.05 s


def test_always_503_gives_up_naming_the_tries_and_the_rule() -> None:
    fake = Busy({"/v1/challenge": -1})
    with pytest.raises(Unreachable) as caught:
        asyncio.run(_with(fake, FAST, lambda c: c.challenge(0)))
    said = str(caught.value)
    assert said.startswith("server 0 unavailable (HTTP 503) after 3 attempts in "), said
    assert said.endswith(" s (a 503 is tried at most 3 times within 5 s)"), said
    assert len(fake.seen["/v1/challenge"]) == 3
    # a bid that stays unavailable is collected as unreachable, as before the retries
    fake = Busy({"/v1/bids": -1})
    with pytest.raises(Unreachable, match="after 3 attempts"):
        asyncio.run(_with(fake, FAST, lambda c: c.call(0, "POST", "/v1/bids", b"{}")))


def test_the_tries_stop_at_the_total_time() -> None:
    fake = Busy({"/v1/challenge": -1})
    slow = Retry(attempts=100, total_seconds=0.6, first_wait=0.2, max_wait=0.2)
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"within 0.6 s\)$"):
        asyncio.run(_with(fake, slow, lambda c: c.challenge(0)))
    assert time.monotonic() - started < 5.0 and 2 <= len(fake.seen["/v1/challenge"]) < 100
    (first, _), *_, (last, _) = fake.seen["/v1/challenge"]
    assert last - first <= 0.6 + 0.3  # the last wait ended within 0.6 s (and a request's time)
    # a Retry-After beyond the time left ends the tries at once, and says so
    fake = Busy({"/v1/challenge": -1}, retry_after="120")
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"after 1 attempt in .*; it asked to wait 120 s\)$"):
        asyncio.run(_with(fake, FAST, lambda c: c.challenge(0)))
    assert time.monotonic() - started < 5.0 and len(fake.seen["/v1/challenge"]) == 1


def test_the_total_time_counts_a_slow_first_answer() -> None:
    """The time limit runs from the first request, not from its answer: a first 503 that
    took most of the limit leaves time for few tries more."""
    fake = Busy({"/v1/challenge": -1})
    slow_first = 0.5

    async def handle(request: web.Request) -> web.StreamResponse:
        if not fake.seen.get(request.path):
            await asyncio.sleep(slow_first)
        return await fake.handle(request)

    async def run() -> float:
        async with serving(handle) as url:
            client = _client(url, Retry(attempts=100, total_seconds=0.8, first_wait=0.05,
                                        max_wait=0.05))
            started = time.monotonic()
            try:
                with pytest.raises(Unreachable, match=r"within 0.8 s\)$"):
                    await client.challenge(0)
            finally:
                assert client._session is not None
                await client._session.close()
            return started

    started = asyncio.run(run())
    times = [t for t, _ in fake.seen["/v1/challenge"]]
    assert len(times) >= 2  # some time was left for a try more
    assert times[-1] - started <= 0.8 + 0.1, [round(t - started, 3) for t in times]


def test_another_error_is_not_retried() -> None:
    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"error": "forbidden", "message": "no"}, status=500)

    seen: list[str] = []

    async def use() -> None:
        async with serving(refuse) as url:
            client = _client(url)
            try:
                await client.challenge(0)
            finally:
                assert client._session is not None
                await client._session.close()

    with pytest.raises(ServiceError, match=r"gave no challenge \(HTTP 500\)"):
        asyncio.run(use())
    assert seen == ["/v1/challenge"]


def test_retry_after_is_whole_seconds_or_an_http_date() -> None:
    now = dt.datetime(2031, 1, 1, 12, 0, tzinfo=dt.UTC)
    later = email.utils.format_datetime(now + dt.timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(later, now) == 30.0
    assert retry_after_seconds(email.utils.format_datetime(now, usegmt=True),
                               now + dt.timedelta(hours=1)) == 0.0  # a date passed: at once
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None
    assert retry_after_seconds("-3", now) is None


def test_a_sealgrid_server_that_cannot_store_asks_to_retry_after_a_second(
    tmp_path: Path,
) -> None:
    """The real app: a bid its database could not store is answered 503 with Retry-After;
    the client resends the same bytes a second later and gets the next answer."""
    from sealgrid.mechanism.bids import Reason
    from sealgrid.service.api import build_app
    from sealgrid.service.config import load_server_config
    from sealgrid.service.intake import SAME_BID, Rejected
    from sealgrid.service.local import free_port_range
    from sealgrid.service.server import Server
    from sealgrid.service.setup import init_data_dir
    from sealgrid.service.storage import StorageError

    init_data_dir(tmp_path / "d", households=1, base_port=free_port_range(3))
    server = Server(load_server_config(tmp_path / "d" / "server-0" / "server.toml"))
    sent: list[tuple[float, bytes]] = []

    async def submit(raw: bytes) -> Rejected:
        sent.append((time.monotonic(), raw))
        if len(sent) == 1:
            raise StorageError("write failed: disk full")
        return Rejected(Reason.REPLAYED, SAME_BID)

    server.submit = submit  # type: ignore[method-assign]

    async def use() -> tuple[int, bytes]:
        runner = web.AppRunner(build_app(server))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            async with Client(_registry(url), Path("unused"), retry=FAST,
                              session=open_session_plain()) as client:
                try:
                    return await client.call(0, "POST", "/v1/bids", b'{"a": "bid"}')
                finally:
                    assert client._session is not None
                    await client._session.close()
        finally:
            await runner.cleanup()

    try:
        status, body = asyncio.run(use())
    finally:
        server.store.close()
    assert status == 409 and json.loads(body)["detail"] == SAME_BID
    assert [raw for _, raw in sent] == [b'{"a": "bid"}'] * 2
    assert sent[1][0] - sent[0][0] >= 1.0
