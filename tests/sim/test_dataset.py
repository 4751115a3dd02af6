"""The committed neighbourhood data: shape, UTC time index, units, and the two files agreeing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sealgrid.sim import dataset


@pytest.fixture(scope="module")
def day() -> dataset.Neighbourhood:
    return dataset.load("day")


def test_day_is_720_one_minute_windows_of_300_homes_from_7_to_19_local(day):
    assert day.pv_mwh.shape == day.load_mwh.shape == (720, 300)
    assert str(day.index.tz) == "UTC"
    assert (np.diff(day.index.asi8) == pd.Timedelta(minutes=1).value).all()
    local = day.index.tz_convert(dataset.SITE_TZ)
    assert local[0] == pd.Timestamp("2021-09-20 07:00", tz=dataset.SITE_TZ)
    assert local[-1] == pd.Timestamp("2021-09-20 18:59", tz=dataset.SITE_TZ)
    assert day.index[0] == pd.Timestamp("2021-09-20 11:00", tz="UTC")  # EDT is UTC−4
    assert day.window_minutes == 1


def test_units_are_integer_mwh_and_plausible(day):
    assert day.pv_mwh.dtype == day.load_mwh.dtype == np.int64
    assert (day.pv_mwh >= 0).all() and (day.load_mwh > 0).all()
    no_pv = ~day.homes["has_pv"].to_numpy()
    assert no_pv.sum() == 150 and (day.pv_mwh[:, no_pv] == 0).all()
    # One minute: a 2–8 kWp system makes at most ~8 kW·1 min ≈ 133 Wh = 133,333 mWh.
    assert day.pv_mwh.max() <= 8_000 * 1000 // 60
    # Daytime load per home: 12 h between 1 and 20 kWh.
    per_home_kwh = day.load_mwh.sum(axis=0) / dataset.MWH_PER_KWH
    assert 1 < per_home_kwh.mean() < 20
    # The sun rises after 07:00 and the neighbourhood makes a surplus at noon.
    assert day.pv_mwh[0].sum() == 0
    noon = 6 * 60
    assert day.pv_mwh[noon].sum() > day.load_mwh[noon].sum()


def test_week_is_672_quarter_hours_and_sums_the_minutes(day):
    week = dataset.load("week")
    assert week.pv_mwh.shape == (672, 300)
    assert week.window_minutes == 15
    assert (np.diff(week.index.asi8) == pd.Timedelta(minutes=15).value).all()
    assert week.index[0] == pd.Timestamp("2021-09-20 04:00", tz="UTC")  # local midnight
    # 07:00–19:00 local of the first day are quarter-hours 28 … 75: the minute data's sums.
    assert (week.pv_mwh[28:76] == day.pv_mwh.reshape(48, 15, 300).sum(axis=1)).all()
    assert (week.load_mwh[28:76] == day.load_mwh.reshape(48, 15, 300).sum(axis=1)).all()


def test_selection_keeps_the_first_homes_and_windows(day):
    part = dataset.load("day", homes=5, windows=3, start=400)
    assert part.pv_mwh.shape == (3, 5)
    assert (part.pv_mwh == day.pv_mwh[400:403, :5]).all()
    assert part.home_names == ("h000", "h001", "h002", "h003", "h004")
    assert part.index[0] == day.index[400]


@pytest.mark.parametrize(
    "kwargs",
    [{"homes": 0}, {"homes": 301}, {"windows": 0}, {"start": 720}, {"start": 700, "windows": 21},
     {"name": "year"}],
)
def test_selection_out_of_range_is_refused(kwargs):
    with pytest.raises(dataset.DatasetError):
        dataset.load(**kwargs)
