"""One TOML file per computation server; assumes paths in it are absolute or relative to it.

Example (written by ``sealgrid init``)::

    party = 0
    servers = ["https://127.0.0.1:8440", "https://127.0.0.1:8441", "https://127.0.0.1:8442"]
    listen = "127.0.0.1:8440"
    database = "sqlite:///…/server-0/bids.sqlite"   # or "postgresql://user@host/db"
    registry = "…/registry.json"
    ca = "…/servers.pem"          # the servers' pinned certificates (as in the registry)
    tls_cert = "…/server-0/tls.crt"
    tls_key = "…/server-0/tls.key"
    signing_key = "…/server-0/signing.key"

    [market]
    period_seconds = 900          # trading period length
    horizon_periods = 96          # how far ahead bids are taken
    max_payload_bytes = 65536     # one server's share payload
    rate_limit = 20               # signed pseudonym requests per household …
    rate_window_seconds = 60      # … per this many seconds
    challenge_ttl_seconds = 60
    peer_timeout_seconds = 30     # waiting for peers at gate closure
    price_floor = "80"            # price grid, currency per kWh (cents here): the feed-in
    price_ceiling = "120"         # tariff to the retail price (docs/mechanism.md)
    price_tick = "0.1"
    max_quantity_wh = 10000
    min_accepted_per_side = 3     # accepted bids each side needs for a period to trade

    [mpc]
    base_port = 11365
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.market import (
    DEFAULT_GRID,
    DEFAULT_MAX_QUANTITY_WH,
    DEFAULT_PERIOD_SECONDS,
    SERVICE_MIN_ACCEPTED_PER_SIDE,
    Market,
)
from sealgrid.service.intake import Limits


class ConfigError(Exception):
    """The server configuration is missing, malformed or inconsistent."""


_LIMIT_KEYS = frozenset(f.name for f in fields(Limits))


@dataclass(frozen=True)
class MarketConfig:
    """The ``[market]`` table: the market's rules and the intake limits (equal on every server).

    The market itself is :meth:`market` (a :class:`~sealgrid.mechanism.market.Market`); the
    intake's four limits are one :class:`~sealgrid.service.intake.Limits`, written as flat keys
    in the table like the rest.
    """

    period_seconds: int = DEFAULT_PERIOD_SECONDS
    horizon_periods: int = 96
    peer_timeout_seconds: int = 30
    price_floor: str = str(DEFAULT_GRID.floor)
    price_ceiling: str = str(DEFAULT_GRID.ceiling)
    price_tick: str = str(DEFAULT_GRID.tick)
    max_quantity_wh: int = DEFAULT_MAX_QUANTITY_WH
    min_accepted_per_side: int = SERVICE_MIN_ACCEPTED_PER_SIDE
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.min_accepted_per_side < 1:
            raise ValueError("min_accepted_per_side must be at least 1")

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> MarketConfig:
        """Read the ``[market]`` table (flat keys, the intake limits among them).

        Raises:
            TypeError: an unknown key.
        """
        limits = {k: v for k, v in table.items() if k in _LIMIT_KEYS}
        rest = {k: v for k, v in table.items() if k not in _LIMIT_KEYS}
        return cls(**rest, limits=Limits(**limits))

    @property
    def grid(self) -> PriceGrid:
        """The market's price grid (cents per kWh by default: feed-in 80 to retail 120)."""
        return PriceGrid.from_values(self.price_floor, self.price_ceiling, self.price_tick)

    def market(self, suppliers: tuple[str, ...]) -> Market:
        """The market these servers run, with its registered ``suppliers``."""
        return Market(
            self.grid,
            self.max_quantity_wh,
            suppliers,
            self.period_seconds,
            self.min_accepted_per_side,
        )


@dataclass(frozen=True)
class ServerConfig:
    """Everything one computation server needs to start."""

    party: int
    servers: tuple[str, ...]
    listen_host: str
    listen_port: int
    database: str
    registry: Path
    ca: Path
    tls_cert: Path
    tls_key: Path
    signing_key: Path
    market: MarketConfig = field(default_factory=MarketConfig)
    mpc_base_port: int = 11365
    path: Path | None = None

    @property
    def data_dir(self) -> Path:
        """The server's own directory (that of its TOML file, else of its signing key)."""
        return (self.path or self.signing_key).parent


def load_server_config(path: Path) -> ServerConfig:
    """Read and check one server's TOML file.

    Raises:
        ConfigError: unreadable, a key missing or of the wrong type.
    """
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    base = path.parent

    def p(key: str) -> Path:
        value = data.get(key)
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key!r} must be a path")
        return (base / value).resolve()

    try:
        party = int(data["party"])
        servers = tuple(str(u) for u in data["servers"])
        host, _, port = str(data["listen"]).rpartition(":")
        market = MarketConfig.from_table(data.get("market", {}))
        mpc = data.get("mpc", {})
        cfg = ServerConfig(
            party=party,
            servers=servers,
            listen_host=host,
            listen_port=int(port),
            database=str(data.get("database", f"sqlite:///{base / 'bids.sqlite'}")),
            registry=p("registry"),
            ca=p("ca"),
            tls_cert=p("tls_cert"),
            tls_key=p("tls_key"),
            signing_key=p("signing_key"),
            market=market,
            mpc_base_port=int(mpc.get("base_port", 11365)),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not 0 <= party < len(servers):
        raise ConfigError(f"{path}: party {party} is not an index into servers")
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_server_config(
    path: Path,
    *,
    party: int,
    data_dir: Path,
    urls: list[str],
    period_seconds: int,
    extra: dict[str, Any],
    server_dir: Path | None = None,
    registry: Path | None = None,
    ca: Path | None = None,
    listen: str | None = None,
) -> None:
    """Write server ``party``'s TOML file with the layout of :mod:`sealgrid.service.keys`.

    ``server_dir`` (default ``data_dir/server-N``) holds the server's keys and database;
    ``registry`` and ``ca`` (the servers' pinned certificates) default to ``registry.json``
    and ``servers.pem`` in ``data_dir``; ``listen`` to the host and port of its URL.
    """
    sdir = server_dir or data_dir / f"server-{party}"
    url = urlsplit(urls[party])
    listen = listen or f"{url.hostname}:{url.port}"
    registry = registry or data_dir / "registry.json"
    ca = ca or data_dir / "servers.pem"
    market = {"period_seconds": period_seconds, **extra.get("market", {})}
    lines = [
        f"party = {party}",
        f"servers = {_toml_value(urls)}",
        f"listen = {_toml_value(listen)}",
        f"database = {_toml_value('sqlite:///' + str(sdir / 'bids.sqlite'))}",
        f"registry = {_toml_value(str(registry))}",
        f"ca = {_toml_value(str(ca))}",
        f"tls_cert = {_toml_value(str(sdir / 'tls.crt'))}",
        f"tls_key = {_toml_value(str(sdir / 'tls.key'))}",
        f"signing_key = {_toml_value(str(sdir / 'signing.key'))}",
        "",
        "[market]",
        *(f"{k} = {_toml_value(v)}" for k, v in market.items()),
        "",
        "[mpc]",
        f"base_port = {int(extra.get('mpc_base_port', 11365))}",
        "",
    ]
    path.write_text("\n".join(lines))
