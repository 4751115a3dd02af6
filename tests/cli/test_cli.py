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

BIDS = """bidder,side,quantity_kwh,price,supplier
h1,buy,2,0.15,A
h2,sell,1,0.05,A
h3,sell,2,0.10,B
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
                   "--floor", "0.04", "--ceiling", "0.20", "--tick", "0.001")
    assert set(doc) == {"status", "price", "volume_kwh", "allocations", "suppliers"}
    assert doc["status"] == "cleared" and doc["price"] == 0.125 and doc["volume_kwh"] == 2.0
    assert doc["allocations"][0] == {"bidder": "h1", "side": "buy", "accepted": True,
                                     "traded_kwh": 2.0}
    assert doc["allocations"][1]["traded_kwh"] == pytest.approx(2 / 3)
    assert doc["suppliers"] == [
        {"supplier": "A", "bought_kwh": 2.0, "sold_kwh": pytest.approx(2 / 3)},
        {"supplier": "B", "bought_kwh": 0.0, "sold_kwh": pytest.approx(4 / 3)},
    ]


def test_clear_no_trade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "bidder,side,quantity_kwh,price,supplier\nh1,buy,2,0.05,A\nh2,sell,1,0.15,A\n"
    doc = run_json(capsys, "clear", str(write(tmp_path, "b.csv", text)),
                   "--floor", "0.04", "--ceiling", "0.20")
    assert doc["status"] == "no_trade" and doc["price"] is None and doc["volume_kwh"] == 0
    assert not any(a["accepted"] for a in doc["allocations"])


def test_clear_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clear", str(write(tmp_path, "b.csv", BIDS)), "--floor", "0.04",
                 "--ceiling", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "Clearing price: 0.125" in out and "h3" in out and "1.3333" in out


def test_clear_invalid_rows_one_line_per_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = ("bidder,side,quantity_kwh,price,supplier\n"
            "h1,buy,2,0.1505,A\n"
            "h2,hold,-1,0.05,A\n"
            "h1,sell,1,0.3,B\n")
    assert main(["clear", str(write(tmp_path, "b.csv", text)), "--floor", "0.04",
                 "--ceiling", "0.2"]) == 1
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
    text = BIDS + "h4,buy,1,0.1234,A\n"
    doc = run_json(capsys, "clear", str(write(tmp_path, "b.csv", text)), "--floor", "0.04",
                   "--ceiling", "0.2", "--skip-invalid")
    assert [a["bidder"] for a in doc["allocations"]] == ["h1", "h2", "h3"]
    assert len(doc["rejected"]) == 1 and "line 5: price_off_grid" in doc["rejected"][0]


def test_clear_registered_suppliers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, "b.csv", BIDS))
    assert main(["clear", path, "--floor", "0.04", "--ceiling", "0.2", "--suppliers", "A"]) == 1
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
    assert main(["clear", str(path), "--floor", "0.04", "--ceiling", "0.2"]) == 1
    assert message in capsys.readouterr().err


def test_clear_bad_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, "b.csv", BIDS))
    assert main(["clear", path, "--floor", "0.2", "--ceiling", "0.04"]) == 1
    assert "invalid market settings" in capsys.readouterr().err


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.text(alphabet="abuyselc0123456789.,-\"' ", max_size=8),
                         min_size=0, max_size=6), max_size=6))
def test_clear_never_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[list[str]]
) -> None:
    text = "bidder,side,quantity_kwh,price,supplier\n" + "\n".join(",".join(r) for r in rows)
    status = main(["clear", str(write(tmp_path, "f.csv", text)), "--floor", "0.04",
                   "--ceiling", "0.2", "--json"])
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
    assert set(doc) == {"market", "price", "trades", "sellers"}
    assert doc["market"] == "general" and 90 < doc["price"] < 110
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
    assert doc["households"] == [
        {"bidder": "U1", "with_market": 0.16, "without_market": 0.08, "difference": 0.08},
        {"bidder": "U2", "with_market": -0.62, "without_market": -0.8, "difference": 0.18},
    ]
    assert doc["suppliers"] == [{"supplier": "S", "with_market": 0.28, "without_market": 0.54,
                                 "difference": -0.26}]
    assert doc["grid_operator"] == {"with_market": 0.18, "without_market": 0.18,
                                    "difference": 0.0}


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
