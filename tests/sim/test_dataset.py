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


# -- a user's own data file


def _rows(data: dataset.Neighbourhood) -> list[dict]:
    return [{"timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "home": int(h),
             "pv_mwh": int(data.pv_mwh[w, i]), "load_mwh": int(data.load_mwh[w, i])}
            for w, t in enumerate(data.index) for i, h in enumerate(data.homes["home"])]


@pytest.fixture(scope="module")
def part() -> dataset.Neighbourhood:
    return dataset.load("week", homes=4, windows=5, start=40)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_own_file_loads_as_the_same_arrays(tmp_path, part, suffix):
    table = pd.DataFrame(_rows(part)).iloc[::-1]  # rows in any order
    path = tmp_path / f"homes{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.assign(timestamp=pd.to_datetime(table["timestamp"], utc=True)).to_parquet(path)
    own = dataset.load_source(str(path))
    assert (own.pv_mwh == part.pv_mwh).all() and (own.load_mwh == part.load_mwh).all()
    assert (own.index == part.index).all() and own.window_minutes == 15
    assert own.home_names == part.home_names
    assert own.homes["has_pv"].tolist() == (part.pv_mwh > 0).any(axis=0).tolist()
    assert own.source == str(path.resolve()) and own.tz == "UTC" and len(own.sha256) == 64
    assert not own.embedded


def test_own_file_with_offsets_is_read_in_utc(tmp_path, part):
    table = pd.DataFrame(_rows(part))
    local = pd.to_datetime(table["timestamp"]).dt.tz_convert("Europe/Berlin")
    table["timestamp"] = local.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = tmp_path / "berlin.csv"
    table.to_csv(path, index=False)
    assert (dataset.load_source(path).index == part.index).all()


BAD_FILES = [
    (lambda t: t.drop(columns="load_mwh"), "column(s) load_mwh missing"),
    (lambda t: t.assign(timestamp=t["timestamp"].str.rstrip("Z")), "line 2: timestamp "
     "'2021-09-20T14:00:00' has no time zone"),
    (lambda t: t.assign(timestamp="yesterday"), "is not an ISO 8601 time"),
    (lambda t: pd.concat([t, t.iloc[[3]]]), "line 22: home 3 appears twice"),
    (lambda t: t.drop(index=7), "has no row for the window of"),
    (lambda t: t[t["timestamp"] != t["timestamp"].iloc[8]],
     "windows must be evenly spaced by whole minutes"),
    (lambda t: t.assign(pv_mwh=[-1, *t["pv_mwh"].tolist()[1:]]),
     "line 2: pv_mwh -1 is not a whole number ≥ 0 (mWh)"),
    (lambda t: t.assign(load_mwh=[0.5, *t["load_mwh"].tolist()[1:]]),
     "line 2: load_mwh 0.5 is not a whole number ≥ 0 (mWh)"),
    (lambda t: t[t["timestamp"] == t["timestamp"].iloc[0]], "one window only"),
    (lambda t: t.iloc[:0], "no rows"),
]


@pytest.mark.parametrize(("change", "rule"), BAD_FILES)
def test_own_file_breaking_a_rule_is_refused_with_file_place_and_rule(tmp_path, part, change,
                                                                      rule):
    path = tmp_path / "bad.csv"
    change(pd.DataFrame(_rows(part))).to_csv(path, index=False)
    with pytest.raises(dataset.DatasetError) as caught:
        dataset.load_source(path)
    assert str(caught.value).startswith(str(path)) and rule in str(caught.value)


@pytest.mark.parametrize(("name", "rule"), [
    ("missing.csv", "no such data file"),
    ("homes.xlsx", "must end in .csv or .parquet"),
    ("folder.csv", "is a folder, not a data file"),
])
def test_own_file_missing_or_of_another_type(tmp_path, name, rule):
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(dataset.DatasetError, match=rule):
        dataset.load_source(tmp_path / name)


def test_not_a_parquet_file_is_refused(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("timestamp,home\n")
    with pytest.raises(dataset.DatasetError, match="cannot read it as a parquet file"):
        dataset.load_source(path)


def test_windows_by_utc_time(day):
    noon = pd.Timestamp("2021-09-20T16:00:00Z")
    assert dataset.start_index(day, noon) == 300
    assert dataset.windows_until(day, 300, pd.Timestamp("2021-09-20T17:00:00Z")) == 60
    assert dataset.windows_until(day, 0, day.end) == 720
    for when, rule in ((noon + pd.Timedelta(seconds=30), "not the start of a window"),
                       (pd.Timestamp("2021-09-20T10:59:00Z"), "outside the data"),
                       (day.end, "outside the data")):
        with pytest.raises(dataset.DatasetError, match=rule):
            dataset.start_index(day, when)
    for end, rule in ((noon, "must come after start"),
                      (noon + pd.Timedelta(seconds=90), "not the end of a window"),
                      (day.end + pd.Timedelta(minutes=1), "outside the data")):
        with pytest.raises(dataset.DatasetError, match=rule):
            dataset.windows_until(day, 300, end)
