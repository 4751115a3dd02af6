"""The command line's contracts: JSON shapes, readable errors, exit statuses, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealgrid.cli import main

BIDS = """bidder,side,quantity_kwh,price_ct_per_kwh,supplier
h1,buy,2,15,A
h2,sell,1,5,A
h3,sell,2,10,B
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_clear_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "clear", str(write(tmp_path, "b.csv", BIDS)),
                   "--price-floor", "4", "--price-ceiling", "20", "--price-tick", "0.1")
    assert set(doc) == {"units", "status", "price_ct_per_kwh", "price", "volume_kwh",
                        "allocations", "suppliers"}
    assert doc["units"] == {"price": "ct/kWh", "money": "ct", "energy": "kWh"}
    assert doc["status"] == "cleared" and doc["price_ct_per_kwh"] == "12.5"
    assert doc["price"] == 0.125 and doc["volume_kwh"] == 2.0  # the older field, per kWh
    assert doc["allocations"][0] == {"bidder": "h1", "side": "buy", "accepted": True,
                                     "traded_kwh": 2.0, "settled_kwh": "2.000"}
    # sellers rationed 2/3: 666.67 Wh and 1333.33 Wh settle as 666 and 1333 Wh
    assert [a["settled_kwh"] for a in doc["allocations"][1:]] == ["0.666", "1.333"]
    assert doc["allocations"][1]["traded_kwh"] == pytest.approx(2 / 3)
    assert doc["suppliers"] == [
        {"supplier": "A", "bought_kwh": 2.0, "sold_kwh": pytest.approx(2 / 3)},
        {"supplier": "B", "bought_kwh": 0.0, "sold_kwh": pytest.approx(4 / 3)},
    ]


def test_clear_no_trade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "bidder,side,quantity_kwh,price_ct_per_kwh,supplier\nh1,buy,2,5,A\nh2,sell,1,15,A\n"
    doc = run_json(capsys, "clear", str(write(tmp_path, "b.csv", text)),
                   "--price-floor", "4", "--price-ceiling", "20")
    assert doc["status"] == "no_trade" and doc["price"] is None and doc["volume_kwh"] == 0
    assert not any(a["accepted"] for a in doc["allocations"])


def test_clear_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clear", str(write(tmp_path, "b.csv", BIDS)), "--price-floor", "4",
                 "--price-ceiling", "20"]) == 0
    out = capsys.readouterr().out
    assert "Clearing price: 12.5 ct/kWh" in out and "h3" in out and "1.3333" in out


def test_clear_invalid_rows_one_line_per_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = ("bidder,side,quantity_kwh,price_ct_per_kwh,supplier\n"
            "h1,buy,2,15.05,A\n"
            "h2,hold,-1,5,A\n"
            "h1,sell,1,30,B\n")
    assert main(["clear", str(write(tmp_path, "b.csv", text)), "--price-floor", "4",
                 "--price-ceiling", "20"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines == [
        l for l in lines if l.startswith("sealgrid: error: b.csv line ")]
    got = {(l.split(" line ")[1].split(":")[0], l.split(": ")[3]) for l in lines}
    assert got == {("2", "price_off_grid"), ("3", "unknown_side"),
                   ("3", "quantity_not_positive"), ("4", "price_above_ceiling"),
                   ("4", "duplicate_pseudonym")}


def test_clear_skip_invalid_clears_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BIDS + "h4,buy,1,12.34,A\n"
    doc = run_json(capsys, "clear", str(write(tmp_path, "b.csv", text)), "--price-floor", "4",
                   "--price-ceiling", "20", "--skip-invalid")
    assert [a["bidder"] for a in doc["allocations"]] == ["h1", "h2", "h3"]
    assert len(doc["rejected"]) == 1 and "line 5: price_off_grid" in doc["rejected"][0]


def test_clear_registered_suppliers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, "b.csv", BIDS))
    assert main(["clear", path, "--price-floor", "4", "--price-ceiling", "20",
                 "--suppliers", "A"]) == 1
    assert "line 4: unknown_supplier" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    (b"\xff\xfe\x00garbage", "not a UTF-8"),
    (b"who,what\n1,2\n", "missing column"),
    (b"", "missing column"),
])
def test_clear_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "b.csv"
    if content is not None:
        path.write_bytes(content)
    assert main(["clear", str(path), "--price-floor", "4", "--price-ceiling", "20"]) == 1
    assert message in capsys.readouterr().err


def test_clear_bad_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, "b.csv", BIDS))
    assert main(["clear", path, "--price-floor", "20", "--price-ceiling", "4"]) == 1
    assert "invalid market settings" in capsys.readouterr().err


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.text(alphabet="abuyselc0123456789.,-\"' ", max_size=8),
                         min_size=0, max_size=6), max_size=6))
def test_clear_never_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[list[str]]
) -> None:
    text = ("bidder,side,quantity_kwh,price_ct_per_kwh,supplier\n"
            + "\n".join(",".join(r) for r in rows))
    status = main(["clear", str(write(tmp_path, "f.csv", text)), "--price-floor", "4",
                   "--price-ceiling", "20", "--json"])
    captured = capsys.readouterr()
    assert status in (0, 1)
    if status == 0:
        json.loads(captured.out)
    else:
        assert captured.err.startswith("sealgrid: error: ")


AGENTS = """agent,generation,load,battery,k,epsilon
a,0.3,0.1,0,100,0.9
d,0.2,0.1,0,100,0.9
b,0,2,0,20,0.9
c,0.5,3,-0.5,40,0.8
"""


def test_pem_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "pem", str(write(tmp_path, "a.csv", AGENTS)), "--retail", "120",
                   "--feed-in", "80", "--price-range", "90", "110")
    assert set(doc) == {"units", "market", "price", "price_ct_per_kwh", "trades", "sellers"}
    assert doc["market"] == "general" and 90 < doc["price"] < 110
    assert float(doc["price_ct_per_kwh"]) == pytest.approx(doc["price"], rel=1e-12)
    assert {t["seller"] for t in doc["trades"]} == {"a", "d"}
    assert set(doc["trades"][0]) == {"seller", "buyer", "energy", "payment"}
    assert set(doc["sellers"][0]) == {"agent", "net", "optimal_load"}
    for t in doc["trades"]:
        assert t["payment"] == pytest.approx(t["energy"] * doc["price"])


def test_pem_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = AGENTS + "e,1,1,0,0,0.5\nf,1,1,0,20,1.5\na,1,0,0,20,0.5\n"
    assert main(["pem", str(write(tmp_path, "a.csv", bad)), "--retail", "120", "--feed-in",
                 "80", "--price-range", "90", "110"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "line 6: k" in err[0] and "line 7: epsilon" in err[1]
    assert "line 8: agent a appears twice" in err[2]
    assert main(["pem", str(write(tmp_path, "a.csv", AGENTS)), "--retail", "120", "--feed-in",
                 "80", "--price-range", "110", "90"]) == 1
    assert "Eq. 3" in capsys.readouterr().err


def test_settle_paper_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meters = write(tmp_path, "m.csv", "bidder,supplier,import_kwh,export_kwh\nU1,S,0,2\nU2,S,4,0\n")
    tariffs = write(tmp_path, "t.csv", "supplier,retail,feed_in,network_fee\nS,0.2,0.04,0.03\n")
    trades = write(tmp_path, "x.csv", "bidder,side,traded_kwh\nU1,sell,2\nU2,buy,2\n")
    doc = run_json(capsys, "settle", "--meters", str(meters), "--tariffs", str(tariffs),
                   "--trades", str(trades), "--price", "0.11")
    old = ("with_market", "without_market", "difference")

    def older(d: dict) -> dict:  # the older fields, in currency units
        return {k: v for k, v in d.items() if not k.endswith("_ct")}

    assert [older(d) for d in doc["households"]] == [
        {"bidder": "U1", "with_market": 0.16, "without_market": 0.08, "difference": 0.08},
        {"bidder": "U2", "with_market": -0.62, "without_market": -0.8, "difference": 0.18},
    ]
    assert [[d[f"{k}_ct"] for k in old] for d in doc["households"]] == [
        ["16", "8", "8"], ["-62", "-80", "18"]]
    assert [older(d) for d in doc["suppliers"]] == [
        {"supplier": "S", "with_market": 0.28, "without_market": 0.54, "difference": -0.26}]
    assert older(doc["grid_operator"]) == {"with_market": 0.18, "without_market": 0.18,
                                           "difference": 0.0}
    assert [doc["grid_operator"][f"{k}_ct"] for k in old] == ["18", "18", "0"]


def test_settle_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meters = write(tmp_path, "m.csv", "bidder,supplier,import_kwh,export_kwh\nU1,S,x,2\nU2,Q,4,0\n")
    tariffs = write(tmp_path, "t.csv", "supplier,retail,feed_in,network_fee\nS,0.2,0.04,0.03\n")
    assert main(["settle", "--meters", str(meters), "--tariffs", str(tariffs)]) == 1
    assert "m.csv line 2: malformed: import_kwh" in capsys.readouterr().err
    meters.write_text("bidder,supplier,import_kwh,export_kwh\nU2,Q,4,0\n")
    assert main(["settle", "--meters", str(meters), "--tariffs", str(tariffs)]) == 1
    assert "supplier 'Q' has no tariff" in capsys.readouterr().err
    assert main(["settle", "--meters", str(meters), "--tariffs", str(tariffs),
                 "--price", "0.1"]) == 1
    assert "go together" in capsys.readouterr().err


def test_bench_clearing_plaintext_prints_one_json_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sealgrid", "bench", "clearing", "--plaintext", "--bids", "5000",
         "--json"], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["bids"] == 5000 and doc["plaintext_seconds"] > 0


# --- whole messages and exact figures (pinned) -------------------------------------------------

def test_clear_refusals_whole_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("bidder,side,quantity_kwh,price_ct_per_kwh,supplier\n"
            "h1,buy,2,15.05,A\n"
            "h2,hold,12,5,A\n"
            "h1,sell,1,30,\n")
    assert main(["clear", str(write(tmp_path, "b.csv", text)), "--price-floor", "4",
                 "--price-ceiling", "20", "--max-quantity", "7.5"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "sealgrid: error: b.csv line 2: price_off_grid: price is not on the price grid "
        "(the floor plus whole ticks) (tick 0.1)",
        "sealgrid: error: b.csv line 3: unknown_side: side must be 'buy' or 'sell'",
        "sealgrid: error: b.csv line 3: quantity_too_large: quantity is above the market's "
        "per-bid maximum (maximum 7.5 kWh)",
        "sealgrid: error: b.csv line 4: price_above_ceiling: price is above the market's "
        "ceiling price (ceiling 20)",
        "sealgrid: error: b.csv line 4: unknown_supplier: supplier is not one of the market's "
        "registered suppliers (the supplier field is empty)",
        "sealgrid: error: b.csv line 4: duplicate_pseudonym: this pseudonym already has a bid "
        "in the period; use a fresh one (bidder h1)",
    ]


def test_clear_json_exact_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # ¢/kWh: buyers 3 kWh at 15 (A) and 1 kWh at 6 (B, refused); sellers 2 kWh at 5 (A) and
    # 2.5 kWh at 12 (B). D = 3 on levels 21..110 (6.1..15.0), S = 2 on 10..79, 4.5 from
    # 80: V = 3 on 80..110 with |D − S| = 1.5: the middle is 95, price 13.5. Sellers are
    # rationed 3 / 4.5: 4/3 and 5/3 kWh.
    text = ("bidder,side,quantity_kwh,price_ct_per_kwh,supplier\n"
            "b1,buy,3,15,A\n"
            "b2,buy,1,6,B\n"
            "s1,sell,2,5,A\n"
            "s2,sell,2.5,12,B\n")
    doc = run_json(capsys, "clear", str(write(tmp_path, "b.csv", text)), "--price-floor", "4",
                   "--price-ceiling", "20")
    assert doc["status"] == "cleared" and doc["price_ct_per_kwh"] == "13.5"
    assert doc["price"] == 0.135 and doc["volume_kwh"] == 3.0
    assert [(a["bidder"], a["accepted"]) for a in doc["allocations"]] == [
        ("b1", True), ("b2", False), ("s1", True), ("s2", True)]
    assert [a["traded_kwh"] for a in doc["allocations"]] == pytest.approx(
        [3.0, 0.0, 4 / 3, 5 / 3], rel=1e-12)
    assert doc["suppliers"] == [
        {"supplier": "A", "bought_kwh": 3.0, "sold_kwh": pytest.approx(4 / 3, rel=1e-12)},
        {"supplier": "B", "bought_kwh": 0.0, "sold_kwh": pytest.approx(5 / 3, rel=1e-12)},
    ]


def test_settle_deviations_and_own_flows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # r = 0.2, e = 0.04, f = 0.03, p* = 0.11. U1 sold 2, exported 4.5 and imported 0.75:
    # 0.16 + 0.04 · 2.5 − 0.2 · 0.75 = 0.11; without 0.18 − 0.15 = 0.03.
    # U2 bought 2, imported 0.5 and exported 1: −0.22 + 0.04 · 1.5 + 0.04 = −0.12;
    # without 0.04 − 0.1 = −0.06.
    meters = write(tmp_path, "m.csv",
                   "bidder,supplier,import_kwh,export_kwh\nU1,S,0.75,4.5\nU2,S,0.5,1\n")
    tariffs = write(tmp_path, "t.csv", "supplier,retail,feed_in,network_fee\nS,0.2,0.04,0.03\n")
    trades = write(tmp_path, "x.csv", "bidder,side,traded_kwh\nU1,sell,2\nU2,buy,2\n")
    doc = run_json(capsys, "settle", "--meters", str(meters), "--tariffs", str(tariffs),
                   "--trades", str(trades), "--price", "0.11")
    for d in [*doc["households"], *doc["suppliers"], doc["grid_operator"]]:
        for k in ("with_market_ct", "without_market_ct", "difference_ct"):
            d.pop(k)
    assert doc["households"] == [
        {"bidder": "U1", "with_market": pytest.approx(0.11), "without_market":
         pytest.approx(0.03), "difference": pytest.approx(0.08)},
        {"bidder": "U2", "with_market": pytest.approx(-0.12), "without_market":
         pytest.approx(-0.06), "difference": pytest.approx(-0.06)},
    ]
    # fees 0.03 · (5.25 + 1.5) = 0.2025 either way. S with the market: from U1 −0.11 − 0.1575
    # + 0.22 (U1's sale), from U2 +0.12 − 0.045 − 0.22 (U2's purchase): −0.1925;
    # without: −0.03 − 0.1575 + 0.06 − 0.045 = −0.1725
    assert doc["grid_operator"] == {"with_market": pytest.approx(0.2025),
                                    "without_market": pytest.approx(0.2025), "difference": 0.0}
    assert doc["suppliers"] == [{"supplier": "S", "with_market": pytest.approx(-0.1925),
                                 "without_market": pytest.approx(-0.1725),
                                 "difference": pytest.approx(-0.02)}]


def test_pem_no_sellers_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "agent,generation,load,battery,k,epsilon\nb1,0,2,0,20,0.9\nb2,1,2,0,20,0.9\n"
    doc = run_json(capsys, "pem", str(write(tmp_path, "a.csv", text)), "--retail", "120",
                   "--feed-in", "80", "--price-range", "90", "110")
    assert doc == {"units": {"price": "ct/kWh", "money": "ct", "energy": "kWh"},
                   "market": "no_sellers", "price": 120.0, "price_ct_per_kwh": "120",
                   "trades": [], "sellers": []}


def test_pem_refusals_whole_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("agent,generation,load,battery,k,epsilon\n"
            "a,1,1,0,0,0.5\n"
            "b,1,x,0,20,0.5\n"
            ",1,1,0,20,0.5\n")
    assert main(["pem", str(write(tmp_path, "a.csv", text)), "--retail", "120", "--feed-in",
                 "80", "--price-range", "90", "110"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "sealgrid: error: a.csv line 2: k (load preference) must be positive",
        "sealgrid: error: a.csv line 3: load is not a number",
        "sealgrid: error: a.csv line 4: agent name is empty",
    ]
    assert main(["pem", str(write(tmp_path, "g.csv", AGENTS)), "--retail", "120",
                 "--feed-in", "80.0000001", "--price-range", "90", "110"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "sealgrid: error: invalid market prices: feed-in has more than 6 decimals"]


def test_clear_minimum_participation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """BIDS has one buyer and two sellers: the papers' rule trades it, two a side does not."""
    path = str(write(tmp_path, "b.csv", BIDS))
    grid = ("--price-floor", "4", "--price-ceiling", "20", "--price-tick", "0.1")
    assert run_json(capsys, "clear", path, *grid, "--min-per-side", "1")["status"] == "cleared"
    doc = run_json(capsys, "clear", path, *grid, "--min-per-side", "2")
    assert (doc["status"], doc["price"], doc["volume_kwh"]) == ("no_trade", None, 0.0)
    assert all(not a["accepted"] and a["traded_kwh"] == 0 for a in doc["allocations"])
    more = BIDS + "h4,buy,1,12,B\n"  # two buyers at ≥ 0.12 meet two sellers at ≤ 0.10
    doc = run_json(capsys, "clear", str(write(tmp_path, "c.csv", more)), *grid,
                   "--min-per-side", "2")
    assert doc["status"] == "cleared" and 10 <= float(doc["price_ct_per_kwh"]) <= 12
    assert main(["clear", path, *grid, "--min-per-side", "0"]) == 1
    assert "--min-per-side must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_clear_minimum_participation_under_mpc(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, "b.csv", BIDS + "h4,buy,1,12,B\n"))
    grid = ("--price-floor", "4", "--price-ceiling", "20", "--price-tick", "0.1")
    for n in ("2", "3"):
        plain = run_json(capsys, "clear", path, *grid, "--min-per-side", n)
        secure = run_json(capsys, "clear", path, *grid, "--min-per-side", n, "--secure")
        assert secure == plain
    assert plain["status"] == "no_trade"


def test_pem_refuses_a_key_too_small_for_the_noisy_ratios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = Path(__file__).resolve().parents[2]
    argv = ["pem", str(root / "examples" / "agents.csv"), "--retail", "120", "--feed-in", "80",
            "--price-range", "90", "110", "--secure", "--key-bits", "256"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("sealgrid: error: --key-bits: key size must be one of (512, 1024, 2048)")
    assert "Traceback" not in err
