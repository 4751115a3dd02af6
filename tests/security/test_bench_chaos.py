"""``sealgrid bench chaos``: one JSON line of figures; assumes only this process (fast parts)."""

from __future__ import annotations

import json

import pytest

from sealgrid.cli import main
from sealgrid.service import wire


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["bench", "chaos", *args, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out: dict[str, object] = json.loads(lines[0])
    return out


def test_fast_parts_print_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--only", "fuzz,curious", "--fuzz-rounds", "40", "--curious-runs", "20")
    assert out["target"] == "chaos"
    fuzz = out["fuzz"]
    # per round: every wire message type, two share messages, two intake events
    assert isinstance(fuzz, dict) and fuzz["cases"] == 40 * (len(wire.MESSAGE_TYPES) + 4)
    assert fuzz["by_target"]["wire"] == 40 * len(wire.MESSAGE_TYPES)
    assert fuzz["escapes"] == 0 and fuzz["escape_kinds"] == {}
    assert "same_bid_respelled" not in fuzz["by_target"]  # one byte form per signed bid
    curious = out["curious"]
    assert isinstance(curious, dict) and curious["same_public_outputs"] is True
    assert abs(curious["chi_square_z"]) < 4


def test_the_bench_fuzzer_finds_no_escape(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "--only", "fuzz", "--fuzz-rounds", "400")
    assert out["fuzz"]["escapes"] == 0  # type: ignore[index]


def test_an_unknown_part_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "chaos", "--only", "nonsense", "--json"]) == 1
    assert "unknown part" in capsys.readouterr().err


def test_without_a_source_checkout_it_says_so(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from sealgrid.cli import bench_chaos

    monkeypatch.setattr(bench_chaos, "checkout", lambda: None)
    assert main(["bench", "chaos", "--only", "fuzz", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a source checkout" in err[0]


def test_the_command_and_the_harness_name_the_same_parts() -> None:
    from sealgrid.cli import bench_chaos
    from tests.chaos import bench

    assert bench_chaos.PARTS == bench.PARTS
    assert bench_chaos.checkout() is not None
