"""Home batteries as in paper xie2020's agents (capacity ``Cap_i``, loss ``ε``); pure, seeded.

The paper's homes have batteries, but its evaluation data have none; this is the documented,
seeded model of the battery scenario (docs/simulation.md, "Batteries and time-of-use"):

* **Who has one.** Each home with PV gets a battery with probability ``share`` (one seeded
  draw per home, in the data's home order, so the first N homes are the same with or without
  the others): capacity ``Cap_i`` drawn from :data:`CAPACITIES_KWH` (sizes sold for homes),
  power ``c_rate · Cap_i`` kW, loss coefficient ``ε_i`` uniform on ``epsilon_range`` (the
  paper's 0.9 in the middle). It starts each run at ``initial_soc · Cap_i``.
* **What it does each window** (``b`` in the paper's sign: > 0 charging, < 0 discharging):
  during the peak hours (local time, ``[peak_start, peak_end)``) it discharges at its power,
  as long as it holds energy, whatever the home's own load (what is left after the home's load
  is offered on the market); outside them it charges from the home's own surplus ``g − l``,
  up to its power and its free capacity, and otherwise rests. Charging ``b`` stores ``ε·b``
  (the rest is lost); discharging ``|b|`` takes ``|b|`` out.
* **What the markets see.** A home's net energy is ``g − l − b`` (paper Eq. 1): the double
  auction and PEM take the same homes, and PEM's sellers carry their ``b`` and ``ε`` into Eq. 13
  (``Σ(g + 1 + ε·b − b)``).

Energy is integer mWh; the state of charge is kept in mWh, rounded down where ``ε·b`` is not
whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from sealgrid.mechanism.pem import FIXED

#: Battery sizes drawn for a home (kWh): common home storage products.
CAPACITIES_KWH = (Decimal(5), Decimal("7.5"), Decimal(10), Decimal("13.5"))


@dataclass(frozen=True)
class BatteryModel:
    """The battery scenario's settings (defaults documented in docs/simulation.md)."""

    share: Decimal = Decimal("0.6")
    c_rate: Decimal = Decimal("0.25")
    epsilon_low: Decimal = Decimal("0.85")
    epsilon_high: Decimal = Decimal("0.95")
    initial_soc: Decimal = Decimal("0.2")
    peak_start: int = 17
    peak_end: int = 21
    seed: int = 20210920

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError("battery_share must lie between 0 and 1")
        if not 0 < self.c_rate <= 4:
            raise ValueError("the batteries' c-rate must lie in (0, 4] (kW per kWh)")
        if not 0 < self.epsilon_low <= self.epsilon_high < 1:
            raise ValueError("the batteries' ε must lie in (0, 1), low ≤ high")
        if not 0 <= self.initial_soc <= 1:
            raise ValueError("the initial state of charge must lie between 0 and 1")
        if not 0 <= self.peak_start < self.peak_end <= 24:
            raise ValueError("peak_hours must be [start, end) with 0 ≤ start < end ≤ 24")

    def in_peak(self, hour: int) -> bool:
        """Whether a local hour lies in the peak ``[peak_start, peak_end)``."""
        return self.peak_start <= hour < self.peak_end


@dataclass(frozen=True)
class Batteries:
    """Every home's battery and its action in every window.

    ``capacity_mwh[i]`` (0: no battery), ``epsilon_fixed[i]`` (ε × FIXED, the PEM's fixed
    point; 0 without a battery), ``action_mwh[w, i]`` (``b``: > 0 charging, < 0 discharging)
    and ``soc_mwh[w, i]`` (stored at the end of window ``w``).
    """

    capacity_mwh: np.ndarray
    epsilon_fixed: np.ndarray
    action_mwh: np.ndarray
    soc_mwh: np.ndarray

    @property
    def count(self) -> int:
        """How many homes have a battery."""
        return int((self.capacity_mwh > 0).sum())


def fleet(model: BatteryModel, has_pv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw each home's capacity (mWh, 0: none) and ε (× FIXED), seeded, in home order."""
    rng = np.random.default_rng([model.seed, 0xBA77])
    n = len(has_pv)
    draws = rng.random((n, 3))  # per home: has one, which size, which ε (all drawn always)
    sizes = np.array([int(c * 1_000_000) for c in CAPACITIES_KWH], dtype=np.int64)
    pick = np.minimum((draws[:, 1] * len(sizes)).astype(np.int64), len(sizes) - 1)
    has = np.asarray(has_pv, dtype=bool) & (draws[:, 0] < float(model.share))
    capacity = np.where(has, sizes[pick], 0)
    low, high = float(model.epsilon_low), float(model.epsilon_high)
    eps = np.round((low + (high - low) * draws[:, 2]) * 1000) / 1000  # three decimals
    epsilon = np.where(has, (eps * FIXED).round().astype(np.int64), 0)
    return capacity.astype(np.int64), epsilon.astype(np.int64)


def simulate(model: BatteryModel, has_pv: np.ndarray, pv_mwh: np.ndarray,
             load_mwh: np.ndarray, hours: np.ndarray, window_minutes: int) -> Batteries:
    """Run every battery through the windows (``pv_mwh``/``load_mwh``: windows × homes;
    ``hours``: each window's local hour)."""
    capacity, epsilon = fleet(model, has_pv)
    windows, n = pv_mwh.shape
    power = np.array([int(Fraction(int(c)) * Fraction(model.c_rate) * window_minutes / 60)
                      for c in capacity], dtype=np.int64)  # mWh per window
    soc = np.array([int(Fraction(int(c)) * Fraction(model.initial_soc)) for c in capacity],
                   dtype=np.int64)
    action = np.zeros((windows, n), dtype=np.int64)
    states = np.zeros((windows, n), dtype=np.int64)
    for w in range(windows):
        if model.in_peak(int(hours[w])):
            out = np.minimum(soc, power)
            action[w] = -out
            soc = soc - out
        else:
            surplus = np.clip(pv_mwh[w] - load_mwh[w], 0, None)
            room = capacity - soc  # stored mWh free; charging b stores ε·b
            can = np.where(epsilon > 0, (room * FIXED) // np.maximum(epsilon, 1), 0)
            charge = np.minimum(np.minimum(surplus, power), can)
            action[w] = charge
            soc = soc + (charge * epsilon) // FIXED
        states[w] = soc
    return Batteries(capacity, epsilon, action, states)
