"""The committed neighbourhood data set; assumes the parquet files in ``sealgrid/data``.

Two tables with the same columns: ``timestamp`` (UTC, start of the window), ``home``,
``pv_mwh`` and ``load_mwh`` (energy in the window, integer mWh = kWh with 6 decimals).
``day`` is 2021-09-20 07:00–19:00 local time at Greensboro NC (720 one-minute windows);
``week`` is 2021-09-20 … 26, whole days, 672 quarter-hours. See ``ATTRIBUTION.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
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


class DatasetError(ValueError):
    """The data set is missing, or the selection of homes or windows is out of range."""


@dataclass(frozen=True)
class Neighbourhood:
    """Energy per window and home, as integer mWh arrays of shape ``(windows, homes)``."""

    name: str
    window_minutes: int
    index: pd.DatetimeIndex
    homes: pd.DataFrame
    pv_mwh: np.ndarray
    load_mwh: np.ndarray

    @property
    def net_mwh(self) -> np.ndarray:
        """Net energy ``g − l`` per window and home (mWh): positive sells, negative buys."""
        return self.pv_mwh - self.load_mwh

    @property
    def home_names(self) -> tuple[str, ...]:
        """Stable names ``h000``, ``h001``, … used as agent names and bidder ids."""
        return tuple(f"h{int(h):03d}" for h in self.homes["home"])


def data_dir() -> Path:
    """Return the folder that holds the committed data files."""
    return Path(str(resources.files("sealgrid") / "data"))


def load(
    name: str = "day", homes: int | None = None, windows: int | None = None, start: int = 0
) -> Neighbourhood:
    """Load a data set, keep the first ``homes`` homes and ``windows`` windows from ``start``.

    Raises:
        DatasetError: unknown data set, missing file, or a selection outside the data.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
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

    h = n_homes if homes is None else homes
    if not 1 <= h <= n_homes:
        raise DatasetError(f"--homes must lie between 1 and {n_homes}")
    if not 0 <= start < len(index):
        raise DatasetError(f"--start must lie between 0 and {len(index) - 1}")
    w = len(index) - start if windows is None else windows
    if not 1 <= w <= len(index) - start:
        raise DatasetError(f"--windows must lie between 1 and {len(index) - start} from --start")
    rows = slice(start, start + w)
    return Neighbourhood(
        name=name,
        window_minutes=minutes,
        index=index[rows],
        homes=home_table.iloc[:h].reset_index(drop=True),
        pv_mwh=np.ascontiguousarray(pv[rows, :h]),
        load_mwh=np.ascontiguousarray(load_[rows, :h]),
    )
