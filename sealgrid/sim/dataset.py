"""Neighbourhood data: the committed data sets, or a user's own file; assumes pandas and pyarrow.

Every source has the same shape, one row per window and home: ``timestamp`` (UTC, start of the
window), ``home`` (whole number), ``pv_mwh`` and ``load_mwh`` (energy in the window, whole
mWh = kWh with 6 decimals). ``day`` is 2021-09-20 07:00–19:00 local time at Greensboro NC (720
one-minute windows); ``week`` is 2021-09-20 … 26, whole days, 672 quarter-hours (see
``ATTRIBUTION.md``). Any other source is a path to a CSV or parquet file of that shape; its
window length is the spacing of its timestamps.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

#: The site's civil time zone (the day's 07:00–19:00 is local clock time, EDT = UTC−4).
SITE_TZ = "America/New_York"
#: Data set name → (file, window length in minutes).
DATASETS: dict[str, tuple[str, int]] = {
    "day": ("neighbourhood_1min.parquet", 1),
    "week": ("neighbourhood_15min.parquet", 15),
}
#: mWh per kWh: the data's integer unit is the PEM's 6-decimal kWh.
MWH_PER_KWH = 1_000_000
#: The columns of a data file (the committed ones and a user's own).
COLUMNS = ("timestamp", "home", "pv_mwh", "load_mwh")
#: The file types a user's data may have.
SUFFIXES = (".csv", ".parquet")
#: A written time ends in its zone, ``Z`` or an offset such as ``+02:00``, after the clock time.
_ZONE = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$",
                   re.IGNORECASE)


class DatasetError(ValueError):
    """The data set is missing, or the selection of homes or windows is out of range."""


@dataclass(frozen=True)
class Neighbourhood:
    """Energy per window and home, as integer mWh arrays of shape ``(windows, homes)``.

    ``source`` is ``day``, ``week`` or the data file's absolute path; ``tz`` the time zone the
    figures and the report show (the site's for the committed data, UTC for a file unless
    chosen); ``sha256`` the data file's digest.
    """

    name: str
    window_minutes: int
    index: pd.DatetimeIndex
    homes: pd.DataFrame
    pv_mwh: np.ndarray
    load_mwh: np.ndarray
    source: str = "day"
    tz: str = SITE_TZ
    sha256: str = ""

    @property
    def net_mwh(self) -> np.ndarray:
        """Net energy ``g − l`` per window and home (mWh): positive sells, negative buys."""
        return self.pv_mwh - self.load_mwh

    @property
    def home_names(self) -> tuple[str, ...]:
        """Stable names ``h000``, ``h001``, … used as agent names and bidder ids."""
        return tuple(f"h{int(h):03d}" for h in self.homes["home"])

    @property
    def step(self) -> pd.Timedelta:
        """The length of one window."""
        return pd.Timedelta(minutes=self.window_minutes)

    @property
    def end(self) -> pd.Timestamp:
        """The end of the last window (UTC): the span is ``[index[0], end)``."""
        return self.index[-1] + self.step

    @property
    def embedded(self) -> bool:
        """Whether the data is one of the committed data sets (not a user's file)."""
        return self.source in DATASETS


def data_dir() -> Path:
    """Return the folder that holds the committed data files."""
    return Path(str(resources.files("sealgrid") / "data"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_source(source: str | Path) -> Neighbourhood:
    """Load a whole data set: ``day``, ``week``, or a path to a CSV or parquet file.

    Raises:
        DatasetError: a missing or unreadable file, or a file not in the documented shape
            (the message names the file, the line or column and the rule).
    """
    text = str(source)
    if text in DATASETS:
        return _load_embedded(text)
    return load_file(Path(text))


def _load_embedded(name: str) -> Neighbourhood:
    filename, minutes = DATASETS[name]
    path = data_dir() / filename
    if not path.exists():
        raise DatasetError(f"data file {path} is missing; regenerate it (docs/simulation.md)")
    table = pd.read_parquet(path)
    home_table = pd.read_csv(data_dir() / "homes.csv")
    index = pd.DatetimeIndex(table["timestamp"].unique()).tz_convert("UTC").as_unit("ns")
    n_homes = len(home_table)
    if len(table) != len(index) * n_homes:
        raise DatasetError(f"{filename} does not hold every home in every window")
    table = table.sort_values(["timestamp", "home"], kind="stable")
    pv = table["pv_mwh"].to_numpy(np.int64).reshape(len(index), n_homes)
    load_ = table["load_mwh"].to_numpy(np.int64).reshape(len(index), n_homes)
    return Neighbourhood(name=name, window_minutes=minutes, index=index, homes=home_table,
                         pv_mwh=pv, load_mwh=load_, source=name, tz=SITE_TZ,
                         sha256=_sha256(path))


def load_file(path: Path) -> Neighbourhood:
    """Load a user's data file (CSV or parquet with :data:`COLUMNS`); see docs/simulation.md.

    Raises:
        DatasetError: the file is missing, unreadable or breaks a rule of the shape.
    """
    if path.suffix.lower() not in SUFFIXES:
        raise DatasetError(
            f"{path}: a data file must end in .csv or .parquet (or name a data set: "
            f"{', '.join(DATASETS)})"
        )
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, not a data file")
    if not path.is_file():
        raise DatasetError(f"{path}: no such data file")
    csv = path.suffix.lower() == ".csv"
    try:
        table = (pd.read_csv(path, dtype={"timestamp": str}) if csv
                 else pd.read_parquet(path))
    except (OSError, ValueError, NotImplementedError) as exc:
        kind = "CSV" if csv else "parquet"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: cannot read it as a {kind} file ({first})") from None
    return _from_table(path, table, csv)


def _where(csv: bool, row: int) -> str:
    """A row's place in the file: its line in a CSV (the header is line 1), else its row."""
    return f"line {row + 2}" if csv else f"row {row + 1}"


def _timestamps(path: Path, column: pd.Series, csv: bool) -> pd.Series:
    """Parse the timestamps to UTC; every one must name its time zone."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(column.dtype):
        raise DatasetError(f"{path}: column timestamp has no time zone; the data needs UTC "
                           "times (e.g. 2021-09-20T11:00:00Z)")
    text = column.astype("string").str.strip()
    zoned = text.str.contains(_ZONE, na=False)
    parsed = pd.to_datetime(text.where(zoned), format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = column.iloc[i]
        a_time = not zoned.iloc[i] and pd.notna(
            pd.to_datetime(pd.Series([text.iloc[i]]), format="ISO8601", errors="coerce")[0])
        rule = ("has no time zone; write UTC times with Z, e.g. 2021-09-20T11:00:00Z" if a_time
                else "is not an ISO 8601 time with its time zone, e.g. 2021-09-20T11:00:00Z")
        raise DatasetError(f"{path} {_where(csv, i)}: timestamp {value!r} {rule}")
    return parsed


def _whole(path: Path, table: pd.DataFrame, name: str, csv: bool) -> np.ndarray:
    """A column of whole numbers ≥ 0 (int64); the first offending row is named."""
    values = pd.to_numeric(table[name], errors="coerce")
    ok = values.notna() & (values >= 0) & (values == np.floor(values))
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        unit = " (mWh)" if name.endswith("_mwh") else ""
        value = table[name].iloc[i]
        shown = value.item() if isinstance(value, np.generic) else value
        raise DatasetError(f"{path} {_where(csv, i)}: {name} {shown!r} is not a "
                           f"whole number ≥ 0{unit}")
    return values.to_numpy(np.int64)


def _from_table(path: Path, table: pd.DataFrame, csv: bool) -> Neighbourhood:
    """Check a user's table against the documented shape and turn it into arrays."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: column(s) {', '.join(missing)} missing; a data file has "
                           f"the columns {', '.join(COLUMNS)} (docs/simulation.md)")
    if len(table) == 0:
        raise DatasetError(f"{path}: no rows")
    table = table.reset_index(drop=True)
    stamp = _timestamps(path, table["timestamp"], csv)
    home = _whole(path, table, "home", csv)
    pv = _whole(path, table, "pv_mwh", csv)
    load_ = _whole(path, table, "load_mwh", csv)
    frame = pd.DataFrame({"timestamp": stamp, "home": home, "pv": pv, "load": load_})
    dup = frame.duplicated(["timestamp", "home"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DatasetError(f"{path} {_where(csv, i)}: home {home[i]} appears twice in the "
                           f"window of {_iso(frame['timestamp'].iloc[i])}")
    index = pd.DatetimeIndex(frame["timestamp"].unique()).sort_values().as_unit("ns")
    ids = np.unique(home)
    if len(frame) != len(index) * len(ids):
        full = pd.MultiIndex.from_product([index, ids])
        have = pd.MultiIndex.from_arrays([pd.DatetimeIndex(frame["timestamp"]), frame["home"]])
        when, which = full.difference(have)[0]
        raise DatasetError(f"{path}: home {which} has no row for the window of {_iso(when)}; "
                           "every home needs a row in every window")
    if len(index) < 2:
        raise DatasetError(f"{path}: one window only; the data needs at least two, whose "
                           "spacing is the window length")
    gaps = np.diff(index.asi8)
    if (gaps != gaps[0]).any() or gaps[0] % pd.Timedelta(minutes=1).value:
        j = int(np.flatnonzero(gaps != gaps[0])[0]) if (gaps != gaps[0]).any() else 0
        raise DatasetError(
            f"{path}: windows must be evenly spaced by whole minutes; {_iso(index[0])} → "
            f"{_iso(index[1])} but {_iso(index[j])} → {_iso(index[j + 1])}"
        )
    frame = frame.sort_values(["timestamp", "home"], kind="stable")
    shape = (len(index), len(ids))
    pv = frame["pv"].to_numpy(np.int64).reshape(shape)
    return Neighbourhood(
        name=path.name,
        window_minutes=int(gaps[0] // pd.Timedelta(minutes=1).value),
        index=index,
        homes=pd.DataFrame({"home": ids, "has_pv": (pv > 0).any(axis=0)}),
        pv_mwh=pv,
        load_mwh=frame["load"].to_numpy(np.int64).reshape(shape),
        source=str(path.resolve()),
        tz="UTC",
        sha256=_sha256(path),
    )


def _iso(when: pd.Timestamp) -> str:
    """``2021-09-20T11:00:00Z`` (UTC, seconds)."""
    return pd.Timestamp(when).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def select(data: Neighbourhood, homes: int | None = None, start: int = 0,
           windows: int | None = None) -> Neighbourhood:
    """Keep the first ``homes`` homes and ``windows`` windows from window index ``start``.

    Raises:
        DatasetError: a selection outside the data.
    """
    n_homes, n = len(data.homes), len(data.index)
    h = n_homes if homes is None else homes
    if not 1 <= h <= n_homes:
        raise DatasetError(f"--homes must lie between 1 and {n_homes}")
    if not 0 <= start < n:
        raise DatasetError(f"--start must lie between 0 and {n - 1}")
    w = n - start if windows is None else windows
    if not 1 <= w <= n - start:
        raise DatasetError(f"--windows must lie between 1 and {n - start} from --start")
    rows = slice(start, start + w)
    return replace(
        data,
        index=data.index[rows],
        homes=data.homes.iloc[:h].reset_index(drop=True),
        pv_mwh=np.ascontiguousarray(data.pv_mwh[rows, :h]),
        load_mwh=np.ascontiguousarray(data.load_mwh[rows, :h]),
    )


def _span(data: Neighbourhood) -> str:
    return (f"the data's {len(data.index)} windows of {data.window_minutes} min run from "
            f"{_iso(data.index[0])} to {_iso(data.end)}")


def start_index(data: Neighbourhood, when: pd.Timestamp) -> int:
    """The index of the window that starts at ``when`` (tz-aware).

    Raises:
        DatasetError: ``when`` is outside the data or not the start of a window.
    """
    pos = int(data.index.get_indexer([pd.Timestamp(when).tz_convert("UTC")])[0])
    if pos >= 0:
        return pos
    inside = data.index[0] <= when < data.end
    rule = "is not the start of a window" if inside else "is outside the data"
    raise DatasetError(f"start {_iso(when)} {rule}; {_span(data)}")


def windows_until(data: Neighbourhood, start: int, end: pd.Timestamp) -> int:
    """How many windows from index ``start`` end exactly at ``end`` (exclusive end, tz-aware).

    Raises:
        DatasetError: ``end`` is not after the first window's start, outside the data, or not
            the end of a window.
    """
    first = data.index[start]
    if end <= first:
        raise DatasetError(f"end {_iso(end)} must come after start {_iso(first)}")
    pos = int(data.index.get_indexer([pd.Timestamp(end).tz_convert("UTC") - data.step])[0])
    if pos < 0:
        rule = "is not the end of a window" if end <= data.end else "is outside the data"
        raise DatasetError(f"end {_iso(end)} {rule}; {_span(data)}")
    return pos - start + 1


def load(
    name: str = "day", homes: int | None = None, windows: int | None = None, start: int = 0
) -> Neighbourhood:
    """Load a data set, keep the first ``homes`` homes and ``windows`` windows from ``start``.

    ``name`` is ``day``, ``week`` or a path to a data file (:func:`load_source`).

    Raises:
        DatasetError: unknown data set, missing file, or a selection outside the data.
    """
    if name not in DATASETS and Path(name).suffix.lower() not in SUFFIXES:
        raise DatasetError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)} or "
                           "give a .csv or .parquet file")
    return select(load_source(name), homes=homes, start=start, windows=windows)
