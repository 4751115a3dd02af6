# SPDX-License-Identifier: GPL-3.0-or-later
"""Generate sealgrid's neighbourhood data set; assumes pvlib, pandas, pyarrow and richardsonpy.

This script imports richardsonpy (GPL-3.0), so the script itself is offered under
GPL-3.0-or-later; nothing at runtime in sealgrid imports it or this script. Only the
generated numbers are committed (sealgrid/data/), with attribution in
sealgrid/data/ATTRIBUTION.md.

Run it in its own environment (never sealgrid's runtime)::

    python3.11 -m venv .genenv
    .genenv/bin/pip install richardsonpy==0.2.3 pvlib==0.16.1 pandas pyarrow h5py
    .genenv/bin/python scripts/make_neighbourhood_data.py --out sealgrid/data

What it makes (all seeded, byte-identical on re-run with the same package versions):

* ``homes.csv`` — 300 homes: occupants, PV yes/no, PV size (kWp), tilt, azimuth.
* ``neighbourhood_1min.parquet`` — Monday 2021-09-20, 07:00–19:00 local time at Greensboro NC
  (America/New_York, EDT = UTC−4, so 11:00–23:00 UTC): 720 one-minute windows × 300 homes.
* ``neighbourhood_15min.parquet`` — the week 2021-09-20 … 2021-09-26, whole local days,
  672 quarter-hours × 300 homes (sums of the same one-minute series).

Columns: ``timestamp`` (UTC, start of the window), ``home`` (0…299), ``pv_mwh`` and
``load_mwh``: energy in the window in integer milliwatt-hours (= kWh with 6 decimals).

PV: pvlib's TMY3 file for Greensboro (hourly, in the wheel) gives each hour's clearness
index against pvlib's Ineichen clear sky (Linke turbidity from the wheel's table). Minute
values interpolate it and add seeded cloud variability (an AR(1) process whose amplitude is
largest for broken cloud, zero for clear or overcast hours), rescaled so every hour keeps
the TMY3 hourly irradiation. Erbs splits GHI into DNI/DHI; Hay–Davies transposes it to each
roof; SAPM cell temperature and PVWatts DC/inverter models give AC power. Homes see the same
cloud field, shifted 0–2 minutes (clouds cross a neighbourhood in about that time).

Load: richardsonpy (CREST model: occupancy Markov chains and appliance activity calibrated
on the UK 2000 Time Use Survey), one-minute, per home and day, with the minute irradiance
for lighting, and no electric space or water heating (``prev_heat_dev=True``).
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20210920
N_HOMES = 300
PV_SHARE = 0.5
TZ = "America/New_York"
FIRST_DAY = "2021-09-20"  # a Monday; the TMY3 year is relabelled 2021
N_DAYS = 7
DAY_START, DAY_END = "07:00", "19:00"
# UK household sizes 1..5 (ONS, rounded): CREST supports 1 to 5 occupants.
OCCUPANT_P = [0.29, 0.35, 0.16, 0.14, 0.06]
MWH_PER_WMIN = 1000.0 / 60.0  # 1 W for one minute = 1/60 Wh


def homes_table(rng: np.random.Generator) -> pd.DataFrame:
    """Draw the homes: occupants, PV or not, kWp, tilt and azimuth."""
    has_pv = np.zeros(N_HOMES, dtype=bool)
    has_pv[rng.permutation(N_HOMES)[: round(PV_SHARE * N_HOMES)]] = True
    kwp = np.round(rng.uniform(2.0, 8.0, N_HOMES), 1)
    tilt = np.round(rng.uniform(15.0, 40.0, N_HOMES), 0)
    azimuth = np.round(np.clip(rng.normal(180.0, 45.0, N_HOMES), 90.0, 270.0), 0)
    occupants = rng.choice(np.arange(1, 6), size=N_HOMES, p=OCCUPANT_P)
    light_config = rng.integers(0, 100, N_HOMES)
    shift = rng.integers(0, 3, N_HOMES)
    return pd.DataFrame(
        {
            "home": np.arange(N_HOMES),
            "occupants": occupants,
            "has_pv": has_pv,
            "pv_kwp": np.where(has_pv, kwp, 0.0),
            "tilt_deg": np.where(has_pv, tilt, 0.0),
            "azimuth_deg": np.where(has_pv, azimuth, 0.0),
            "light_config": light_config,
            "cloud_shift_min": shift,
        }
    )


def minute_weather(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Return one-minute GHI, DNI, DHI, temperature, wind and solar position for the week."""
    tmy_path = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    tmy, meta = pvlib.iotools.read_tmy3(str(tmy_path), coerce_year=2021, map_variables=True)
    tmy = tmy.tz_convert("UTC")  # hour-ending stamps in local standard time (UTC−5)
    loc = pvlib.location.Location(meta["latitude"], meta["longitude"], TZ, meta["altitude"])
    start = pd.Timestamp(FIRST_DAY, tz=TZ)
    times = pd.date_range(start, start + pd.Timedelta(days=N_DAYS), freq="1min", inclusive="left")
    mid = (times + pd.Timedelta(seconds=30)).tz_convert("UTC")
    solpos = loc.get_solarposition(mid)
    clear = loc.get_clearsky(mid, model="ineichen", solar_position=solpos)
    # Hour-ending TMY stamp T covers [T−1h, T): label each minute by its hour's end.
    hour_end = mid.ceil("h")
    cs_by_hour = clear["ghi"].groupby(hour_end).mean()
    ghi_by_hour = tmy["ghi"].reindex(cs_by_hour.index).astype(float)
    kc_by_hour = (ghi_by_hour / cs_by_hour.clip(lower=1e-9)).where(cs_by_hour > 5.0, 0.0)
    # TMY3 gives 0 for the hours holding sunrise and sunset (e.g. 06:00–07:00 EST on 20 Sep,
    # sunrise 06:11 EST) although the sun is up: take the next or previous hour's clearness
    # for those hours and do not rescale them, rather than a one-minute jump from 0 at 08:00.
    edge = (ghi_by_hour == 0) & (cs_by_hour > 5.0)
    kc_by_hour = kc_by_hour.mask(edge).bfill(limit=1).ffill(limit=1).fillna(0.0).clip(0.0, 1.2)
    ghi_hour = ghi_by_hour.reindex(hour_end).to_numpy()
    kc_hour = kc_by_hour.reindex(hour_end).to_numpy()
    edge_minute = edge.reindex(hour_end).to_numpy()
    # Smooth hourly kc (centre-of-hour interpolation), then seeded cloud variability.
    kc_centres = pd.Series(kc_hour, index=mid).groupby(hour_end).first()
    centre_times = kc_centres.index - pd.Timedelta(minutes=30)
    kc_smooth = np.interp(
        mid.asi8.astype(float), centre_times.asi8.astype(float), kc_centres.to_numpy()
    )
    z = np.zeros(len(mid))
    noise = rng.standard_normal(len(mid))
    for i in range(1, len(mid)):
        z[i] = 0.9 * z[i - 1] + np.sqrt(1 - 0.81) * noise[i]
    broken = 4.0 * kc_hour * np.clip(1.0 - kc_hour, 0.0, 1.0)
    kc = np.clip(kc_smooth + 0.35 * broken * z, 0.02, 1.25)
    ghi = kc * clear["ghi"].to_numpy()
    # Keep every hour's TMY3 irradiation.
    sums = pd.Series(ghi, index=mid).groupby(hour_end).transform("mean").to_numpy()
    ghi = np.where(edge_minute, ghi,
                   np.where(sums > 0, ghi * ghi_hour / np.maximum(sums, 1e-9), 0.0))
    ghi = np.clip(ghi, 0.0, 1.3 * clear["ghi"].to_numpy() + 1.0)
    erbs = pvlib.irradiance.erbs(ghi, solpos["apparent_zenith"].to_numpy(), mid)
    hourly = tmy[["temp_air", "wind_speed"]]
    t_air = np.interp(mid.asi8.astype(float), hourly.index.asi8.astype(float), hourly["temp_air"])
    wind = np.interp(mid.asi8.astype(float), hourly.index.asi8.astype(float), hourly["wind_speed"])
    weather = pd.DataFrame(
        {
            "ghi": ghi,
            "dni": np.nan_to_num(erbs["dni"]),
            "dhi": np.nan_to_num(erbs["dhi"]),
            "temp_air": t_air,
            "wind_speed": wind,
            "zenith": solpos["apparent_zenith"].to_numpy(),
            "sun_azimuth": solpos["azimuth"].to_numpy(),
            "dni_extra": pvlib.irradiance.get_extra_radiation(mid).to_numpy(),
        },
        index=times.tz_convert("UTC"),
    )
    return weather, times


def pv_energy(homes: pd.DataFrame, weather: pd.DataFrame) -> np.ndarray:
    """Return each home's PV energy per minute (mWh, int64), shape (minutes, homes)."""
    out = np.zeros((len(weather), len(homes)), dtype=np.int64)
    for row in homes.itertuples():
        if not row.has_pv:
            continue
        w = weather
        if row.cloud_shift_min:
            w = weather.copy()
            for col in ("ghi", "dni", "dhi"):
                w[col] = np.roll(weather[col].to_numpy(), int(row.cloud_shift_min))
        poa = pvlib.irradiance.get_total_irradiance(
            row.tilt_deg, row.azimuth_deg, w["zenith"], w["sun_azimuth"],
            w["dni"], w["ghi"], w["dhi"], dni_extra=w["dni_extra"], model="haydavies",
        )
        poa_global = np.nan_to_num(poa["poa_global"].to_numpy())
        params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_glass"]
        t_cell = pvlib.temperature.sapm_cell(
            poa_global, w["temp_air"].to_numpy(), w["wind_speed"].to_numpy(), **params
        )
        pdc0 = row.pv_kwp * 1000.0
        pdc = pvlib.pvsystem.pvwatts_dc(poa_global, t_cell, pdc0, -0.0037)
        pdc = pdc * (1.0 - 0.10)  # wiring, soiling, mismatch (PVWatts-style lumped loss)
        pac = pvlib.inverter.pvwatts(pdc, pdc0 / 1.1)
        out[:, row.home] = np.rint(np.clip(np.asarray(pac), 0.0, None) * MWH_PER_WMIN)
    return out


def load_energy(homes: pd.DataFrame, weather: pd.DataFrame) -> np.ndarray:
    """Return each home's load per minute (mWh, int64) from richardsonpy, seeded per home."""
    import richardsonpy.classes.appliance as app_model
    import richardsonpy.classes.electric_load as eload
    import richardsonpy.classes.lighting as light_model
    import richardsonpy.classes.occupancy as occ
    import richardsonpy.classes.stochastic_el_load_wrapper as wrapper

    base = Path(eload.__file__).resolve().parent.parent / "inputs"
    first_doy = pd.Timestamp(FIRST_DAY).day_of_year - 1  # richardsonpy counts days from 0
    out = np.zeros((len(weather), len(homes)), dtype=np.int64)
    ghi = weather["ghi"].to_numpy()
    for row in homes.itertuples():
        random.seed(SEED * 1000 + row.home)  # richardsonpy draws from the stdlib generator
        n = int(row.occupants)
        occupancy = occ.Occupancy(number_occupants=n, initial_day=1, nb_days=N_DAYS)
        annual = eload.ElectricLoad.standard_consumption["SFH"][n]
        appliances = app_model.Appliances(
            os.path.join(base, "Appliances.csv"),
            annual_consumption=0.91 * annual,
            randomize_appliances=True,
            prev_heat_dev=True,
        )
        lights = light_model.load_lighting_profile(
            filename=os.path.join(base, "LightBulbs.csv"), index=int(row.light_config)
        )
        profile = wrapper.ElectricityProfile(appliances, lights)
        for day in range(N_DAYS):
            weekend = (day + 1) % 7 in (0, 6)
            total, _, _ = profile.power_sim(
                irradiation=ghi[1440 * day : 1440 * (day + 1)],
                weekend=weekend,
                day=first_doy + day,
                occupancy=occupancy.occupancy[144 * day : 144 * (day + 1)],
            )
            out[1440 * day : 1440 * (day + 1), row.home] = np.rint(
                np.asarray(total, dtype=float) * MWH_PER_WMIN
            )
        if (row.home + 1) % 50 == 0:
            print(f"load: {row.home + 1}/{len(homes)} homes", flush=True)
    return out


def long_table(index: pd.DatetimeIndex, pv: np.ndarray, load: np.ndarray) -> pa.Table:
    """Return the long (timestamp, home) table with integer mWh columns."""
    n_t, n_h = pv.shape
    return pa.table(
        {
            "timestamp": pa.array(np.repeat(index.as_unit("s").to_numpy(), n_h),
                                  type=pa.timestamp("s", tz="UTC")),
            "home": pa.array(np.tile(np.arange(n_h, dtype=np.int16), n_t)),
            "pv_mwh": pa.array(pv.reshape(-1).astype(np.int32)),
            "load_mwh": pa.array(load.reshape(-1).astype(np.int32)),
        }
    )


def write(table: pa.Table, path: Path, description: str) -> None:
    """Write a compressed parquet file with the units and source in its metadata."""
    meta = {
        b"sealgrid.units": b"pv_mwh, load_mwh: energy in the window, integer mWh; "
        b"timestamp: window start, UTC",
        b"sealgrid.description": description.encode(),
        b"sealgrid.attribution": b"see ATTRIBUTION.md next to this file",
    }
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, path, compression="zstd", compression_level=19, use_dictionary=True)


def main() -> None:
    """Generate the data set into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sealgrid/data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    homes = homes_table(rng)
    weather, local_times = minute_weather(rng)
    pv = pv_energy(homes, weather)
    load = load_energy(homes, weather)

    homes.drop(columns=["light_config", "cloud_shift_min"]).to_csv(args.out / "homes.csv",
                                                                    index=False)
    utc = weather.index
    first = local_times.normalize() == pd.Timestamp(FIRST_DAY, tz=TZ)
    clock = local_times.strftime("%H:%M")
    day = np.flatnonzero(first & (clock >= DAY_START) & (clock < DAY_END))
    write(long_table(utc[day], pv[day], load[day]), args.out / "neighbourhood_1min.parquet",
          f"{FIRST_DAY} {DAY_START}-{DAY_END} {TZ}, one-minute windows, {N_HOMES} homes")
    quarter = pv.reshape(-1, 15, N_HOMES).sum(axis=1), load.reshape(-1, 15, N_HOMES).sum(axis=1)
    write(long_table(utc[::15], *quarter), args.out / "neighbourhood_15min.parquet",
          f"{N_DAYS} days from {FIRST_DAY} {TZ}, 15-minute windows, {N_HOMES} homes")
    print("pv kWh/home-day (PV homes):",
          round(pv[:, homes.has_pv].sum() / 1e6 / homes.has_pv.sum() / N_DAYS, 2),
          "load kWh/home-day:", round(load.sum() / 1e6 / N_HOMES / N_DAYS, 2))


if __name__ == "__main__":
    main()
