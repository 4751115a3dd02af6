"""``sealgrid serve --config server-N.toml``: run one computation server until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid serve``."""
    parser = sub.add_parser("serve", help="run one computation server (HTTPS, until stopped)")
    parser.add_argument("--config", required=True, type=Path, help="the server's TOML file")
    parser.add_argument(
        "--log-level", default="INFO", choices=LOG_LEVELS, metavar="LEVEL",
        help="logging level: DEBUG, INFO (default), WARNING, ERROR or CRITICAL, in any case",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="text lines (default; each begins with its time in UTC, e.g."
        " 2026-11-29T12:41:36.120Z) or one JSON object per line (time in UTC with Z, level,"
        " logger, message, exception)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="intake workers of this server: N processes share the port and one PostgreSQL"
        " database (default 1; SQLite serves one process). This process is worker 0 (it also"
        " closes gates, clears and settles) and starts the others, unless --worker is given",
    )
    parser.add_argument(
        "--worker", type=int, default=None, metavar="I",
        help="run only intake worker I (1 … N-1) of --workers N, e.g. on another host behind"
        " a load balancer (the leader, worker 0, runs elsewhere)",
    )
    parser.set_defaults(func=run)


class _Levels(tuple[str, ...]):
    """The logging levels ``--log-level`` takes, in any case (``choices`` of argparse, which
    lists them in its usage error); logging's other names (WARN, FATAL, NOTSET) are taken
    too, as before there was a list."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value.upper() in logging.getLevelNamesMapping()


LOG_LEVELS = _Levels(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


class UtcFormatter(logging.Formatter):
    """A text log line that begins with its time in UTC, ISO 8601 with ``Z`` and
    milliseconds (``2026-11-29T12:41:36.120Z sealgrid.server INFO …``); a traceback follows
    on the next lines, as logging writes it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time in UTC: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log to standard error at ``level``: as text lines, each beginning with its time in UTC
    (:class:`UtcFormatter`), or one JSON object per line (``fmt="json"``: ``time`` in UTC with
    ``Z``, ``level``, ``logger``, ``message``, ``exception``)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from sealgrid.service.metrics import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(UtcFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve until SIGINT or SIGTERM."""
    from sealgrid.cli import CliError
    from sealgrid.service import eventloop
    from sealgrid.service.api import run_until_stopped
    from sealgrid.service.config import ConfigError, load_server_config
    from sealgrid.service.keys import DataDirError
    from sealgrid.service.server import Server
    from sealgrid.service.storage import StorageError

    configure_logging(args.log_level, args.log_format)
    try:
        cfg = load_server_config(args.config)
        loop_kind = eventloop.loop_name()
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    workers = args.workers
    worker = 0 if args.worker is None else args.worker
    if workers < 1 or not 0 <= worker < workers:
        raise CliError(f"--worker must be 0 … {workers - 1} and --workers at least 1")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = Server(cfg, worker=worker, workers=workers)
        logging.getLogger("sealgrid.serve").info("event loop: %s", loop_kind)
        listening = f"server {cfg.party} listening on https://{cfg.listen_host}:{cfg.listen_port}"
        if workers > 1:
            listening += f" (worker {worker} of {workers})"

        def say() -> None:
            if args.log_format == "json":  # every line a JSON object
                logging.getLogger("sealgrid.serve").info("%s", listening)
            else:
                print(listening, flush=True)

        await run_until_stopped(server, stop, say)

    children = []
    try:
        if workers > 1 and args.worker is None:  # the leader starts the other workers
            children = [_start_worker(args, i) for i in range(1, workers)]
        eventloop.run(main())
    except (DataDirError, StorageError, OSError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        from sealgrid.service.local import stop_process

        for child in children:
            stop_process(child, 10)
    return 0


def _start_worker(args: argparse.Namespace, worker: int) -> subprocess.Popen[bytes]:
    """Start intake worker ``worker`` of this server as a child process."""
    return subprocess.Popen([
        sys.executable, "-m", "sealgrid", "serve", "--config", str(args.config),
        "--log-level", args.log_level, "--log-format", args.log_format,
        "--workers", str(args.workers), "--worker", str(worker)])
