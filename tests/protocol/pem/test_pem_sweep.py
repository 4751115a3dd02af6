"""``sealgrid bench pem --sweep``: paper Fig. 5 as a sweep — its points, sweep.json, the three
plots, the printed line (every field of ``bench pem --json`` kept) and the paper's numbers,
which must be the paper's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealgrid.cli import main
from sealgrid.mechanism.pem import PemInputError
from sealgrid.protocol.pem.sweep import PAPER, Point, points

pytestmark = pytest.mark.timeout(120)

#: The fields ``sealgrid bench pem --json`` printed before sessions and sweeps (the contract).
BENCH_FIELDS = {
    "agents", "key_bits", "windows", "seconds_per_window", "online_seconds_per_window",
    "bytes_per_agent_per_window", "matches_plaintext", "offline_seconds_per_window",
    "offline_cpu_seconds_per_window", "setup_seconds", "max_bytes_per_agent_per_window",
    "total_bytes_per_window", "messages_per_window", "markets", "processes", "pool_misses",
    "randomizers_used_per_window", "dgk_randomizers_used_per_window",
}
ROW_FIELDS = {"agents", "key_bits", "windows", "offline_seconds", "online_seconds_per_window",
              "total_seconds_per_window", "bytes_per_agent_per_window", "matches_plaintext"}
PAPER_TEXT = Path(__file__).resolve().parents[4] / "shared" / "papers" / (
    "xie2020-private-energy-market-pem.md")


def test_a_tiny_sweep_writes_its_rows_and_three_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fig5"
    status = main(["bench", "pem", "--sweep", "agents=4,6", "key-bits=512", "windows=1,2",
                   "--base", "agents=4,key-bits=512,windows=1", "--processes", "1",
                   "--out", str(out), "--json"])
    printed = capsys.readouterr().out.splitlines()
    assert status == 0 and len(printed) == 1
    line = json.loads(printed[0])
    assert set(line) >= BENCH_FIELDS
    assert (line["agents"], line["key_bits"], line["windows"]) == (4, 512, 1)  # the base point
    assert line["sweep"]["points"] == 3 and line["sweep"]["all_match_plaintext"] is True

    doc = json.loads((out / "sweep.json").read_text())
    rows = doc["rows"]
    assert [(r["agents"], r["key_bits"], r["windows"]) for r in rows] == [
        (4, 512, 1), (6, 512, 1), (4, 512, 2)]
    assert [r["axes"] for r in rows] == [["agents", "key_bits", "windows"], ["agents"],
                                         ["windows"]]
    for row in rows:
        assert set(row) >= ROW_FIELDS
        assert row["matches_plaintext"] is True
        assert 0 < row["online_seconds_per_window"] <= row["total_seconds_per_window"]
        assert row["offline_seconds"] > 0 and row["bytes_per_agent_per_window"] > 0
        total = (row["offline_seconds"] + row["online_seconds_per_window"] * row["windows"]) / (
            row["windows"])
        assert row["total_seconds_per_window"] == pytest.approx(total, abs=2e-3)
    assert line["online_seconds_per_window"] == rows[0]["online_seconds_per_window"]
    assert doc["paper"]["seconds_per_window"] == 1.0 and doc["units"]["key_bits"] == "bits"
    for name in ("time_vs_windows.png", "time_vs_key_bits.png", "time_vs_agents.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert line["sweep"]["files"][name[8:-4]] == str(out / name)


def test_points_vary_one_axis_at_a_time_around_the_base() -> None:
    base = Point(300, 2048, 1)
    found = points(base, {"agents": (50, 300), "key_bits": (512, 1024, 2048),
                          "windows": (1, 4)})
    assert found == [
        (base, ("agents", "key_bits", "windows")),
        (Point(50, 2048, 1), ("agents",)),
        (Point(300, 512, 1), ("key_bits",)),
        (Point(300, 1024, 1), ("key_bits",)),
        (Point(300, 2048, 4), ("windows",)),
    ]
    assert points(Point(10, 512, 2), {"agents": (20,)}) == [
        (Point(10, 512, 2), ()), (Point(20, 512, 2), ("agents",))]
    with pytest.raises(PemInputError, match="sweep axis"):
        points(base, {"processes": (1, 2)})
    with pytest.raises(PemInputError, match="key size"):
        Point(10, 768, 1)


@pytest.mark.parametrize(("argv", "status", "says"), [
    (["--sweep", "agents=4,6"], 1, "--sweep and --out go together"),
    (["--base", "agents=4", "--agents", "4"], 1, "--base is the base point of a --sweep"),
    (["--sweep", "homes=4,6", "--out", "{tmp}"], 2, "not an axis"),
    (["--sweep", "key-bits=768", "--out", "{tmp}"], 2, "key-bits must be one of"),
    (["--sweep", "agents=1", "--out", "{tmp}"], 2, "agents must be at least 2"),
    (["--sweep", "agents", "--out", "{tmp}"], 2, "is not AXIS=V1,V2"),
    (["--sweep", "agents=4", "--base", "windows:2", "--out", "{tmp}"], 2, "is not AXIS=VALUE"),
    (["--sweep", "agents=4", "--out", "{tmp}/file"], 1, "is not a directory"),
])
def test_sweep_refusals_name_the_rule(argv: list[str], status: int, says: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        got: object = main(["bench", "pem", "--key-bits", "512", *args])
    except SystemExit as exc:
        got = exc.code
    assert got == status
    assert says in capsys.readouterr().err


def test_the_paper_numbers_are_the_papers_own() -> None:
    if not PAPER_TEXT.exists():
        pytest.skip(f"the paper's text is not at {PAPER_TEXT}")
    text = PAPER_TEXT.read_text(encoding="utf-8")
    quoted = PAPER["seconds_per_window_cited"].split("'")[1]  # the sentence cited
    assert quoted.endswith("around 1 sec") and quoted in text
    assert PAPER["seconds_per_window"] == 1.0  # "around 1 sec", the only number given
    table = PAPER["table_1"]
    assert "m\t" + "\t".join(str(m) for m in table["m"]) in text
    for bits in ("512", "1024", "2048"):
        assert f"{bits}-bit\t" + "\t".join(f"{v:.2f}" for v in table[bits]) in text
    assert "does not affect the runtime" in text and "increases as the number of agents" in text
