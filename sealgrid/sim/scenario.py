"""A scenario: every setting of ``sealgrid simulate`` in one TOML file, read, checked, written back.

Assumes TOML 1.0: read with the standard library's :mod:`tomllib`, written by hand (the keys are
flat). Prices are in ¢/kWh, times in UTC. Reading checks every key and each error names the
file, the key and the rule it broke. A run writes its *effective* scenario (the data's absolute
path, the homes and the span resolved) as ``scenario.toml``, which re-runs it exactly.
"""

from __future__ import annotations

import datetime as dt
import difflib
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from sealgrid import __version__
from sealgrid.sim import dataset
from sealgrid.sim.agents import MarketParams, Strategy
from sealgrid.sim.battery import BatteryModel
from sealgrid.sim.dataset import Neighbourhood
from sealgrid.sim.run import runs_for
from sealgrid.sim.window import Run

#: What ``mechanism`` may be (``none`` is the grid-only benchmark, always included).
MECHANISMS = ("none", "double-auction", "pem", "all")
#: Paillier/DGK key sizes of the secure PEM.
KEY_BITS = (512, 1024, 2048)


class ScenarioError(ValueError):
    """A scenario file or setting breaks a rule; the message names the file, key and rule."""


class _Rule(ValueError):
    """A value broke the rule in the message (turned into a ScenarioError by the reader)."""


@dataclass(frozen=True)
class Scenario:
    """Every setting of a simulation; the defaults are the paper xie2020 §VII-A values.

    ``data`` is ``day``, ``week`` or a data file's path; ``homes`` the first N homes (None: all);
    the span starts at ``start`` (UTC, None: the first window) and ends at ``end`` (exclusive,
    the end of the last window) or after ``windows`` windows (None for both: the data's end).
    ``timezone`` is for display only (None: the site's for the committed data, UTC for a file).
    """

    data: str = "day"
    timezone: str | None = None
    homes: int | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    windows: int | None = None
    mechanism: str = "all"
    secure: bool = False
    key_bits: int = 2048
    retail_ct_per_kwh: Decimal = Decimal(120)
    feed_in_ct_per_kwh: Decimal = Decimal(80)
    network_fee_ct_per_kwh: Decimal = Decimal(0)
    pem_range_ct_per_kwh: tuple[Decimal, Decimal] = (Decimal(90), Decimal(110))
    pem_k: tuple[int, ...] = (20, 40)
    epsilon: Decimal = Decimal("0.9")
    tick_ct_per_kwh: Decimal = Decimal("0.1")
    strategy: str = "zi-c"
    seed: int = 20210920
    retail_peak_ct_per_kwh: Decimal | None = None
    feed_in_peak_ct_per_kwh: Decimal | None = None
    peak_hours: tuple[int, int] = (17, 21)
    batteries: bool = False
    battery_share: Decimal = Decimal("0.6")
    battery_c_rate: Decimal = Decimal("0.25")
    agent_counts: tuple[int, ...] = ()

    def params(self) -> MarketParams:
        """The market parameters (tariffs, PEM, auction grid and strategy).

        Raises:
            ValueError: a value outside its range (the message names the rule).
        """
        low, high = self.pem_range_ct_per_kwh
        start, end = self.peak_hours
        batteries = BatteryModel(share=self.battery_share, c_rate=self.battery_c_rate,
                                 peak_start=start, peak_end=end,
                                 seed=self.seed) if self.batteries else None
        return MarketParams(
            retail=self.retail_ct_per_kwh, feed_in=self.feed_in_ct_per_kwh, pem_low=low,
            pem_high=high, pem_k=tuple(self.pem_k), epsilon=self.epsilon,
            network_fee=self.network_fee_ct_per_kwh, tick=self.tick_ct_per_kwh,
            strategy=Strategy(self.strategy), seed=self.seed,
            retail_peak=self.retail_peak_ct_per_kwh, feed_in_peak=self.feed_in_peak_ct_per_kwh,
            peak_hours=(start, end), batteries=batteries,
        )


#: The keys a scenario file may hold, in the order they are written.
KEYS = tuple(f.name for f in fields(Scenario))


# -- checking one value


def parse_time(value: Any) -> pd.Timestamp:
    """A time with its zone (ISO 8601 text or a TOML offset date-time), as a UTC Timestamp.

    Raises:
        ValueError: not a date and time, or without a time zone.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise _Rule("must be an ISO 8601 date and time in UTC, e.g. "
                        '"2021-09-20T11:00:00Z"') from None
    if not isinstance(value, dt.datetime):
        raise _Rule('must be a date and time in UTC, e.g. "2021-09-20T11:00:00Z"')
    if value.tzinfo is None:
        raise _Rule('must name its time zone: write UTC times with Z, e.g. '
                    '"2021-09-20T11:00:00Z"')
    return pd.Timestamp(value).tz_convert("UTC").as_unit("ns")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Rule("must be a non-empty string")
    return value


def _choice(options: tuple[Any, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or value not in options:
            raise _Rule(f"must be one of {', '.join(map(repr, options))}")
        return value
    return check


def _whole(least: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise _Rule(f"must be a whole number ≥ {least}")
        return value
    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Rule("must be true or false")
    return value


def _number(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _Rule("must be a number")
    number = Decimal(value)
    if not number.is_finite():
        raise _Rule("must be a finite number")
    return number


def _price(value: Any) -> Decimal:
    try:
        return _number(value)
    except _Rule:
        raise _Rule("must be a number of ¢/kWh") from None


def _price_range(value: Any) -> tuple[Decimal, Decimal]:
    if not isinstance(value, list) or len(value) != 2:
        raise _Rule("must be a list of two numbers [LOW, HIGH] in ¢/kWh")
    low, high = (_price(v) for v in value)
    return low, high


def _ks(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    try:
        ks = tuple(_whole(1)(v) for v in items)
    except _Rule:
        raise _Rule("must be a whole number ≥ 1 or a list of them") from None
    if not ks:
        raise _Rule("must name at least one k")
    return ks


def _hours(value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
            or not 0 <= value[0] < value[1] <= 24):
        raise _Rule("must be [START, END): two whole hours with 0 ≤ START < END ≤ 24")
    return value[0], value[1]


def _share(value: Any) -> Decimal:
    number = _number(value)
    if not 0 <= number <= 1:
        raise _Rule("must lie between 0 and 1")
    return number


def _sizes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _Rule("must be a list of numbers of agents, e.g. [100, 200]")
    try:
        return tuple(sorted({_whole(1)(v) for v in value}))
    except _Rule:
        raise _Rule("must be a list of whole numbers ≥ 1, e.g. [100, 200]") from None


def _time(value: Any) -> pd.Timestamp:
    return parse_time(value)


def check_timezone(value: Any) -> str:
    """An IANA time zone name such as ``Europe/Berlin`` or ``UTC``.

    Raises:
        ValueError: not a known time zone.
    """
    text = _text(value)
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Rule("must be an IANA time zone name such as \"UTC\" or "
                    "\"America/New_York\"") from None
    return text


CHECKS: dict[str, Callable[[Any], Any]] = {
    "data": _text,
    "timezone": check_timezone,
    "homes": _whole(1),
    "start": _time,
    "end": _time,
    "windows": _whole(1),
    "mechanism": _choice(MECHANISMS),
    "secure": _bool,
    "key_bits": _choice(KEY_BITS),
    "retail_ct_per_kwh": _price,
    "feed_in_ct_per_kwh": _price,
    "network_fee_ct_per_kwh": _price,
    "pem_range_ct_per_kwh": _price_range,
    "pem_k": _ks,
    "epsilon": _number,
    "tick_ct_per_kwh": _price,
    "strategy": _choice(tuple(s.value for s in Strategy)),
    "seed": _whole(0),
    "retail_peak_ct_per_kwh": _price,
    "feed_in_peak_ct_per_kwh": _price,
    "peak_hours": _hours,
    "batteries": _bool,
    "battery_share": _share,
    "battery_c_rate": _number,
    "agent_counts": _sizes,
}
assert tuple(CHECKS) == KEYS


def _suggest(key: str) -> str:
    close = [k for k in KEYS if k.startswith(f"{key}_")] or difflib.get_close_matches(key, KEYS)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- reading


def read(path: Path) -> dict[str, Any]:
    """Read a scenario file; return the settings it gives (checked and typed), by key.

    A relative ``data`` path is taken from the scenario file's folder.

    Raises:
        ScenarioError: the file is missing, unreadable, not TOML, or a key is unknown, of the
            wrong type or out of its range (the message names the file, the key and the rule).
    """
    try:
        text = path.read_bytes().decode("utf-8")
        doc = tomllib.loads(text, parse_float=Decimal)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a folder, not a scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: a scenario file must be UTF-8 text (TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in CHECKS:
            raise ScenarioError(f"{path}: unknown key {key!r}{_suggest(key)}; a scenario's "
                                f"keys are {', '.join(KEYS)} (docs/simulation.md)")
        try:
            values[key] = CHECKS[key](value)
        except _Rule as rule:
            shown = value if not isinstance(value, dict) else "a table"
            raise ScenarioError(f"{path}: key {key!r} {rule}, not {shown!r}") from None
    if "end" in values and "windows" in values:
        raise ScenarioError(f"{path}: keys 'end' and 'windows' both set the span's end; "
                            "give one of them")
    data = values.get("data")
    if data is not None and data not in dataset.DATASETS and not Path(data).is_absolute():
        values["data"] = str(path.parent / data)
    return values


def merge(file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> Scenario:
    """The scenario of a file's settings overridden by the command line's (flags win).

    A flag that sets the span's end (``windows`` or ``end``) replaces both of the file's.
    """
    values = dict(file_values)
    if "windows" in flags or "end" in flags:
        values.pop("windows", None)
        values.pop("end", None)
    values.update(flags)
    return Scenario(**values)


# -- resolving


@dataclass(frozen=True)
class Prepared:
    """A scenario made concrete: the effective scenario, the selected data, parameters, runs."""

    scenario: Scenario
    data: Neighbourhood
    params: MarketParams
    runs: tuple[Run, ...]


def effective(scenario: Scenario, data: Neighbourhood) -> Scenario:
    """The scenario with the data's source, time zone, homes and span written out."""
    return replace(scenario, data=data.source, timezone=data.tz, homes=len(data.homes),
                   start=data.index[0], end=data.end, windows=None)


def prepare(scenario: Scenario, start_window: int | None = None) -> Prepared:
    """Load and select the data and build the parameters and runs of a scenario.

    ``start_window`` (the command line's ``--start``, a window index) overrides ``start``.

    Raises:
        ValueError: a parameter out of range, or a data or selection error
            (:class:`~sealgrid.sim.dataset.DatasetError`).
    """
    params = scenario.params()
    runs = runs_for(scenario.mechanism, params)
    full = dataset.load_source(scenario.data)
    if scenario.timezone is not None:
        try:
            full = replace(full, tz=check_timezone(scenario.timezone))
        except _Rule as rule:
            raise ScenarioError(f"timezone {scenario.timezone!r} {rule}") from None
    if start_window is not None:
        start = start_window
    elif scenario.start is not None:
        start = dataset.start_index(full, scenario.start)
    else:
        start = 0
    windows = scenario.windows
    if windows is None and scenario.end is not None and 0 <= start < len(full.index):
        windows = dataset.windows_until(full, start, scenario.end)
    data = dataset.select(full, homes=scenario.homes, start=start, windows=windows)
    return Prepared(effective(scenario, data), data, params, runs)


# -- writing


def _iso(when: pd.Timestamp) -> str:
    return pd.Timestamp(when).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _string(text: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, pd.Timestamp):
        return _string(_iso(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _string(str(value))


COMMENTS = {
    "data": "day, week, or a CSV/parquet file (docs/simulation.md, Data)",
    "timezone": "for figures and the report only",
    "homes": "the first N homes",
    "start": "UTC, the start of the first window",
    "end": "UTC, the end of the last window (or: windows = N)",
    "mechanism": "none | double-auction | pem | all",
    "key_bits": "Paillier/DGK key size of the secure PEM",
    "pem_range_ct_per_kwh": "PEM price range [p_l, p_h]",
    "pem_k": "PEM load preference k, one run each",
    "epsilon": "PEM battery loss coefficient",
    "tick_ct_per_kwh": "double-auction price tick",
    "strategy": "double-auction bidding: zi-c | reservation",
    "seed": "bidding strategy seed (and the batteries' draws)",
    "retail_peak_ct_per_kwh": "time of use: retail in the peak hours",
    "feed_in_peak_ct_per_kwh": "time of use: feed-in in the peak hours",
    "peak_hours": "[start, end) local hours of the peak (tariffs, batteries)",
    "batteries": "home batteries (docs/simulation.md, Batteries)",
    "battery_share": "share of PV homes with a battery",
    "battery_c_rate": "battery power, kW per kWh of capacity",
    "agent_counts": "Fig. 6c: the runs again on the first N homes, e.g. [100, 200]",
}


def dumps(scenario: Scenario) -> str:
    """Write a scenario as TOML (unset keys left out); :func:`read` gives it back."""
    lines = [
        f"# sealgrid simulate scenario (sealgrid {__version__}): prices in ¢/kWh, times in UTC.",
        "# Re-run: sealgrid simulate --scenario scenario.toml --out FOLDER",
        "",
    ]
    for key in KEYS:
        value = getattr(scenario, key)
        if value is None:
            continue
        line = f"{key} = {_value(value)}"
        note = COMMENTS.get(key)
        lines.append(f"{line:<44} # {note}" if note else line)
    return "\n".join(lines) + "\n"


def as_json(scenario: Scenario) -> dict[str, Any]:
    """The scenario as JSON-ready values (numbers as floats, times as UTC ISO 8601)."""
    out: dict[str, Any] = {}
    for key in KEYS:
        value = getattr(scenario, key)
        if isinstance(value, Decimal):
            value = float(value)
        elif isinstance(value, pd.Timestamp):
            value = _iso(value)
        elif isinstance(value, tuple):
            value = [float(v) if isinstance(v, Decimal) else v for v in value]
        out[key] = value
    return out
