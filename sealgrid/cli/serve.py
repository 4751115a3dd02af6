"""``sealgrid serve --config server-N.toml``: run one computation server until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sealgrid serve``."""
    parser = sub.add_parser("serve", help="run one computation server (HTTPS, until stopped)")
    parser.add_argument("--config", required=True, type=Path, help="the server's TOML file")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="text lines (default) or one JSON object per line (time in UTC with Z, level,"
        " logger, message, exception)",
    )
    parser.set_defaults(func=run)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log to standard error at ``level``, as text lines or one JSON object per line."""
    if fmt == "json":
        from sealgrid.service.metrics import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    else:
        logging.basicConfig(
            level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve until SIGINT or SIGTERM."""
    from sealgrid.cli import CliError
    from sealgrid.service.api import run_until_stopped
    from sealgrid.service.config import ConfigError, load_server_config
    from sealgrid.service.keys import DataDirError
    from sealgrid.service.server import Server
    from sealgrid.service.storage import StorageError

    configure_logging(args.log_level, args.log_format)
    try:
        cfg = load_server_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = Server(cfg)
        listening = f"server {cfg.party} listening on https://{cfg.listen_host}:{cfg.listen_port}"
        if args.log_format == "json":  # every line a JSON object
            logging.getLogger("sealgrid.serve").info("%s", listening)
        else:
            print(listening, flush=True)
        await run_until_stopped(server, stop)

    try:
        asyncio.run(main())
    except (DataDirError, StorageError, OSError) as exc:
        raise CliError(str(exc)) from exc
    return 0
