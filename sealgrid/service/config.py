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
    max_challenges = 100000
    peer_timeout_seconds = 30     # waiting for peers at gate closure
    price_floor = "80"            # price grid, ct/kWh (the market's unit): the feed-in
    price_ceiling = "120"         # tariff to the retail price (docs/mechanism.md)
    price_tick = "0.1"
    max_quantity_wh = 10000
    min_accepted_per_side = 3     # accepted bids each side needs for a period to trade
    segment_seconds = 60          # while a period is open, validate its bids so far in a
    segment_min_bids = 1000       # segment every this many seconds, once this many wait (0: off)

    [mpc]
    base_port = 11365

    [connections]                 # this server's own bounds on HTTPS connections
    max_connections = 1024        # open at once, in all
    max_per_client = 256          # open at once from one client IP address
    tls_timeout_seconds = 10      # a TLS handshake (and a TLS close) must finish in this
    idle_timeout_seconds = 30     # a connection with no request, or a request's headers
    body_timeout_seconds = 30     # a request's body, once its headers are in

    [billing]                     # the billing of SPEC §7 (equal on every server)
    cycle_periods = 2880          # a billing cycle: this many periods (a 30-day month)
    reading_grace_periods = 4     # a meter reading is due by the period's end + 4 periods

    [billing.tariffs."s1"]        # one table per registered supplier, price unit per kWh
    retail = "120"                # per kWh imported, network fee included
    feed_in = "80"                # per kWh exported, fee excluded
    network_fee = "5"             # per kWh imported or exported, paid to the grid operators
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sealgrid.mechanism.grid import PriceGrid, parse_decimal
from sealgrid.mechanism.market import (
    DEFAULT_GRID,
    DEFAULT_MAX_QUANTITY_WH,
    DEFAULT_PERIOD_SECONDS,
    SERVICE_MIN_ACCEPTED_PER_SIDE,
    Market,
)
from sealgrid.mechanism.settlement import SettlementError, Tariff
from sealgrid.protocol.billing import MAX_SETTLED_WH
from sealgrid.service.intake import Limits
from sealgrid.service.keys import DEFAULT_SUPPLIERS
from sealgrid.service.schedule import (
    DEFAULT_READING_GRACE_PERIODS,
    GATE_PERIODS,
    BillingCalendar,
    default_cycle_periods,
)


class ConfigError(Exception):
    """The server configuration is missing, malformed or inconsistent."""


_LIMIT_KEYS = frozenset(f.name for f in fields(Limits))
#: ``[market]`` keys that are whole numbers of at least 1 (``min_accepted_per_side`` too,
#: with its own message)
_MARKET_WHOLE = ("period_seconds", "horizon_periods", "max_quantity_wh", *sorted(_LIMIT_KEYS))
_MARKET_PRICES = ("price_floor", "price_ceiling", "price_tick")


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
    #: streaming validation (docs/service.md, "Streaming"): every ``segment_seconds`` while a
    #: period is open, the servers validate the bids all of them hold and no segment has yet,
    #: once there are ``segment_min_bids`` of them; 0 seconds turns it off
    segment_seconds: int = 60
    segment_min_bids: int = 1000
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.min_accepted_per_side < 1:
            raise ValueError("min_accepted_per_side must be at least 1")
        if self.max_quantity_wh > MAX_SETTLED_WH:
            raise ValueError(f"max_quantity_wh must be at most {MAX_SETTLED_WH} Wh: the running "
                             "market settles every bid, and the settlement's exact arithmetic "
                             "is bounded")

    @classmethod
    def from_table(cls, table: object) -> MarketConfig:
        """Read the ``[market]`` table (flat keys, the intake limits among them); a key left
        out takes its default.

        Raises:
            ConfigError: not a table, an unknown key, a value of the wrong type or out of
                range (each named by its key path, ``market.<key>``, with the rule).
        """
        if not isinstance(table, dict):
            raise ConfigError("[market] must be a table")
        known = [f.name for f in fields(cls) if f.name != "limits"] + sorted(_LIMIT_KEYS)
        for key in table:
            if key not in known:
                raise ConfigError(f"[market]: unknown key {key!r} (known: {', '.join(known)})")
        for key in _MARKET_WHOLE:
            if key in table:
                _whole(table[key], f"market.{key}")
        if "horizon_periods" in table and table["horizon_periods"] <= GATE_PERIODS:
            raise ConfigError(f"market.horizon_periods must be above {GATE_PERIODS} (bids are"
                              f" taken until {GATE_PERIODS} periods ahead), not"
                              f" {table['horizon_periods']!r}")
        if "peer_timeout_seconds" in table:
            _seconds(table["peer_timeout_seconds"], "market.peer_timeout_seconds")
        if "segment_seconds" in table:  # 0 turns streaming validation off
            _whole(table["segment_seconds"], "market.segment_seconds", least=0)
        if "segment_min_bids" in table:
            _whole(table["segment_min_bids"], "market.segment_min_bids")
        for key in _MARKET_PRICES:
            if key in table:
                _decimal(table[key], f"market.{key}")
        if "min_accepted_per_side" in table:  # its own message (at least 1), checked below
            value = table["min_accepted_per_side"]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError("market.min_accepted_per_side must be a whole number of at"
                                  f" least 1, not {value!r}")
        limits = {k: v for k, v in table.items() if k in _LIMIT_KEYS}
        rest = {k: v for k, v in table.items() if k not in _LIMIT_KEYS}
        try:
            found = cls(**rest, limits=Limits(**limits))
            found.grid  # noqa: B018 - checked here, at start, rather than at the first bid
        except ValueError as exc:
            raise ConfigError(f"market.{exc}" if str(exc).split()[0] in known
                              else f"[market] price grid: {exc}") from None
        return found

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


#: The default tariff of every supplier, in the market's price unit per kWh (cents by default),
#: on the default price grid: retail 120 (its ceiling), feed-in 80 (its floor), network fee 5.
DEFAULT_TARIFF = Tariff(retail=Fraction(120), feed_in=Fraction(80), network_fee=Fraction(5))
TARIFF_KEYS = ("retail", "feed_in", "network_fee")
_BILLING_KEYS = ("cycle_periods", "reading_grace_periods", "tariffs")


def default_tariffs(suppliers: Iterable[str] = DEFAULT_SUPPLIERS) -> dict[str, Tariff]:
    """:data:`DEFAULT_TARIFF` for each supplier."""
    return {s: DEFAULT_TARIFF for s in suppliers}


def decimal_text(value: Fraction) -> str:
    """Write an exact amount as a decimal number (``Fraction(1, 20)`` → ``"0.05"``).

    Raises:
        ValueError: the amount has no finite decimal expansion (e.g. 1/3).
    """
    value = Fraction(value)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        raise ValueError(f"{value} has no finite decimal expansion")
    with localcontext() as ctx:
        ctx.prec = len(str(value.numerator)) + len(str(value.denominator)) + 2
        text = format((Decimal(value.numerator) / Decimal(value.denominator)).normalize(), "f")
    return text


def _price(value: object, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where} must be a decimal number written as a string, e.g. \"12.5\"")
    try:
        return Fraction(parse_decimal(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a decimal number") from None


def _whole(value: object, where: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{where} must be a whole number of at least {least}, not {value!r}")
    return value


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{where} must be a number of seconds above 0, not {value!r}")
    return value


def _decimal(value: object, where: str) -> None:
    """A price of the market's grid: a decimal number (a string like ``"80.5"`` is exact; a
    whole number or a float is read through its shortest form)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where} must be a decimal number, e.g. \"80.5\", not {value!r}")
    try:
        parse_decimal(value)
    except ValueError:
        raise ConfigError(f"{where} must be a decimal number, e.g. \"80.5\", not {value!r}"
                          ) from None


@dataclass(frozen=True)
class BillingConfig:
    """The ``[billing]`` table: every supplier's tariff, the billing cycle and the readings'
    grace (equal on every server; SPEC §7).

    ``tariffs`` maps each registered supplier to its
    :class:`~sealgrid.mechanism.settlement.Tariff` (exact fractions, in the market's price
    unit per kWh); a cycle is ``cycle_periods`` consecutive periods from the epoch; a
    period's meter reading is due ``reading_grace_periods`` periods after the period ends.
    The defaults (:meth:`default`): :data:`DEFAULT_TARIFF` for the default
    suppliers, a 30-day month of 15-minute periods, 4 periods of grace.
    """

    tariffs: dict[str, Tariff] = field(default_factory=default_tariffs)
    cycle_periods: int = default_cycle_periods(DEFAULT_PERIOD_SECONDS)
    reading_grace_periods: int = DEFAULT_READING_GRACE_PERIODS

    def __post_init__(self) -> None:
        for name in ("cycle_periods", "reading_grace_periods"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        for supplier, tariff in self.tariffs.items():
            if not isinstance(tariff, Tariff):
                raise TypeError(f"supplier {supplier!r}: a tariff must be a Tariff")

    @classmethod
    def default(
        cls,
        period_seconds: int = DEFAULT_PERIOD_SECONDS,
        suppliers: Iterable[str] = DEFAULT_SUPPLIERS,
    ) -> BillingConfig:
        """The default billing for periods of ``period_seconds``: :data:`DEFAULT_TARIFF` for
        each of ``suppliers``, a 30-day month of periods, 4 periods of grace."""
        return cls(default_tariffs(suppliers), default_cycle_periods(period_seconds))

    @classmethod
    def from_table(
        cls, table: object, period_seconds: int = DEFAULT_PERIOD_SECONDS
    ) -> BillingConfig:
        """Read the ``[billing]`` table; a key left out takes its default (:meth:`default`;
        without ``tariffs``, the default suppliers' tariffs).

        Raises:
            ConfigError: an unknown key (named), a missing or malformed tariff field, a value
                of the wrong type or out of range.
        """
        if not isinstance(table, dict):
            raise ConfigError("[billing] must be a table")
        for key in table:
            if key not in _BILLING_KEYS:
                raise ConfigError(
                    f"[billing]: unknown key {key!r} (known: {', '.join(_BILLING_KEYS)})"
                )
        base = cls.default(period_seconds)
        cycle = _whole(table.get("cycle_periods", base.cycle_periods), "billing.cycle_periods")
        grace = _whole(
            table.get("reading_grace_periods", base.reading_grace_periods),
            "billing.reading_grace_periods",
        )
        tariffs = base.tariffs
        if "tariffs" in table:
            raw = table["tariffs"]
            if not isinstance(raw, dict):
                raise ConfigError("[billing.tariffs] must be a table of suppliers")
            tariffs = {str(s): _tariff(s, t) for s, t in raw.items()}
        return cls(tariffs, cycle, grace)

    def toml(self) -> str:
        """The ``[billing]`` table as TOML text (read back by :meth:`from_table`).

        Raises:
            ValueError: a tariff with no finite decimal expansion.
        """
        lines = [
            "[billing]",
            f"cycle_periods = {self.cycle_periods}",
            f"reading_grace_periods = {self.reading_grace_periods}",
            "",
            "[billing.tariffs]",
        ]
        for supplier, tariff in sorted(self.tariffs.items()):
            lines += ["", f"[billing.tariffs.{_toml_value(supplier)}]"]
            lines += [
                f"{k} = {_toml_value(decimal_text(getattr(tariff, k)))}" for k in TARIFF_KEYS
            ]
        return "\n".join(lines) + "\n"

    def calendar(self, period_seconds: int) -> BillingCalendar:
        """The billing cycles and reading deadlines for periods of ``period_seconds``."""
        return BillingCalendar(period_seconds, self.cycle_periods, self.reading_grace_periods)

    def check_suppliers(self, suppliers: Iterable[str]) -> None:
        """Check that the registered ``suppliers`` are exactly those with a tariff.

        Raises:
            ConfigError: a supplier without a tariff, or a tariff for an unknown supplier.
        """
        known = set(suppliers)
        missing = sorted(known - set(self.tariffs))
        if missing:
            raise ConfigError(
                f"no tariff for supplier(s) {', '.join(missing)}: every registered supplier "
                "needs one (columns supplier,retail,feed_in,network_fee)"
            )
        unknown = sorted(set(self.tariffs) - known)
        if unknown:
            raise ConfigError(
                f"a tariff for supplier(s) {', '.join(unknown)}, which are not registered"
            )


def _tariff(supplier: object, table: object) -> Tariff:
    where = f"billing.tariffs.{supplier}"
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table with {', '.join(TARIFF_KEYS)}")
    for key in table:
        if key not in TARIFF_KEYS:
            raise ConfigError(f"[{where}]: unknown key {key!r} (known: {', '.join(TARIFF_KEYS)})")
    missing = [k for k in TARIFF_KEYS if k not in table]
    if missing:
        raise ConfigError(f"[{where}]: missing {', '.join(missing)}")
    r, e, f = (_price(table[k], f"{where}.{k}") for k in TARIFF_KEYS)
    try:
        return Tariff(r, e, f)
    except SettlementError as exc:
        raise ConfigError(f"[{where}]: {exc}") from None


_CONNECTION_COUNTS = ("max_connections", "max_per_client")
_CONNECTION_TIMES = ("tls_timeout_seconds", "idle_timeout_seconds", "body_timeout_seconds")


@dataclass(frozen=True)
class ConnectionLimits:
    """The ``[connections]`` table: the bounds one server keeps on its HTTPS connections (each
    server its own; nothing here is part of the market).

    A new connection over ``max_connections`` in all, or over ``max_per_client`` from one IP
    address, is closed at once, before its TLS handshake. The handshake must finish within
    ``tls_timeout_seconds`` (and so must the TLS close of a connection the server ends); a
    connection without a request, or whose request headers are not all in, is closed
    ``idle_timeout_seconds`` after it was opened or its last answer was sent; a request's body
    must be in ``body_timeout_seconds`` after its headers. A connection that receives nothing
    for ``idle_timeout_seconds + body_timeout_seconds`` while a request is under way (a client
    that reads no answer) is closed too. The defaults hold a few thousand households;
    loopback tests that run many households through one address may need more per client.
    """

    max_connections: int = 1024
    max_per_client: int = 256
    tls_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 30.0
    body_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in _CONNECTION_COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"connections.{name} must be a whole number of at least 1, "
                                 f"not {value!r}")
        for name in _CONNECTION_TIMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"connections.{name} must be a number of seconds above 0, "
                                 f"not {value!r}")

    @classmethod
    def from_table(cls, table: object) -> ConnectionLimits:
        """Read the ``[connections]`` table; a key left out takes its default.

        Raises:
            ConfigError: not a table, an unknown key (named), a value out of range.
        """
        if not isinstance(table, dict):
            raise ConfigError("[connections] must be a table")
        known = _CONNECTION_COUNTS + _CONNECTION_TIMES
        for key in table:
            if key not in known:
                raise ConfigError(
                    f"[connections]: unknown key {key!r} (known: {', '.join(known)})"
                )
        try:
            return cls(**table)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


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
    billing: BillingConfig = field(default_factory=BillingConfig)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)

    @property
    def data_dir(self) -> Path:
        """The server's own directory (that of its TOML file, else of its signing key)."""
        return (self.path or self.signing_key).parent

    @property
    def calendar(self) -> BillingCalendar:
        """The billing cycles and reading deadlines of this market's periods."""
        return self.billing.calendar(self.market.period_seconds)


#: The top-level keys every server's file must have, each with its rule (a path is absolute
#: or relative to the file).
_REQUIRED = {
    "party": "this server's index into servers, from 0",
    "servers": "every computation server's URL, in party order",
    "listen": "the address this server listens on, as \"host:port\"",
    "registry": "the path of the registry (registry.json)",
    "ca": "the path of the servers' pinned certificates (servers.pem)",
    "tls_cert": "the path of this server's TLS certificate",
    "tls_key": "the path of this server's TLS key",
    "signing_key": "the path of this server's signing key",
}
_PATHS = ("registry", "ca", "tls_cert", "tls_key", "signing_key")
_TOML_WHERE = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; every failure is one line naming the file (and, for a syntax
    error, the line and column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (TOML is UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_WHERE.match(str(exc))
        if found is None:
            what = str(exc).removesuffix(" (at end of document)")
            where = " at the end of the file" if what != str(exc) else ""
            raise ConfigError(f"{path}: not valid TOML{where}: {what}") from None
        raise ConfigError(f"{path}: not valid TOML at line {found['line']}, column"
                          f" {found['col']}: {found['what']}") from None


def _listen(value: object) -> tuple[str, int]:
    rule = 'listen must be "host:port" with a port of 0 … 65535'
    if not isinstance(value, str):
        raise ConfigError(f"{rule}, not {value!r}")
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{rule}, not {value!r}")
    return host, int(port)


def _servers(value: object) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(u, str) and u.startswith(("https://", "http://"))
                       for u in value)):
        raise ConfigError("servers must be a list of every computation server's URL, in party"
                          f' order (e.g. ["https://10.0.0.1:8440", …]), not {value!r}')
    return tuple(value)


def _mpc_base_port(table: object) -> int:
    if not isinstance(table, dict):
        raise ConfigError("[mpc] must be a table")
    for key in table:
        if key != "base_port":
            raise ConfigError(f"[mpc]: unknown key {key!r} (known: base_port)")
    port = table.get("base_port", 11365)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535 - 64:
        raise ConfigError("mpc.base_port must be a port number of 1 … 65471 (the MPC parties"
                          f" take 16 ports per server from it), not {port!r}")
    return port


def load_server_config(path: Path) -> ServerConfig:
    """Read and check one server's TOML file.

    Raises:
        ConfigError: unreadable or not TOML (the line and column of a syntax error), a key
            missing or of the wrong type: one line naming the file, the key (``servers``,
            ``market.price_floor``, ``[billing]`` for a table) and its rule.
    """
    path = Path(path).resolve()
    data = _read_toml(path)
    base = path.parent
    try:
        for key, rule in _REQUIRED.items():
            if key not in data:
                raise ConfigError(f"{key} is missing ({rule})")
        for key in _PATHS:
            if not isinstance(data[key], str) or not data[key]:
                raise ConfigError(f"{key} must be a path written as a string"
                                  f" ({_REQUIRED[key]}), not {data[key]!r}")
        party = data["party"]
        if isinstance(party, bool) or not isinstance(party, int) or party < 0:
            raise ConfigError(f"party must be a whole number ({_REQUIRED['party']}), not"
                              f" {party!r}")
        servers = _servers(data["servers"])
        host, port = _listen(data["listen"])
        database = data.get("database", f"sqlite:///{base / 'bids.sqlite'}")
        if not isinstance(database, str) or not database:
            raise ConfigError("database must be a database URL (sqlite:///path or"
                              f" postgresql://…), not {database!r}")
        market = MarketConfig.from_table(data.get("market", {}))
        billing = BillingConfig.from_table(data.get("billing", {}), market.period_seconds)
        mpc_base_port = _mpc_base_port(data.get("mpc", {}))
        connections = ConnectionLimits.from_table(data.get("connections", {}))
        cfg = ServerConfig(
            party=party,
            servers=servers,
            listen_host=host,
            listen_port=port,
            database=database,
            registry=(base / data["registry"]).resolve(),
            ca=(base / data["ca"]).resolve(),
            tls_cert=(base / data["tls_cert"]).resolve(),
            tls_key=(base / data["tls_key"]).resolve(),
            signing_key=(base / data["signing_key"]).resolve(),
            market=market,
            mpc_base_port=mpc_base_port,
            path=path,
            billing=billing,
            connections=connections,
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not party < len(servers):
        raise ConfigError(f"{path}: party {party} is not an index into servers (0 …"
                          f" {len(servers) - 1}: one URL per server)")
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
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
    billing: BillingConfig | None = None,
) -> None:
    """Write server ``party``'s TOML file with the layout of :mod:`sealgrid.service.keys`.

    ``server_dir`` (default ``data_dir/server-N``) holds the server's keys and database;
    ``registry`` and ``ca`` (the servers' pinned certificates) default to ``registry.json``
    and ``servers.pem`` in ``data_dir``; ``listen`` to the host and port of its URL;
    ``billing`` to :meth:`BillingConfig.default` for ``period_seconds``; ``extra`` may hold
    ``market`` and ``connections`` tables, ``mpc_base_port``, and ``database``: a database
    URL for every server with ``{party}`` standing for the server's index (e.g.
    ``postgresql://sealgrid@db/market{party}``; default each server's own SQLite file).
    """
    billing = billing or BillingConfig.default(period_seconds)
    sdir = server_dir or data_dir / f"server-{party}"
    url = urlsplit(urls[party])
    listen = listen or f"{url.hostname}:{url.port}"
    registry = registry or data_dir / "registry.json"
    ca = ca or data_dir / "servers.pem"
    market = {"period_seconds": period_seconds, **extra.get("market", {})}
    database = (str(extra["database"]).replace("{party}", str(party)) if extra.get("database")
                else "sqlite:///" + str(sdir / "bids.sqlite"))
    lines = [
        f"party = {party}",
        f"servers = {_toml_value(urls)}",
        f"listen = {_toml_value(listen)}",
        f"database = {_toml_value(database)}",
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
    if extra.get("connections"):
        lines += ["[connections]",
                  *(f"{k} = {_toml_value(v)}" for k, v in extra["connections"].items()), ""]
    lines += [billing.toml()]
    path.write_text("\n".join(lines))
