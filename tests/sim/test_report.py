"""The report: its title from the span, the caveat of a partial run, coinciding curves told
apart, a unit on every axis, and every figure loading in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sealgrid.cli import main
from sealgrid.sim import dataset, plots, report
from sealgrid.sim.agents import MarketParams
from sealgrid.sim.run import runs_for, simulate

CHROMIUM = "/usr/bin/chromium"
FIGURES = ("price", "coalitions", "utility", "buyers_cost", "grid_exchange", "supply_demand",
           "gains")


@pytest.mark.parametrize(("minutes", "words"), [
    (1, "A minute"), (3, "3 minutes"), (60, "An hour"), (90, "1 hour, 30 minutes"),
    (720, "12 hours"), (1440, "A day"), (2 * 1440 + 360, "2 days, 6 hours"),
    (7 * 1440, "A week"),
])
def test_span_in_words(minutes, words):
    assert report.span_text(minutes) == words


def _dataset(**changes):
    d = {"source": "day", "name": "day", "homes": 300, "windows": 720, "window_minutes": 1}
    return {**d, **changes}


def test_caveat_only_when_the_run_is_partial_or_other_data():
    assert report.paper_caveat(_dataset()) is None
    homes = report.paper_caveat(_dataset(homes=12))
    assert homes is not None and "12 of 300 homes" in homes and "720 windows" not in homes
    windows = report.paper_caveat(_dataset(windows=60))
    assert windows is not None and "60 of 720 windows" in windows
    week = report.paper_caveat(_dataset(source="week", name="week", windows=672,
                                        window_minutes=15))
    assert week is not None and "the data is week" in week


def test_coinciding_runs_are_found_nan_equal_and_only_when_equal_everywhere():
    a = np.array([90.0, np.nan, 90.0])
    groups = plots.coinciding({"da": [85.0, np.nan, 88.0], "k20": a, "k40": a.copy(),
                               "k60": np.array([90.0, np.nan, 90.5])})
    assert groups == [["k20", "k40"]]
    assert plots.coinciding({"x": [1.0], "y": [2.0]}) == []


def test_coinciding_curves_get_their_own_style_and_a_legend_note():
    fig, ax = plt.subplots()
    x = pd.date_range("2021-09-20 16:00", periods=4, freq="min", tz="UTC")
    same = np.array([90.0, 90.0, 90.0, 120.0])
    plots.draw_runs(ax, {"double-auction": (x, np.array([85.0, 86.0, 87.0, np.nan])),
                         "pem-k20": (x, same), "pem-k40": (x, same.copy())})
    legend = ax.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[2] == "PEM, k = 40 (same as PEM, k = 20 throughout)"
    assert "same as" not in labels[0] + labels[1]
    assert legend.get_title().get_text().startswith("coinciding curves")
    k20, k40 = ax.get_lines()[1:]
    assert (k20.get_linestyle(), k20.get_marker()) != (k40.get_linestyle(), k40.get_marker())
    assert k20.get_linewidth() > k40.get_linewidth()  # the one drawn on top is narrower
    plt.close(fig)


def test_every_axis_of_every_figure_names_its_unit(tmp_path, monkeypatch):
    labels: dict[str, list[tuple[str, str]]] = {}
    save = plots._save

    def keep(fig, path, dates=True):
        labels[path.stem] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
        return save(fig, path, dates)

    monkeypatch.setattr(plots, "_save", keep)
    data = dataset.load("day", homes=10, windows=4, start=330)
    params = MarketParams()
    result = simulate(data, params, runs_for("all", params))
    plots.all_figures(result.windows, result.utility, params, tmp_path, False,
                      households=result.households)
    assert sorted(labels) == sorted(FIGURES)
    unit = re.compile(r"\((¢|¢/kWh|kWh|count|UTC|[A-Za-z_]+/[A-Za-z_]+)\)|¢ per household"
                      r"|share of households")
    for name, axes in labels.items():
        for _, ylabel in axes:
            assert unit.search(ylabel), (name, ylabel)
        assert unit.search(axes[-1][0]), (name, axes[-1][0])


# -- the report in headless Chromium

#: Appended to a copy of report.html (the report itself has no script): after the page has
#: loaded, write each image's natural width into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  document.body.setAttribute('data-images', Array.from(document.images).map(
    (i) => i.getAttribute('src') + '=' + (i.complete ? i.naturalWidth : -1)).join(' '));
});
</script>"""


def _dump_dom(page: Path, profile: Path) -> str:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_in_headless_chromium_with_every_figure_and_the_span(tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    out = tmp_path / "hour"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["simulate", "--homes", "6", "--start-time", "2021-09-20T16:00:00Z",
                     "--windows", "60", "--quiet", "--out", str(out)]) == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text
    probe = out / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _dump_dom(probe, tmp_path / "profile")
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, dom[:2000]
    widths = dict(item.rsplit("=", 1) for item in found.group(1).split())
    assert sorted(widths) == sorted(f"{name}.png" for name in FIGURES)
    assert all(int(w) > 0 for w in widths.values()), widths
    title = re.search(r"<title>(.*?)</title>", dom)
    assert title and title.group(1).startswith("sealgrid simulation: An hour of a "
                                               "neighbourhood, 2021-09-20 12:00–13:00")
    assert "<h1>An hour of a neighbourhood" in dom
    assert "A partial run: 6 of 300 homes; 60 of 720 windows" in dom


def test_the_report_links_the_pem_sweep_and_renders_it_in_chromium(tmp_path, capsys):
    """Paper Fig. 5 from ``sealgrid bench pem --sweep`` linked from the simulation report
    (``simulate --pem-sweep DIR``): its points next to the paper's stated figures, its three
    plots loading in headless Chromium."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    sweep = tmp_path / "fig5"
    assert main(["bench", "pem", "--sweep", "agents=4,6", "key-bits=512", "windows=1",
                 "--base", "agents=4,key-bits=512,windows=1", "--processes", "1",
                 "--out", str(sweep), "--json"]) == 0
    out = tmp_path / "run"
    assert main(["simulate", "--mechanism", "pem", "--homes", "6", "--windows", "2",
                 "--start", "330", "--quiet", "--pem-sweep", str(sweep),
                 "--out", str(out)]) == 0
    capsys.readouterr()
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "PEM's runtime (paper Fig. 5)" in text and "around 1 sec" in text
    assert text.count("<tr><td>") >= 2  # a row per point of the sweep
    probe = out / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _dump_dom(probe, tmp_path / "profile")
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, dom[:2000]
    widths = dict(item.rsplit("=", 1) for item in found.group(1).split())
    for name in report.SWEEP_PLOTS:
        assert int(widths[f"pem_sweep/{name}"]) > 0, widths
    # a folder that is no sweep is refused before the run, naming what is missing
    assert main(["simulate", "--homes", "6", "--windows", "1", "--quiet", "--pem-sweep",
                 str(tmp_path), "--out", str(tmp_path / "no")]) == 1
    assert "not the output of 'sealgrid bench pem --sweep --out'" in capsys.readouterr().err
