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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve until SIGINT or SIGTERM."""
    from sealgrid.cli import CliError
    from sealgrid.service.api import run_until_stopped
    from sealgrid.service.config import ConfigError, load_server_config
    from sealgrid.service.keys import DataDirError
    from sealgrid.service.server import Server
    from sealgrid.service.storage import StorageError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
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
        print(
            f"server {cfg.party} listening on https://{cfg.listen_host}:{cfg.listen_port}",
            flush=True,
        )
        await run_until_stopped(server, stop)

    try:
        asyncio.run(main())
    except (DataDirError, StorageError, OSError) as exc:
        raise CliError(str(exc)) from exc
    return 0
