"""The connections sealgrid's HTTPS clients open: each made and owned whole by the event loop.

aiohttp's own ``TCPConnector`` makes every socket in Python (through aiohappyeyeballs),
connects it, and hands it to ``loop.create_connection(sock=...)``. On uvloop (0.23 included)
that hand-over races. uvloop opens its transport on the socket's descriptor, resolves the
call's waiter, and only when the call resumes does it tie the Python socket to the transport.
A peer that resets the connection in between (a server killed while households connect)
gets the transport closed first: libuv closes the descriptor, and the Python socket, never
tied, still holds its number. Its close, or the garbage collector's, later closes whatever
descriptor the kernel has since handed out under that number: another household's
connection, a pipe, a log file. libuv then aborts the whole process (SIGABRT) when it next
changes the epoll registration of the descriptor it still watches there.

:class:`LoopConnector` keeps aiohttp's pool (limits, keep-alive, ``force_close``) and opens
each connection with ``loop.create_connection(host, port, ssl=...)``: on uvloop libuv makes,
connects and closes the socket itself, and no Python object ever holds its number; on
asyncio's loop the transport owns its socket, as it always has. Each connection it opens
raises the audit event ``sealgrid.connect`` with the host and port (what ``sealgrid bench
service`` counts).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:  # aiohttp's own types of a connector's one duty
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

#: The audit event raised, with ``(host, port)``, for every connection a connector opens.
AUDIT_EVENT = "sealgrid.connect"


class LoopConnector(aiohttp.BaseConnector):
    """aiohttp's connection pool over connections that the event loop makes and owns.

    ``ssl_context`` is used for every ``https`` request, with the request's
    ``server_hostname`` (else its host) as the name its certificate must carry; ``http``
    requests connect in the clear. The other arguments are aiohttp's ``BaseConnector``'s.
    """

    def __init__(self, ssl_context: ssl.SSLContext, *, limit: int = 100,
                 force_close: bool = False, **kwargs: Any) -> None:
        super().__init__(limit=limit, force_close=force_close, **kwargs)
        self._ssl_context = ssl_context

    def close(self, *, abort_ssl: bool = True) -> Awaitable[None]:
        """Close every pooled connection; a TLS one is aborted, with no ``close_notify``
        exchange, unless ``abort_ssl`` is false: what aiohttp's ``TCPConnector`` does when
        closed. A household's session ends so after each bid, its answers read, as it did
        over aiohttp's connector."""
        return super().close(abort_ssl=abort_ssl)

    async def _create_connection(self, req: ClientRequest, traces: list[Trace],
                                 timeout: aiohttp.ClientTimeout) -> ResponseHandler:
        host, port = req.url.raw_host, req.port
        assert host is not None and port is not None  # aiohttp refuses a URL without them
        tls = req.is_ssl()
        sys.audit(AUDIT_EVENT, host, port)
        try:
            async with asyncio.timeout(timeout.sock_connect):
                _, proto = await self._loop.create_connection(
                    self._factory, host, port,
                    ssl=self._ssl_context if tls else None,
                    server_hostname=(req.server_hostname or host) if tls else None,
                )
        except ssl.CertificateError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise  # a timeout of aiohttp's own, let through as its connectors do
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
        return proto
