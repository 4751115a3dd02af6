"""One unit system, outputs that chain, and the pandas front door (the user's edge).

``examples/`` runs through ``clear`` → ``settle`` and ``pem`` as the README shows, with no
manual edit; the older spellings (currency per kWh) give the same market as the new ones and
say so once; ``sealgrid.clear``/``settle``/``pem`` on DataFrames equal the command line.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sealgrid
from sealgrid.cli import main
from sealgrid.mechanism.units import OldUnitWarning, UnitWarning

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRID = ("--price-floor", "4", "--price-ceiling", "20")


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_examples_chain_clear_into_settle(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    outcome = _json(capsys, "clear", str(EXAMPLES / "bids.csv"), *GRID)
    path = tmp_path / "outcome.json"
    path.write_text(json.dumps(outcome))
    bill = _json(capsys, "settle", "--meters", str(EXAMPLES / "meters.csv"),
                 "--tariffs", str(EXAMPLES / "tariffs.csv"), "--clearing", str(path))
    meters = pd.read_csv(EXAMPLES / "meters.csv", dtype=str)
    assert sorted(h["bidder"] for h in bill["households"]) == sorted(meters["bidder"])
    accepted = {a["bidder"]: a for a in outcome["allocations"] if a["accepted"]}
    assert accepted and len(accepted) < len(outcome["allocations"])  # some refused
    price = Fraction(outcome["price_ct_per_kwh"])
    tariffs = pd.read_csv(EXAMPLES / "tariffs.csv", dtype=str).set_index("supplier")
    for h in bill["households"]:
        row = meters.set_index("bidder").loc[h["bidder"]]
        tariff = tariffs.loc[row["supplier"]]
        r, e = Fraction(tariff["retail_ct_per_kwh"]), Fraction(tariff["feed_in_ct_per_kwh"])
        f = Fraction(tariff["network_fee_ct_per_kwh"])
        imp, exp = Fraction(row["import_kwh"]), Fraction(row["export_kwh"])
        without = e * exp - r * imp
        assert Fraction(h["without_market_ct"]) == without
        if h["bidder"] not in accepted:
            assert Fraction(h["difference_ct"]) == 0
            continue
        a = accepted[h["bidder"]]
        q = Fraction(a["settled_kwh"])
        # settled whole Wh: at most 1 Wh under the exact pro-rata amount
        assert -1e-12 <= a["traded_kwh"] - float(q) < 0.001
        if a["side"] == "buy":
            dev = -r * (imp - q) if imp >= q else e * (q - imp)
            expected = -price * q + dev + e * exp
        else:
            dev = e * (exp - q) if exp >= q else -r * (q - exp)
            expected = (price - f) * q + dev - r * imp
        assert Fraction(h["with_market_ct"]) == expected, h["bidder"]
    # the table says its unit
    assert main(["settle", "--meters", str(EXAMPLES / "meters.csv"), "--tariffs",
                 str(EXAMPLES / "tariffs.csv"), "--clearing", str(path)]) == 0
    assert capsys.readouterr().out.startswith("Money in ct")


def test_examples_pem_runs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, "pem", str(EXAMPLES / "agents.csv"), "--retail", "120", "--feed-in",
                "80", "--price-range", "90", "110")
    assert doc["units"]["price"] == "ct/kWh" and doc["trades"]
    assert 90 <= float(doc["price_ct_per_kwh"]) <= 110


def test_older_spellings_clear_the_same_market_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _json(capsys, "clear", str(EXAMPLES / "bids.csv"), *GRID)
    bids = pd.read_csv(EXAMPLES / "bids.csv", dtype=str)
    old_csv = bids.assign(price=[str(Decimal(p) / 100) for p in bids.pop("price_ct_per_kwh")])
    old_path = tmp_path / "old.csv"
    old_csv.to_csv(old_path, index=False)
    assert main(["clear", str(old_path), "--floor", "0.04", "--ceiling", "0.20", "--tick",
                 "0.001", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == new
    warned = [line for line in captured.err.splitlines()]
    assert len(warned) == 4 and all(w.startswith("sealgrid: warning: ") for w in warned)
    for name in ("--floor", "--ceiling", "--tick", "'price'"):
        assert sum(name in w for w in warned) == 1, name
    # an old grid with a new bids file: the same market again (both read in cents inside)
    assert _json(capsys, "clear", str(EXAMPLES / "bids.csv"), "--floor", "0.04",
                 "--ceiling", "0.20") == new
    assert main(["clear", str(EXAMPLES / "bids.csv"), "--floor", "0.04",
                 "--price-floor", "4", "--price-ceiling", "20"]) == 1
    assert "not both" in capsys.readouterr().err


def test_older_settle_spellings_give_the_same_money(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trades = tmp_path / "trades.csv"
    trades.write_text("bidder,side,traded_kwh\nh01,buy,1.2\nh06,sell,1.2\n")
    meters = tmp_path / "meters.csv"
    meters.write_text("bidder,supplier,import_kwh,export_kwh\nh01,A,1.5,0\nh06,A,0,1\n")
    new_t = tmp_path / "new.csv"
    new_t.write_text("supplier,retail_ct_per_kwh,feed_in_ct_per_kwh,network_fee_ct_per_kwh\n"
                     "A,20,4,3\n")
    old_t = tmp_path / "old.csv"
    old_t.write_text("supplier,retail,feed_in,network_fee\nA,0.2,0.04,0.03\n")
    new = _json(capsys, "settle", "--meters", str(meters), "--tariffs", str(new_t),
                "--trades", str(trades), "--clearing-price", "11.5")
    assert main(["settle", "--meters", str(meters), "--tariffs", str(old_t), "--trades",
                 str(trades), "--price", "0.115", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == new
    assert [w.split(" is in ")[0] for w in captured.err.splitlines()] == [
        "sealgrid: warning: --price",
        "sealgrid: warning: the tariffs' columns 'retail, feed_in, network_fee'"]
    assert new["households"][0]["with_market_ct"] == "-19.8"  # −11.5 · 1.2 − 20 · 0.3, exact


def test_pem_warns_when_a_price_looks_like_currency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cents = _json(capsys, "pem", str(EXAMPLES / "agents.csv"), "--retail", "120",
                  "--feed-in", "80", "--price-range", "90", "110")
    assert capsys.readouterr().err == ""
    assert main(["pem", str(EXAMPLES / "agents.csv"), "--retail", "1.20", "--feed-in", "0.80",
                 "--price-range", "0.90", "1.10", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("sealgrid: warning: the retail price is 1.2 ct/kWh")
    # the unit changes PEM's market, not only the display: the warning is not idle
    assert json.loads(captured.out)["price"] * 100 != cents["price"]


# --- the front door ------------------------------------------------------------------------


def test_front_door_clear_equals_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _json(capsys, "clear", str(EXAMPLES / "bids.csv"), *GRID)
    frame = sealgrid.clear(pd.read_csv(EXAMPLES / "bids.csv"), price_floor=4,
                           price_ceiling=20)
    assert frame.to_dict("records") == cli["allocations"]
    assert frame.attrs["price_ct_per_kwh"] == cli["price_ct_per_kwh"]
    assert frame.attrs["volume_kwh"] == cli["volume_kwh"]
    assert frame.attrs["suppliers"] == cli["suppliers"]


def test_front_door_reads_any_numeric_type_exactly() -> None:
    base = pd.read_csv(EXAMPLES / "bids.csv", dtype=str)
    expected = sealgrid.clear(base, price_floor="4", price_ceiling="20")
    variants = {
        "float64": base.astype({"quantity_kwh": float, "price_ct_per_kwh": float}),
        "float32": base.astype({"quantity_kwh": np.float32, "price_ct_per_kwh": np.float32}),
        "int64 price": base.astype({"price_ct_per_kwh": np.int64}),
        "Decimal": base.assign(quantity_kwh=[Decimal(q) for q in base["quantity_kwh"]]),
        "Fraction": base.assign(quantity_kwh=[Fraction(q) for q in base["quantity_kwh"]]),
    }
    for name, frame in variants.items():
        got = sealgrid.clear(frame, price_floor=np.int64(4), price_ceiling=20.0,
                             price_tick=Decimal("0.1"))
        assert got.equals(expected), name
        assert got.attrs["price_ct_per_kwh"] == expected.attrs["price_ct_per_kwh"], name


def test_front_door_names_the_broken_rows() -> None:
    bids = pd.read_csv(EXAMPLES / "bids.csv").astype({"price_ct_per_kwh": float})
    bids.loc[3, "price_ct_per_kwh"] = 12.34  # off the 0.1 grid
    bids.loc[7, "side"] = "hold"
    with pytest.raises(sealgrid.InputError) as caught:
        sealgrid.clear(bids, price_floor=4, price_ceiling=20)
    assert [line.split(":")[0:2] for line in caught.value.lines] == [
        ["row 3", " price_off_grid"], ["row 7", " unknown_side"]]


def test_front_door_settle_and_pem_equal_the_cli(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    outcome = _json(capsys, "clear", str(EXAMPLES / "bids.csv"), *GRID)
    path = tmp_path / "outcome.json"
    path.write_text(json.dumps(outcome))
    cli = _json(capsys, "settle", "--meters", str(EXAMPLES / "meters.csv"),
                "--tariffs", str(EXAMPLES / "tariffs.csv"), "--clearing", str(path))
    allocations = sealgrid.clear(pd.read_csv(EXAMPLES / "bids.csv"), price_floor=4,
                                 price_ceiling=20)
    bill = sealgrid.settle(pd.read_csv(EXAMPLES / "meters.csv"),
                           pd.read_csv(EXAMPLES / "tariffs.csv"), clearing=allocations)
    households = bill[bill["role"] == "household"]
    assert [(r.party, r.with_market_ct, r.difference_ct) for r in households.itertuples()] == [
        (h["bidder"], Fraction(h["with_market_ct"]), Fraction(h["difference_ct"]))
        for h in cli["households"]]
    grid = bill[bill["role"] == "grid_operator"].iloc[0]
    assert grid["with_market_ct"] == Fraction(cli["grid_operator"]["with_market_ct"])

    pem_cli = _json(capsys, "pem", str(EXAMPLES / "agents.csv"), "--retail", "120",
                    "--feed-in", "80", "--price-range", "90", "110")
    trades = sealgrid.pem(pd.read_csv(EXAMPLES / "agents.csv"), retail=120, feed_in=80,
                          price_range=(90, 110))
    assert float(trades.attrs["price_ct_per_kwh"]) == pem_cli["price"]
    assert [(t.seller, t.buyer, float(t.energy_kwh), float(t.payment_ct))
            for t in trades.itertuples()] == [
        (t["seller"], t["buyer"], t["energy"], t["payment"]) for t in pem_cli["trades"]]


def test_front_door_warns_on_older_spelling_and_implausible_units() -> None:
    bids = pd.read_csv(EXAMPLES / "bids.csv")
    old = bids.assign(price=bids.pop("price_ct_per_kwh") / 100)
    with pytest.warns(OldUnitWarning, match="'price'"):
        got = sealgrid.clear(old, price_floor=4, price_ceiling=20)
    assert got.attrs["price_ct_per_kwh"] == sealgrid.clear(
        pd.read_csv(EXAMPLES / "bids.csv"), price_floor=4, price_ceiling=20,
    ).attrs["price_ct_per_kwh"]
    with pytest.warns(UnitWarning, match="cents per kWh"):
        sealgrid.pem(pd.read_csv(EXAMPLES / "agents.csv"), retail=1.2, feed_in=0.8,
                     price_range=(0.9, 1.1))


def test_the_readme_python_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(EXAMPLES.parent)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)  # the README's own example
    allocations = scope["allocations"]
    assert isinstance(allocations, pd.DataFrame)
    assert allocations.attrs["price_ct_per_kwh"] == "11.5"  # what the README's comment says
    assert "# '11.5'" in block
