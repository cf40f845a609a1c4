"""The Soak test tab without an engine: reopen a saved run, overlay a second one, export the
charts; refusals are shown. The runs in tests/data/soak_runs were saved by `vrampilot soak` on
the real demo model and the fast-thermal simulated RTX 4090 Laptop."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import qasync
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from core.soak.report import load_run
from core.soak.series import read_csv
from gui import soak_png
from gui.soak_panel import SoakPanel, runner_factory
from gui.soak_view import CHARTS
from tests.gui.conftest import wait_until

RUNS = Path(__file__).resolve().parent.parent / "data" / "soak_runs"


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = sorted(RUNS.iterdir())
    return (Path(shutil.copytree(a, tmp_path / a.name)),
            Path(shutil.copytree(b, tmp_path / b.name)))


def panel(qtbot: QtBot, runtime: Runtime | None = None) -> SoakPanel:
    if runtime is None:
        p = SoakPanel(lambda s: pytest.fail("no run in this test"), list, lambda: None)
    else:
        p = SoakPanel(runner_factory(runtime), runtime.chat.model_choices,
                      lambda: runtime.manager.active_model)
    qtbot.addWidget(p)
    p.resize(1200, 900)
    p.show()
    return p


def test_reopen_shows_the_saved_samples_and_report(qtbot: QtBot,
                                                   runs: tuple[Path, Path]) -> None:
    p = panel(qtbot)
    run = p.open_run(runs[0])
    samples = read_csv(runs[0] / "samples.csv")
    x, y = p.charts.curve_data(0, "temperature_c")
    assert np.array_equal(x, samples.t_s)
    assert np.array_equal(y, samples.temperature_c)
    x, y = p.charts.curve_data(0, "power_w")
    assert np.array_equal(y, samples.power_w)
    # Throttled stretches are shaded on every chart, starting at the report's first throttle.
    spans = samples.throttled_spans()
    assert spans
    assert len(p.charts.regions) == len(spans) * len(CHARTS)
    assert spans[0][0] == pytest.approx(run.report["first_throttle"]["after_s"], abs=1e-3)
    text = p.summary.toPlainText()
    assert f"after {run.report['first_throttle']['after_s']:.1f} s (SwThermal" in text
    assert "J/token" in text
    assert p.overlay_button.isEnabled()


def test_overlay_draws_both_runs_on_one_time_axis(qtbot: QtBot, runs: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    p = panel(qtbot)
    p.open_run(runs[0])
    p.overlay_run(runs[1])
    first, second = read_csv(runs[0] / "samples.csv"), read_csv(runs[1] / "samples.csv")
    assert np.array_equal(p.charts.curve_data(0, "temperature_c")[1], first.temperature_c)
    assert np.array_equal(p.charts.curve_data(1, "temperature_c")[1], second.temperature_c)
    assert np.array_equal(p.charts.curve_data(1, "sm_clock_mhz")[1], second.sm_clock_mhz)
    assert p.charts.labels == [load_run(runs[0]).label, load_run(runs[1]).label]
    reports = p.summary.toPlainText()
    assert reports.count("Soak of demo-tiny-a") == 2
    assert "concurrency 2" in reports
    assert "concurrency 4" in reports
    png = p.charts.export_png(tmp_path / "overlay.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_that_is_not_a_run_is_refused_by_name(qtbot: QtBot, tmp_path: Path) -> None:
    p = panel(qtbot)
    with pytest.raises(ValueError, match=r"report\.json"):
        p.open_run(tmp_path)
    with pytest.raises(ValueError, match="open a run first"):
        p.overlay_run(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "report.json").write_text('{"version": 1}')
    (bad / "samples.csv").write_text("t,x\n1,2\n")
    with pytest.raises(ValueError, match="not a vrampilot soak CSV"):
        p.open_run(bad)


def test_png_for_the_cli_is_drawn_from_a_saved_run(qtbot: QtBot, runs: tuple[Path, Path]) -> None:
    assert soak_png.main([str(runs[0])]) == 0
    assert (runs[0] / "charts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_start_without_a_model_says_so(qtbot: QtBot, runtime: Runtime,
                                       loop: qasync.QEventLoop) -> None:
    p = panel(qtbot, runtime)  # no demo models built in this data dir: nothing to pick
    assert p.model_box.count() == 0

    async def body() -> None:
        p.start()
        await wait_until(lambda: not p.running, 10, "the refused soak")

    loop.run_until_complete(body())
    assert "no model is active" in p.status.text()
    assert p.start_button.isEnabled()
    assert not p.stop_button.isEnabled()


def test_the_charts_are_built_when_first_shown(qtbot: QtBot) -> None:
    """Not at construction (the tab is not on screen at launch): at the first show, visible."""
    p = SoakPanel(lambda s: pytest.fail("no run in this test"), list, lambda: None)
    qtbot.addWidget(p)
    assert p.charts.graphics is None
    assert not p.charts.plots
    p.resize(1200, 900)
    p.show()
    graphics = p.charts.graphics
    assert graphics is not None
    assert list(p.charts.plots) == [c.title for c in CHARTS]
    qtbot.waitUntil(graphics.isVisible, timeout=2000)
    assert graphics.width() > 500
