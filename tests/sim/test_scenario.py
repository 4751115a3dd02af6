"""Scenario files: written by hand, read back by tomllib to the same settings; flags win."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from sealgrid.sim import scenario as sc

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def test_every_setting_round_trips_through_the_written_toml(tmp_path):
    odd = tmp_path / 'my "homes"\\ä.csv'
    original = sc.Scenario(
        data=str(odd), timezone="Europe/Berlin", homes=7,
        start=pd.Timestamp("2021-09-20T16:30:00Z"), end=pd.Timestamp("2021-09-20T17:45:00Z"),
        mechanism="pem", secure=True, key_bits=1024, retail_ct_per_kwh=Decimal("31.5"),
        feed_in_ct_per_kwh=Decimal("8.25"), network_fee_ct_per_kwh=Decimal("1.5"),
        pem_range_ct_per_kwh=(Decimal(10), Decimal("30.125")), pem_k=(5, 7, 9),
        epsilon=Decimal("0.85"), tick_ct_per_kwh=Decimal("0.25"), strategy="reservation",
        seed=0,
    )
    assert original != sc.Scenario()
    path = tmp_path / "s.toml"
    path.write_text(sc.dumps(original), encoding="utf-8")
    assert sc.merge(sc.read(path), {}) == original


def test_windows_instead_of_end_round_trips(tmp_path):
    original = sc.Scenario(start=pd.Timestamp("2021-09-20T16:30:00Z"), windows=3)
    path = tmp_path / "s.toml"
    path.write_text(sc.dumps(original), encoding="utf-8")
    assert sc.read(path) == {key: getattr(original, key) for key in sc.KEYS
                             if getattr(original, key) is not None}


def test_times_may_be_toml_date_times_or_strings_with_any_offset(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('start = 2021-09-20T12:30:00-04:00\nend = "2021-09-20T16:33:00+00:00"\n')
    values = sc.read(path)
    assert values["start"] == pd.Timestamp("2021-09-20T16:30:00Z")
    assert values["end"] == pd.Timestamp("2021-09-20T16:33:00Z")
    assert str(values["start"].tz) == "UTC"


def test_a_relative_data_path_is_taken_from_the_scenario_folder(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "s.toml").write_text('data = "mine.csv"\n')
    assert sc.read(folder / "s.toml")["data"] == str(folder / "mine.csv")
    (folder / "t.toml").write_text('data = "week"\n')
    assert sc.read(folder / "t.toml")["data"] == "week"


def test_flags_replace_the_files_span_end_and_keep_the_rest():
    file = {"homes": 6, "windows": 3, "seed": 4}
    merged = sc.merge(file, {"end": pd.Timestamp("2021-09-20T17:00:00Z"), "homes": 2})
    assert (merged.homes, merged.windows, merged.seed) == (2, None, 4)
    assert merged.end == pd.Timestamp("2021-09-20T17:00:00Z")


def test_effective_scenario_names_the_span_and_homes():
    prepared = sc.prepare(sc.Scenario(homes=5, windows=2), start_window=330)
    eff = prepared.scenario
    assert (eff.homes, eff.windows, eff.data, eff.timezone) == (5, None, "day",
                                                                "America/New_York")
    assert eff.start == pd.Timestamp("2021-09-20T16:30:00Z")
    assert eff.end == pd.Timestamp("2021-09-20T16:32:00Z")
    again = sc.prepare(eff)
    assert (again.data.pv_mwh == prepared.data.pv_mwh).all()
    assert again.scenario == eff


def test_as_json_uses_plain_values():
    got = sc.as_json(sc.Scenario(start=pd.Timestamp("2021-09-20T16:30:00Z")))
    assert got["start"] == "2021-09-20T16:30:00Z"
    assert got["retail_ct_per_kwh"] == 120.0 and got["pem_range_ct_per_kwh"] == [90.0, 110.0]
    assert got["pem_k"] == [20, 40] and got["end"] is None


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_scenarios_are_valid(path):
    values = sc.read(path)
    prepared = sc.prepare(sc.merge(values, {}))
    assert len(prepared.data.index) >= 1
