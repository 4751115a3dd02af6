"""sealgrid's front door for Python: pandas DataFrames in, DataFrames out.

``sealgrid.clear(bids, price_floor=…, price_ceiling=…)`` clears one period's double auction,
``sealgrid.pem(agents, retail=…, feed_in=…, price_range=(…, …))`` prices one PEM window and
``sealgrid.settle(meters, tariffs, clearing=…)`` settles a period with and without the market.
Prices are in ¢/kWh, energy in kWh, money in cents (:mod:`sealgrid.mechanism.units`); numbers
of any type (str, int, float, numpy, Decimal, Fraction) are read exactly: a float by its
shortest repr, as ``pandas.read_csv`` gives them. Each returns a DataFrame with one row per
bid, trade or party; the period's figures (status, price, volume) are in ``DataFrame.attrs``.
The functions here are also what the command line prints (``sealgrid clear --json`` is
:func:`clearing_document`), so the two agree by construction.

Every rule a row breaks is reported at once, naming the row: :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from sealgrid.mechanism.auction import Clearing, rationing
from sealgrid.mechanism.auction import clear as clear_book
from sealgrid.mechanism.bids import Bid, BidRejected, OrderBook, Reason, Side, check_bid
from sealgrid.mechanism.billing import settled_wh
from sealgrid.mechanism.grid import PriceGrid, parse_decimal
from sealgrid.mechanism.market import Market
from sealgrid.mechanism.pem import Agent, PemInputError, PemMarket, PemOutcome, run_pem
from sealgrid.mechanism.settlement import (
    Account,
    MarketTrade,
    Meter,
    Settlement,
    SettlementError,
    Tariff,
)
from sealgrid.mechanism.settlement import settle as settle_period
from sealgrid.mechanism.units import (
    UNITS,
    check_retail,
    deprecated,
    exact,
    from_currency,
    to_currency,
)

if TYPE_CHECKING:
    import pandas as pd

#: The bid columns; the price column's older spelling, ``price``, is in currency per kWh.
BID_COLUMNS = ("bidder", "side", "quantity_kwh", "price_ct_per_kwh", "supplier")
#: The tariff columns (¢/kWh); the older spellings without ``_ct_per_kwh`` are kept.
TARIFF_COLUMNS = ("supplier", "retail_ct_per_kwh", "feed_in_ct_per_kwh", "network_fee_ct_per_kwh")
OLD_TARIFF_COLUMNS = ("supplier", "retail", "feed_in", "network_fee")
METER_COLUMNS = ("bidder", "supplier", "import_kwh", "export_kwh")
TRADE_COLUMNS = ("bidder", "side", "traded_kwh")
AGENT_COLUMNS = ("agent", "generation", "load", "battery", "k", "epsilon")


class InputError(ValueError):
    """Rows or settings break rules; ``lines`` holds one message per broken rule."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


# ------------------------------------------------------------------------------------------
# The double auction


def market(
    price_floor: object, price_ceiling: object, price_tick: object = "0.1", *,
    max_quantity_kwh: object = "10", suppliers: Iterable[str] = (), min_per_side: int = 1,
) -> Market:
    """The market's rules from edge values: the price grid in ¢/kWh, the largest bid in kWh.

    Raises:
        InputError: the grid, the maximum quantity or the minimum participation is not valid.
    """
    try:
        grid = PriceGrid.from_values(*(_decimal(v) for v in (price_floor, price_ceiling,
                                                               price_tick)))
        max_wh = _decimal(max_quantity_kwh) * 1000
    except ValueError as exc:
        raise InputError([f"invalid market settings: {exc}"]) from None
    if max_wh != max_wh.to_integral_value() or max_wh <= 0:
        raise InputError(["the maximum quantity must be positive with at most 3 decimals (kWh)"])
    if min_per_side < 1:
        raise InputError(["the minimum participation per side must be at least 1"])
    names = tuple(s.strip() for s in suppliers if s.strip())
    try:
        return Market(grid, int(max_wh), names, min_accepted_per_side=min_per_side)
    except ValueError as exc:
        raise InputError([str(exc)]) from None


def check_bids(rows: Iterable[tuple[str, Mapping[str, Any]]],
               rules: Market) -> tuple[list[Bid], list[str]]:
    """Check each ``(where, row)``; return the valid bids and one message per broken rule.

    A row's price is ``price_ct_per_kwh`` (¢/kWh), or ``price`` in currency per kWh (the
    older spelling, converted exactly and warned about once).
    """
    bids: list[Bid] = []
    errors: list[str] = []
    seen: set[str] = set()
    warned = False
    for where, v in rows:
        price: object = v.get("price_ct_per_kwh")
        if _missing(price) and "price" in v:
            if not warned:
                deprecated("the bids' column 'price'", "'price_ct_per_kwh'")
                warned = True
            try:
                price = from_currency(parse_decimal(_text(v["price"])))
            except ValueError:
                price = v["price"]
        bidder = _text(v.get("bidder"))
        bid, rejections = check_bid(rules, bidder, _text(v.get("side")),
                                    _number_text(v.get("quantity_kwh")), _number_text(price),
                                    _text(v.get("supplier")))
        if v.get("__extra__"):
            rejections.append(BidRejected(Reason.MALFORMED, "more fields than the header"))
        if bidder in seen:
            rejections.append(BidRejected(Reason.DUPLICATE_PSEUDONYM, f"bidder {bidder}"))
        seen.add(bidder)
        errors += [f"{where}: {r}" for r in rejections]
        if bid is not None and not rejections:
            bids.append(bid)
    return bids, errors


def clear_bids(bids: Sequence[Bid], rules: Market, *, secure: bool = False,
               parties: int = 3) -> tuple[OrderBook, Clearing]:
    """Clear valid bids by the plaintext reference, or under MPC with separate server
    processes over TLS (``secure``); both give the same :class:`Clearing`."""
    book = OrderBook.from_bids(bids, rules.suppliers)
    if not secure:
        return book, clear_book(book, rules.levels,
                                min_accepted_per_side=rules.min_accepted_per_side)
    from sealgrid.protocol.clearing import secure_clear

    outcome = secure_clear(book, rules.levels, parties=parties,
                           max_quantity_wh=rules.max_quantity_wh,
                           min_per_side=rules.min_accepted_per_side)
    return book, outcome.clearing


def settled_wh_of(result: Clearing, book: OrderBook, i: int) -> int:
    """Bid ``i``'s traded energy as the running market settles it, in whole Wh (its side's
    rationing ratio cut to 20 binary digits, :func:`sealgrid.mechanism.billing.settled_wh`)."""
    if not result.accepted[i]:
        return 0
    buy = bool(book.is_buy[i])
    side_total = result.demand_wh if buy else result.supply_wh
    ratio = Fraction(*rationing(result.volume_wh, side_total))
    return settled_wh(int(book.quantity_wh[i]), ratio)


def clearing_document(bids: Sequence[Bid], book: OrderBook, result: Clearing,
                      grid: PriceGrid) -> dict[str, Any]:
    """The JSON document of ``sealgrid clear --json`` (docs/mechanism.md's contract).

    ``price_ct_per_kwh`` and each allocation's ``settled_kwh`` are exact decimal strings;
    ``settled_kwh`` is the energy the running market settles (whole Wh, rounded down on the
    rationed side), so the document feeds ``sealgrid settle --clearing`` unchanged.
    ``price`` (currency per kWh) and the float ``traded_kwh`` are the older fields.
    """
    traded = result.traded_kwh_array(book.is_buy)
    price = grid.price(result.level) if result.level is not None else None
    return {
        "units": dict(UNITS),
        "status": "cleared" if result.traded else "no_trade",
        "price_ct_per_kwh": exact(price) if price is not None else None,
        "price": float(to_currency(price)) if price is not None else None,
        "volume_kwh": float(Fraction(result.volume_wh, 1000)),
        "allocations": [
            {
                "bidder": b.bidder,
                "side": b.side.value,
                "accepted": bool(result.accepted[i]),
                "traded_kwh": float(traded[i]),
                "settled_kwh": format(Decimal(settled_wh_of(result, book, i)).scaleb(-3), "f"),
            }
            for i, b in enumerate(bids)
        ],
        "suppliers": [
            {
                "supplier": name,
                "bought_kwh": float(result.supplier_bought_wh[s] / 1000),
                "sold_kwh": float(result.supplier_sold_wh[s] / 1000),
            }
            for s, name in enumerate(book.suppliers)
        ],
    }


def clear(
    bids: pd.DataFrame, *, price_floor: object, price_ceiling: object,
    price_tick: object = "0.1", max_quantity_kwh: object = "10",
    suppliers: Iterable[str] = (), min_per_side: int = 1, secure: bool = False,
    parties: int = 3,
) -> pd.DataFrame:
    """Clear one period's uniform-price double auction.

    ``bids``: columns ``bidder, side, quantity_kwh, price_ct_per_kwh, supplier`` (``price`` in
    currency per kWh is the older spelling). Returns one row per bid (``bidder, side, accepted,
    traded_kwh, settled_kwh``) with ``attrs`` ``status``, ``price_ct_per_kwh``,
    ``volume_kwh``, ``suppliers`` and ``units``; the same figures as ``sealgrid clear --json``.

    Raises:
        InputError: a row or a setting breaks a rule (every one named, rows by their index).
    """
    rules = market(price_floor, price_ceiling, price_tick, max_quantity_kwh=max_quantity_kwh,
                   suppliers=suppliers, min_per_side=min_per_side)
    if "price_ct_per_kwh" not in bids.columns and "price" not in bids.columns:
        raise InputError(["missing column(s) price_ct_per_kwh"])
    valid, errors = check_bids(_records(bids, ("bidder", "side", "quantity_kwh", "supplier")),
                               rules)
    if errors:
        raise InputError(errors)
    book, result = clear_bids(valid, rules, secure=secure, parties=parties)
    document = clearing_document(valid, book, result, rules.grid)
    return _frame(document, "allocations", ("status", "price_ct_per_kwh", "volume_kwh",
                                            "suppliers", "units"))


# ------------------------------------------------------------------------------------------
# Settlement


def read_tariff(where: str, v: Mapping[str, Any], old_in_currency: bool,
                errors: list[str]) -> tuple[str, Tariff] | None:
    """One tariff row in ¢/kWh (``*_ct_per_kwh``, or the older ``retail, feed_in,
    network_fee``: currency per kWh for ``settle``, ``old_in_currency``, but already ¢/kWh for
    ``init``); every broken rule is appended to ``errors``."""
    new = not _missing(v.get("retail_ct_per_kwh"))
    names = TARIFF_COLUMNS[1:] if new else OLD_TARIFF_COLUMNS[1:]
    values = [_non_negative(where, v.get(c), c, errors) for c in names]
    if not new and old_in_currency:
        values = [None if x is None else x * 100 for x in values]
    name = _text(v.get("supplier"))
    if not name:
        errors.append(f"{where}: malformed: supplier is empty")
        return None
    r, e, f = values
    if r is None or e is None or f is None:
        return None
    try:
        return name, Tariff(r, e, f)
    except SettlementError as exc:
        errors.append(f"{where}: {exc}")
        return None


def read_tariffs(rows: Iterable[tuple[str, Mapping[str, Any]]],
                 old_in_currency: bool) -> dict[str, Tariff]:
    """Every supplier's tariff in ¢/kWh. Raises InputError naming each broken row."""
    tariffs: dict[str, Tariff] = {}
    errors: list[str] = []
    warned = False
    for where, v in rows:
        if _missing(v.get("retail_ct_per_kwh")) and old_in_currency and not warned:
            deprecated("the tariffs' columns 'retail, feed_in, network_fee'",
                       "'retail_ct_per_kwh, feed_in_ct_per_kwh, network_fee_ct_per_kwh'")
            warned = True
        found = read_tariff(where, v, old_in_currency, errors)
        if found is None:
            continue
        if found[0] in tariffs:
            errors.append(f"{where}: duplicate: supplier {found[0]} has two tariffs")
        tariffs[found[0]] = found[1]
    if errors:
        raise InputError(errors)
    return tariffs


def read_meters(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Meter]:
    """Every household's meter reading (kWh). Raises InputError naming each broken row."""
    meters: list[Meter] = []
    errors: list[str] = []
    for where, v in rows:
        imp = _non_negative(where, v.get("import_kwh"), "import_kwh", errors)
        exp = _non_negative(where, v.get("export_kwh"), "export_kwh", errors)
        bidder, supplier = _text(v.get("bidder")), _text(v.get("supplier"))
        if not bidder or not supplier:
            errors.append(f"{where}: malformed: bidder and supplier must not be empty")
        elif imp is not None and exp is not None:
            meters.append(Meter(bidder, supplier, imp, exp))
    if errors:
        raise InputError(errors)
    return meters


def read_trades(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> list[MarketTrade]:
    """Every household's traded energy (kWh). Raises InputError naming each broken row."""
    trades: list[MarketTrade] = []
    errors: list[str] = []
    for where, v in rows:
        q = _non_negative(where, v.get("traded_kwh"), "traded_kwh", errors)
        try:
            side = Side(_text(v.get("side")).lower())
        except ValueError:
            errors.append(f"{where}: unknown_side: side must be 'buy' or 'sell'")
            continue
        if q is not None:
            trades.append(MarketTrade(_text(v.get("bidder")), side, q))
    if errors:
        raise InputError(errors)
    return trades


def trades_of_clearing(document: Mapping[str, Any]) -> tuple[list[MarketTrade], Fraction | None]:
    """The settled trades and the price (¢/kWh) of a ``sealgrid clear --json`` document.

    Raises:
        InputError: the document is not one ``sealgrid clear --json`` prints.
    """
    try:
        if document["status"] == "no_trade":
            return [], None
        price = Fraction(parse_decimal(document["price_ct_per_kwh"]))
        trades = [MarketTrade(str(a["bidder"]), Side(a["side"]),
                              Fraction(parse_decimal(a["settled_kwh"])))
                  for a in document["allocations"] if a["accepted"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError([f"not a clearing document of 'sealgrid clear --json' "
                          f"(from this version on): {exc!s}"]) from None
    return trades, price


def settlement_document(result: Settlement) -> dict[str, Any]:
    """The JSON document of ``sealgrid settle --json``: each party's money in cents (exact
    decimal strings, ``*_ct``) and, as the older fields, in currency units (floats)."""

    def account(a: Account, key: str | None) -> dict[str, Any]:
        doc: dict[str, Any] = {key: a.party} if key else {}
        for name, value in (("with_market", a.with_market),
                            ("without_market", a.without_market),
                            ("difference", a.difference)):
            doc[name] = float(to_currency(value))
            doc[f"{name}_ct"] = exact(value)
        return doc

    return {
        "units": dict(UNITS),
        "households": [account(a, "bidder") for a in result.households],
        "suppliers": [account(a, "supplier") for a in result.suppliers],
        "grid_operator": account(result.grid_operator, None),
    }


def settle(
    meters: pd.DataFrame, tariffs: pd.DataFrame, *, trades: pd.DataFrame | None = None,
    price_ct_per_kwh: object = None, clearing: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Settle one period with and without the market (mustafa2016 §III-D).

    ``meters``: ``bidder, supplier, import_kwh, export_kwh``; ``tariffs``: ``supplier,
    retail_ct_per_kwh, feed_in_ct_per_kwh, network_fee_ct_per_kwh``; then either ``clearing``
    (what :func:`clear` returned) or ``trades`` (``bidder, side, traded_kwh``) with
    ``price_ct_per_kwh``. Returns one row per party (``party, role, with_market_ct,
    without_market_ct, difference_ct``, exact Fractions in cents), positive when it receives.

    Raises:
        InputError: a row breaks a rule, or the inputs contradict each other.
    """
    import pandas as pd

    tariff_rows = _records(tariffs, ("supplier",))
    parsed_tariffs = read_tariffs(tariff_rows, old_in_currency=True)
    parsed_meters = read_meters(_records(meters, METER_COLUMNS))
    price: Fraction | None = None
    traded: list[MarketTrade] = []
    if clearing is not None:
        if trades is not None or price_ct_per_kwh is not None:
            raise InputError(["give either clearing or trades with price_ct_per_kwh"])
        document = dict(clearing.attrs)
        document["allocations"] = clearing.to_dict("records")
        traded, price = trades_of_clearing(document)
    elif trades is not None:
        if price_ct_per_kwh is None:
            raise InputError(["trades need price_ct_per_kwh"])
        traded = read_trades(_records(trades, TRADE_COLUMNS))
        price = Fraction(_decimal(price_ct_per_kwh))
    try:
        result = settle_period(parsed_meters, parsed_tariffs, traded, price)
    except SettlementError as exc:
        raise InputError([str(exc)]) from None
    rows = [(a, role) for role, accounts in (("household", result.households),
                                             ("supplier", result.suppliers),
                                             ("grid_operator", (result.grid_operator,)))
            for a in accounts]
    frame = pd.DataFrame(
        [{"party": a.party, "role": role, "with_market_ct": a.with_market,
          "without_market_ct": a.without_market, "difference_ct": a.difference}
         for a, role in rows])
    frame.attrs["units"] = dict(UNITS)
    return frame


# ------------------------------------------------------------------------------------------
# PEM


def read_agents(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Agent]:
    """Every PEM agent of one window. Raises InputError naming each broken row."""
    agents: list[Agent] = []
    errors: list[str] = []
    seen: set[str] = set()
    for where, v in rows:
        try:
            agent = Agent.from_values(_text(v.get("agent")),
                                      *(_number_text(v.get(c)) for c in AGENT_COLUMNS[1:]))
        except PemInputError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if agent.name in seen:
            errors.append(f"{where}: agent {agent.name} appears twice")
        seen.add(agent.name)
        agents.append(agent)
    if errors:
        raise InputError(errors)
    return agents


def pem_market(retail: object, feed_in: object, low: object, high: object) -> PemMarket:
    """PEM's grid prices and price range in ¢/kWh.

    Raises:
        InputError: a price is not a number, has more than 6 decimals or breaks an order.
    """
    try:
        rules = PemMarket.from_values(*(_number_text(v) for v in (retail, feed_in, low, high)))
    except PemInputError as exc:
        raise InputError([f"invalid market prices: {exc}"]) from None
    check_retail(rules.retail)
    return rules


def pem_document(outcome: PemOutcome) -> dict[str, Any]:
    """The JSON document of ``sealgrid pem --json``: energy in kWh, prices in ¢/kWh and
    payments in cents (floats, as before), with ``price_ct_per_kwh`` an exact decimal string
    when the price has one (else cut to 12 decimals)."""
    return {
        "units": dict(UNITS),
        "market": outcome.market.value,
        "price": float(outcome.price),
        "price_ct_per_kwh": exact(outcome.price),
        "trades": [
            {"seller": t.seller, "buyer": t.buyer, "energy": float(t.energy),
             "payment": float(t.payment)}
            for t in outcome.trades
        ],
        "sellers": [
            {"agent": s.agent, "net": float(s.net), "optimal_load": float(s.optimal_load)}
            for s in outcome.sellers
        ],
    }


def pem(agents: pd.DataFrame, *, retail: object, feed_in: object,
        price_range: tuple[object, object]) -> pd.DataFrame:
    """Price one PEM trading window (xie2020) in plaintext.

    ``agents``: ``agent, generation, load, battery, k, epsilon`` (kWh for the window; battery
    > 0 charging). ``retail``, ``feed_in`` and ``price_range`` in ¢/kWh. Returns one row per
    trade (``seller, buyer, energy_kwh, payment_ct``, exact Fractions) with ``attrs``
    ``market``, ``price_ct_per_kwh`` (a Fraction) and ``units``.

    Raises:
        InputError: a row or a price breaks a rule.
    """
    import pandas as pd

    rules = pem_market(retail, feed_in, *price_range)
    parsed = read_agents(_records(agents, AGENT_COLUMNS))
    try:
        outcome = run_pem(parsed, rules)
    except PemInputError as exc:
        raise InputError([str(exc)]) from None
    frame = pd.DataFrame(
        [{"seller": t.seller, "buyer": t.buyer, "energy_kwh": t.energy, "payment_ct": t.payment}
         for t in outcome.trades], columns=["seller", "buyer", "energy_kwh", "payment_ct"])
    frame.attrs.update(market=outcome.market.value, price_ct_per_kwh=outcome.price,
                       units=dict(UNITS))
    return frame


# ------------------------------------------------------------------------------------------
# Edges


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # NaN, as pandas marks an empty cell
    except (TypeError, ValueError):
        return False


def _text(value: object) -> str:
    return "" if _missing(value) else str(value).strip()


def _number_text(value: object) -> str:
    """A number of any type as exact decimal text (floats by their shortest repr)."""
    if _missing(value):
        return ""
    if isinstance(value, Fraction):
        return exact(value, 18)
    try:
        return str(parse_decimal(value))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        pass
    item = getattr(value, "item", None)  # numpy scalars: their Python value
    if callable(item):
        return _number_text(item())
    return str(value)


def _decimal(value: object) -> Decimal:
    return parse_decimal(_number_text(value))


def _non_negative(where: str, value: object, column: str, errors: list[str]) -> Fraction | None:
    try:
        number = Fraction(parse_decimal(_number_text(value)))
    except ValueError:
        errors.append(f"{where}: malformed: {column} is missing or not a number")
        return None
    if number < 0:
        errors.append(f"{where}: negative: {column} must not be negative")
        return None
    return number


def _records(frame: pd.DataFrame, required: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError([f"missing column(s) {', '.join(missing)}"])
    # column by column, so that each value keeps its own type (a float32 its shortest repr)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    return [(f"row {index}", {c: values[i] for c, values in columns.items()})
            for i, index in enumerate(frame.index)]


def _frame(document: Mapping[str, Any], rows: str, attrs: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(document[rows])
    frame.attrs.update({k: document[k] for k in attrs})
    return frame
