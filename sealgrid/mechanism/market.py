"""One local market's rules, in one place: pure values, no I/O, no cryptography.

Everything that must be equal for every participant of one market lives here: the price grid,
the largest quantity one bid may carry, the registered suppliers, the length of a trading
period and the minimum participation per side. The secret-share layout
(:class:`sealgrid.protocol.encoding.Layout`), the servers' configuration
(:mod:`sealgrid.service.config`) and the signed ``MarketInfo`` message that every client reads
(:mod:`sealgrid.service.wire`) are all derived from one :class:`Market`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealgrid.mechanism.grid import PriceGrid

#: Largest quantity one household may bid in one period, by default (Wh).
DEFAULT_MAX_QUANTITY_WH = 10_000
#: Length of a trading period in the running market, by default (seconds).
DEFAULT_PERIOD_SECONDS = 900
#: The running market's default price grid, cents per kWh: from the feed-in tariff (80) to
#: the retail price (120), as in paper xie2020's evaluation, in steps of 0.1 cent.
DEFAULT_GRID = PriceGrid.from_values("80", "120", "0.1")
#: The papers' rule: one accepted bid on each side is enough for a period to trade.
PAPERS_MIN_ACCEPTED_PER_SIDE = 1
#: The running market's rule: with one or two accepted bids on a side, the other side's
#: amounts would tell that side's quantities, so such a period does not trade.
SERVICE_MIN_ACCEPTED_PER_SIDE = 3


@dataclass(frozen=True)
class Market:
    """What every bid must satisfy and how a period is run.

    ``suppliers`` empty means any supplier id is accepted (the plaintext CLI without a list).
    ``min_accepted_per_side``: the period trades only if at least this many bids are accepted
    on each side at the clearing level; otherwise it is "no trade" for everyone
    (docs/mechanism.md).
    """

    grid: PriceGrid
    max_quantity_wh: int = DEFAULT_MAX_QUANTITY_WH
    suppliers: tuple[str, ...] = ()
    period_seconds: int = DEFAULT_PERIOD_SECONDS
    min_accepted_per_side: int = PAPERS_MIN_ACCEPTED_PER_SIDE

    def __post_init__(self) -> None:
        if self.max_quantity_wh <= 0:
            raise ValueError("the maximum quantity must be positive")
        if self.period_seconds <= 0:
            raise ValueError("the trading period must be positive")
        if self.min_accepted_per_side < 1:
            raise ValueError("the minimum participation per side must be at least 1")
        if len(set(self.suppliers)) != len(self.suppliers):
            raise ValueError("supplier ids must be distinct")

    @property
    def levels(self) -> int:
        """Number of levels of the price grid."""
        return self.grid.levels

    def supplier_index(self, supplier: str) -> int:
        """Return the position of ``supplier`` among the market's suppliers.

        Raises:
            ValueError: the supplier is not one of the market's.
        """
        try:
            return self.suppliers.index(supplier)
        except ValueError:
            raise ValueError(f"{supplier!r} is not one of the market's suppliers") from None
