"""The floor under a server's CPU per request: what the HTTP stack itself costs (``sealgrid
bench tls``).

A child process serves one route whose handler reads the body and answers a small JSON
object, nothing else: no signature, no token, no database. Clients open a new TLS connection
for every request, send one POST of ``body_bytes`` and close, as households do
(``Connection: close``). The server's TLS context is the one a sealgrid server uses
(:func:`sealgrid.service.server.https_context`: a P-256 certificate, an optional client
certificate, no session tickets) and the event loop is the one it runs
(:mod:`sealgrid.service.eventloop`: uvloop's, or asyncio's with ``SEALGRID_EVENT_LOOP=asyncio``;
``event_loop`` in the figures). Two listeners are measured, one after the other:

* ``aiohttp``: aiohttp's own TLS site;
* ``guarded``: the listener ``sealgrid serve`` runs (:func:`sealgrid.service.api.serve`'s
  ``_GuardedSite``: each connection counted in and limited before its handshake, TLS started
  over it, then handed to aiohttp).

The CPU is the child's own (``/proc``), read after a warm-up and after the requests, divided
by the requests. ``sealgrid bench service``'s ``server_cpu_ms_per_bid`` minus this floor is
what sealgrid's own work on a bid costs (parsing, the token check, two signatures, storage).

Under that floor lies the cryptography's own CPU, measured in the benchmark's process with no
socket, no HTTP and no event loop (:func:`crypto_floor`):

* ``tls_handshake_cpu_ms``: one TLS 1.3 handshake over memory buffers between a sealgrid
  server's context and a household's (:func:`sealgrid.service.client.client_context`), the
  CPU of each side (``server``, ``client``); a bid costs three, one with each server;
* ``bid_crypto_cpu_ms``: what a server's intake computes for one bid besides: the pseudonym's
  signature checked (``signature_check``), the token recomputed and compared
  (``token_check``), the receipt signed (``receipt_signature``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sealgrid.service import eventloop

#: Requests sent before the CPU is first read (imports, first handshakes).
WARM_UP = 50
VARIANTS = ("aiohttp", "guarded")


async def _serve(variant: str, cert: Path, key: Path, port: int, concurrency: int) -> None:
    from aiohttp import web

    from sealgrid.service.api import _GuardedSite
    from sealgrid.service.config import ConnectionLimits
    from sealgrid.service.server import https_context

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"bytes": len(body)})

    app = web.Application()
    app.router.add_post("/v1/floor", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = https_context(cert, key, cert.read_text())
    site: web.BaseSite
    if variant == "guarded":
        many = max(1024, 4 * concurrency)  # all from one address: the bench's own limits
        limits = ConnectionLimits(max_connections=many, max_per_client=many)
        site = _GuardedSite(runner, "127.0.0.1", port, ctx, limits)
    else:
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx, backlog=1024)
    await site.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    await runner.cleanup()


async def _requests(port: int, ctx: ssl.SSLContext, count: int, concurrency: int,
                    body: bytes) -> None:
    request = (b"POST /v1/floor HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body
    left = iter(range(count))

    async def one_at_a_time() -> None:
        for _ in left:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the floor server answered {answer[:60]!r}")

    await asyncio.gather(*(one_at_a_time() for _ in range(concurrency)))


def _measure(variant: str, cert: Path, key: Path, requests: int, concurrency: int,
             body_bytes: int) -> dict[str, float]:
    from sealgrid.service.bench import tree_cpu_seconds
    from sealgrid.service.local import free_port_range

    port = free_port_range(1)
    child = subprocess.Popen(
        [sys.executable, "-m", "sealgrid.service.floor", "--variant", variant, "--cert",
         str(cert), "--key", str(key), "--port", str(port), "--concurrency", str(concurrency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline() != b"ready\n":
            raise RuntimeError(f"the {variant} floor server did not start")
        ctx = ssl.create_default_context(cafile=str(cert))
        body = os.urandom(body_bytes)
        eventloop.run(_requests(port, ctx, WARM_UP, min(concurrency, WARM_UP), body))
        (cpu0,) = tree_cpu_seconds([child.pid])
        started = time.perf_counter()
        eventloop.run(_requests(port, ctx, requests, concurrency, body))
        seconds = time.perf_counter() - started
        (cpu1,) = tree_cpu_seconds([child.pid])
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return {"server_cpu_ms_per_request": round(1000 * (cpu1 - cpu0) / requests, 3),
            "requests_per_second": round(requests / seconds, 1)}


def _cpu_ms(step: Any, count: int) -> float:
    """Milliseconds of this process's CPU per call of ``step``, over ``count`` calls."""
    started = time.process_time()
    for _ in range(count):
        step()
    return round(1000 * (time.process_time() - started) / count, 4)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[float, float]:
    """One TLS handshake between ``server`` and ``client`` over memory buffers; the CPU
    seconds each side spent in it."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    spent = [0.0, 0.0]
    started = time.process_time()
    ends = [server.wrap_bio(to_server, to_client, server_side=True),
            client.wrap_bio(to_client, to_server, server_hostname="127.0.0.1")]
    spent[1] += time.process_time() - started  # the wraps are cheap; counted to the client
    done = [False, False]
    side = 1  # the client speaks first
    while not all(done):
        started = time.process_time()
        try:
            ends[side].do_handshake()
            done[side] = True
        except ssl.SSLWantReadError:
            pass
        spent[side] += time.process_time() - started
        side = 1 - side
    if ends[0].version() != "TLSv1.3":
        raise RuntimeError(f"the handshake gave {ends[0].version()}, not TLS 1.3")
    return spent[0], spent[1]


def crypto_floor(cert: Path, key: Path, count: int = 400) -> dict[str, Any]:
    """The cryptography's CPU under a bid, in this process (see the module's docstring):
    ``count`` handshakes and ``count`` of each intake step, after a warm-up of ten."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sealgrid.service import wire
    from sealgrid.service.client import client_context
    from sealgrid.service.server import https_context
    from sealgrid.service.tokens import token_input
    from sealgrid.service.voprf import Issuer, blind, finalize
    from sealgrid.service.wire import Receipt

    server, client = https_context(cert, key, cert.read_text()), client_context(cert)
    for _ in range(10):
        _handshake(server, client)
    sides = [_handshake(server, client) for _ in range(count)]
    period = "2026-01-01T00:00:00Z"
    pseudonym = Ed25519PrivateKey.generate()
    public = wire.raw_public(pseudonym)
    signed = os.urandom(1200)  # about a bid's signed bytes
    signature = pseudonym.sign(signed)
    issuer = Issuer.generate()
    data = token_input(period, public)
    blinding = blind(data)  # the household's token, as it gets it
    evaluated, proof = issuer.evaluate([blinding.blinded])
    (token,) = finalize(issuer.public, [data], [blinding], evaluated, proof)
    if not (issuer.verify_token(data, token)
            and wire.verify_bytes(signed, signature, public)):
        raise RuntimeError("the token or the signature made for the measurement did not check")
    receipt = Receipt(0, period, public, os.urandom(32), os.urandom(32))
    server_key = Ed25519PrivateKey.generate()
    return {
        "tls_handshake_cpu_ms": {
            "server": round(1000 * sum(s for s, _ in sides) / count, 4),
            "client": round(1000 * sum(c for _, c in sides) / count, 4),
        },
        "bid_crypto_cpu_ms": {
            "signature_check": _cpu_ms(lambda: wire.verify_bytes(signed, signature, public),
                                       count),
            "token_check": _cpu_ms(  # the input too: the intake computes it per bid
                lambda: issuer.verify_token(token_input(period, public), token), count),
            "receipt_signature": _cpu_ms(lambda: wire.sign_encoded(receipt, server_key),
                                         count),
        },
    }


def bench_floor(requests: int, *, concurrency: int = 32, body_bytes: int = 1500
                ) -> dict[str, Any]:
    """Measure both listeners (:data:`VARIANTS`) with ``requests`` new connections each;
    return the figures."""
    if requests < 1 or concurrency < 1 or body_bytes < 0:
        raise ValueError("at least one request, one in flight and a body of 0 bytes or more")
    from cryptography.hazmat.primitives.serialization import Encoding

    from sealgrid.protocol.certs import key_pem, new_key, self_signed

    key = new_key()
    cert = self_signed(key, "sealgrid floor", ["127.0.0.1"], days=1)
    with tempfile.TemporaryDirectory(prefix="sealgrid-floor-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
        key_path.write_bytes(key_pem(key))
        figures = {v: _measure(v, cert_path, key_path, requests, concurrency, body_bytes)
                   for v in VARIANTS}
        crypto = crypto_floor(cert_path, key_path)
    return {
        "target": "tls",
        "requests": requests,
        "concurrency": concurrency,
        "body_bytes": body_bytes,
        "cpu_count": os.cpu_count(),
        "event_loop": eventloop.loop_name(),
        "server_cpu_ms_per_request": {v: f["server_cpu_ms_per_request"]
                                      for v, f in figures.items()},
        "requests_per_second": {v: f["requests_per_second"] for v, f in figures.items()},
        **crypto,
    }


def main() -> int:
    """The floor server (a child of :func:`bench_floor`)."""
    parser = argparse.ArgumentParser(prog="sealgrid.service.floor")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    eventloop.run(_serve(args.variant, args.cert, args.key, args.port, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
