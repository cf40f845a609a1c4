"""Each panel built from real core objects (simulated GPU, SQLite in a temp dir), driven as a
user would: clicks, waits on what is shown."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.history_store import HistoryStore
from core.runtime import Runtime
from core.telemetry.alerts import AlertEvent
from core.telemetry.history import TelemetryHistory
from gui.app import AppController
from gui.chart_data import ChartSpec, PeakBuckets
from gui.charts import ChartPanel
from gui.history_panel import HistoryPanel, pair_label
from gui.model_switcher import ModelSwitcherPanel
from tests.gui.conftest import wait_until

T = TypeVar("T")
TABS = ["Monitor", "Models", "Switch history", "Playground", "Soak test", "Events"]


@pytest.fixture
def controller(runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot
               ) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio_wait(c.finished.wait(), 20))


def asyncio_wait(aw: Awaitable[T], seconds: float) -> Coroutine[Any, Any, T]:
    return asyncio.wait_for(aw, seconds)


def test_main_window_starts_and_shows_its_panels(controller: AppController,
                                                 loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        controller.start(autoload=False)
        w = controller.window
        assert w.isVisible()
        assert [w.tabs.tabText(i) for i in range(w.tabs.count())] == TABS
        assert "simulated" in w.windowTitle()
        for i in range(w.tabs.count()):
            w.tabs.setCurrentIndex(i)
            assert w.tabs.currentWidget().isVisible()
        # The charts fill from the sampler thread, through the history, within a few ticks.
        await wait_until(lambda: len(controller.charts.curve_data("gpu0.vram_used_bytes")[0]) >= 2,
                         10, "VRAM curve data")
        w.close()
        await asyncio_wait(controller.finished.wait(), 10)
        assert not w.isVisible()

    loop.run_until_complete(body())


def test_chart_data_equals_the_history(controller: AppController, runtime: Runtime,
                                       loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        controller.start(autoload=False)
        await wait_until(lambda: len(runtime.history) >= 3, 10, "three samples")
        runtime.sampler.stop()  # freeze the history so the comparison is exact
        charts = controller.charts
        for seconds in (60.0, 3600.0):
            charts.set_window(seconds)
            for spec in (s for s in charts._specs if "power" in s.title or "VRAM" in s.title):
                for metric in spec.metrics:
                    t, v = runtime.history.window(metric, seconds)
                    x, y = charts.curve_data(metric)
                    np.testing.assert_array_equal(x, t)
                    np.testing.assert_allclose(y, v * spec.scale)
        controller.window.close()
        await asyncio_wait(controller.finished.wait(), 10)

    loop.run_until_complete(body())


def test_unsupported_metric_says_so_instead_of_zero(qtbot: QtBot) -> None:
    history = TelemetryHistory(100)
    t0 = time.time()
    for i in range(20):
        history.append_values(t0 + i, {"gpu0.power_w": math.nan, "gpu0.temperature_c": 50.0 + i})
    panel = ChartPanel(history, [ChartSpec("power", "W", ("gpu0.power_w",)),
                                        ChartSpec("temperature", "°C", ("gpu0.temperature_c",))])
    qtbot.addWidget(panel)
    panel.redraw()
    assert panel.missing_labels["power"].isVisible()
    assert panel.missing_labels["power"].toPlainText() == "not reported by this GPU"
    assert len(panel.curve_data("gpu0.power_w")[0]) == 0
    assert not panel.missing_labels["temperature"].isVisible()
    np.testing.assert_array_equal(panel.curve_data("gpu0.temperature_c")[1],
                                  history.window("gpu0.temperature_c", 300)[1])
    text = panel.show_crosshair(t0 + 5.2)
    assert "temperature_c 55.0 °C" in text


def test_export_png_and_csv(qtbot: QtBot, tmp_path: Path) -> None:
    history = TelemetryHistory(100)
    for i in range(10):
        history.append_values(1000.0 + i, {"host.cpu_percent": float(i)})
    panel = ChartPanel(history, [ChartSpec("cpu", "%", ("host.cpu_percent",))],
                       export_csv=history.export_csv)
    qtbot.addWidget(panel)
    panel.resize(600, 300)
    panel.redraw()
    png = panel.export_png(tmp_path / "view.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panel._export_csv(tmp_path / "data.csv")
    back = TelemetryHistory.from_csv(tmp_path / "data.csv")
    np.testing.assert_array_equal(back.window("host.cpu_percent")[1], np.arange(10.0))


def _alert(kind: str, metric: str, level: str, change: str, value: float, threshold: float,
           started: float, at: float) -> AlertEvent:
    return AlertEvent(kind=kind, metric=metric, level=level, change=change,  # type: ignore[arg-type]
                      value=value, threshold=threshold, started_at=started,
                      ended_at=at if change == "ended" else None, at=at)


def test_alert_from_the_sampler_thread_appears_in_log_and_chart(
        controller: AppController, runtime: Runtime, loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        controller.start(autoload=False)
        await wait_until(lambda: len(runtime.history) >= 2, 10, "samples")
        now = time.time()
        start = _alert("temperature", "gpu0.temperature_c", "critical", "started", 91.0, 87.0,
                       now - 3, now)
        # Delivered the way the sampler does it: a callback on another thread.
        worker = threading.Thread(target=controller.bridge.on_sample, args=(None, [start]))
        worker.start()
        worker.join()
        log = controller.events.event_log
        await wait_until(lambda: "temperature critical" in log.toPlainText(), 5, "alert line")
        assert "91 °C" in log.toPlainText()
        assert "line 87 °C" in log.toPlainText()
        title = next(s.title for s in controller.charts._specs if "temperature" in s.title)
        await wait_until(lambda: controller.charts.region_spans(title), 5, "shaded period")
        (lo, hi), = controller.charts.region_spans(title)
        assert lo == pytest.approx(now - 3)
        vram_title = next(s.title for s in controller.charts._specs if "VRAM" in s.title)
        assert controller.charts.region_spans(vram_title) == []
        controller.bridge.on_sample(None, [_alert("temperature", "gpu0.temperature_c",
                                                  "critical", "ended", 80.0, 87.0, now - 3,
                                                  now + 1)])
        await wait_until(lambda: "alert ended" in log.toPlainText(), 5, "end line")
        controller.charts.redraw()
        (lo, hi), = controller.charts.region_spans(title)
        assert hi == pytest.approx(now + 1)
        # The policy switch reaches the alert reactor.
        controller.events.policy.setCurrentIndex(1)
        assert runtime.alert_policy == "advise"
        assert runtime.reactor.advise_only
        controller.window.close()
        await asyncio_wait(controller.finished.wait(), 10)

    loop.run_until_complete(body())


def test_refused_switch_shows_reason_and_offers_fallback(
        with_demo_models: Path, runtime: Runtime, qtbot: QtBot) -> None:
    panel = ModelSwitcherPanel(runtime.manager, runtime.history_store)
    qtbot.addWidget(panel)
    rows = {panel.table.item(r, 0).text(): r for r in range(panel.table.rowCount())}
    assert set(rows) == set(runtime.config.catalog.ids)
    fits = panel.table.item(rows["demo-tiny-a"], 2).text()
    assert fits.startswith("yes"), fits
    assert panel.table.item(rows["demo-tiny-a"], 3).text() == "yes"
    assert panel.table.item(rows["qwen3-8b"], 3).text() == "no"
    assert panel.table.item(rows["qwen3-30b-a3b-instruct-2507"], 2).text().startswith("no")

    panel.select_model("qwen3-30b-a3b-instruct-2507")
    qtbot.mouseClick(panel.switch_button, Qt.MouseButton.LeftButton)
    text = panel.refusal.text()
    assert "refused" in text
    assert "FAILED on_disk" in text
    assert "FAILED memory" in text
    assert "GiB usable, needs" in text  # the numbers behind the memory check
    assert "temperature" in text
    assert "°C, limit" in text
    assert panel.fallback_button.isVisibleTo(panel)
    assert panel.fallback_target in ("demo-small", "demo-tiny-a", "demo-tiny-b")
    assert panel.fallback_target in panel.fallback_button.text()
    assert runtime.manager.active_model is None  # nothing ran
    assert runtime.history_store.count() == 0


class ReadsOf:
    """The runtime's device, recording the thread of every read (the hardware seam)."""

    def __init__(self, device: Any) -> None:
        self._device = device
        self.threads: list[str] = []

    def sample(self) -> Any:
        self.threads.append(threading.current_thread().name)
        return self._device.sample()

    def close(self) -> None:
        self._device.close()


def test_the_models_tab_fits_every_row_against_the_latest_sample(
        with_demo_models: Path, runtime: Runtime, qtbot: QtBot) -> None:
    """No device read on the GUI thread per catalog row: the sampler's latest sample serves."""
    device = ReadsOf(runtime.sampler.devices[0])
    runtime.sampler.devices = (device,)
    runtime.sampler.sample_once()  # the sampler has read the device once
    panel = ModelSwitcherPanel(runtime.manager, runtime.history_store,
                               device=runtime.latest_reading)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.table.rowCount() > 5
    rows = {panel.table.item(r, 0).text(): r for r in range(panel.table.rowCount())}
    assert panel.table.item(rows["demo-tiny-a"], 2).text().startswith("yes")
    assert panel.table.item(rows["qwen3-30b-a3b-instruct-2507"], 2).text().startswith("no")
    assert len(device.threads) == 1  # sample_once's


def test_exception_in_a_handler_is_logged_and_buttons_come_back(
        with_demo_models: Path, controller: AppController, runtime: Runtime,
        loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    async def body() -> None:
        controller.start(autoload=False)
        await runtime.manager.close()  # switch_to now raises RuntimeError
        panel = controller.models
        panel.select_model("demo-tiny-b")
        qtbot.mouseClick(panel.switch_button, Qt.MouseButton.LeftButton)
        assert not panel.switch_button.isEnabled()  # busy while the task runs
        log = controller.events.event_log
        await wait_until(lambda: "switch to demo-tiny-b failed" in log.toPlainText(), 5,
                         "error line")
        assert "RuntimeError" in log.toPlainText()
        await wait_until(panel.switch_button.isEnabled, 5, "switch button restored")
        assert not panel.cancel_button.isEnabled()
        controller.window.close()
        await asyncio_wait(controller.finished.wait(), 10)

    loop.run_until_complete(body())


def test_history_table_and_pair_chart_show_the_store(tmp_path: Path, qtbot: QtBot) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        for total in (2.0, 4.0, 9.0):
            store.record_switch(from_model="demo-tiny-a", to_model="demo-tiny-b",
                                reason="manual", outcome="ready", total_s=total,
                                phases={"unloading": 0.5, "loading": total - 1.0})
        store.record_switch(from_model=None, to_model="demo-tiny-a", reason="manual",
                            outcome="ready", total_s=20.0, phases={"loading": 19.0})
        store.record_switch(from_model="demo-tiny-b", to_model="qwen3-8b", reason="manual",
                            outcome="refused", total_s=0.01, phases={"planning": 0.01},
                            error="refused: on_disk: qwen3-8b is not on disk")
        panel = HistoryPanel(store)
        qtbot.addWidget(panel)
        assert panel.table.rowCount() == 5
        header = [panel.table.horizontalHeaderItem(c).text()
                  for c in range(panel.table.columnCount())]
        newest = {h: panel.table.item(0, c).text() for c, h in enumerate(header)}
        assert newest["To"] == "qwen3-8b"
        assert newest["Outcome"] == "refused"
        assert "not on disk" in newest["Error"]
        assert panel.chart_data() == {
            pair_label(p): (p.mean_s, p.p95_s) for p in store.pair_stats()}
        assert panel.chart_data()["demo-tiny-a → demo-tiny-b"] == (5.0, 9.0)
        store.record_switch(from_model="demo-tiny-a", to_model="demo-tiny-b", reason="manual",
                            outcome="ready", total_s=1.0, phases={})
        panel.refresh()
        assert panel.table.rowCount() == 6
        assert panel.chart_data()["demo-tiny-a → demo-tiny-b"] == (4.0, 9.0)
    finally:
        store.close()


def test_history_charts_are_built_when_first_shown(tmp_path: Path, qtbot: QtBot) -> None:
    """Not at construction (the tab is not on screen at launch): the switch chart at the tab's
    first show, filled with what refresh() read; the tier chart with its page."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        store.record_switch(from_model="demo-tiny-a", to_model="demo-tiny-b", reason="manual",
                            outcome="ready", total_s=3.0, phases={})
        panel = HistoryPanel(store)
        qtbot.addWidget(panel)
        assert panel.plot_widget is None
        assert panel.routing.tier_plot_widget is None
        panel.resize(1200, 800)
        panel.show()
        assert panel.plot_widget is not None
        qtbot.waitUntil(panel.plot_widget.isVisible, timeout=2000)
        assert panel.mean_bars.opts["height"] == [3.0]
        assert not panel.empty_label.isVisible()
        assert panel.routing.tier_plot_widget is None  # its page is not shown yet
        panel.pages.setCurrentWidget(panel.routing)
        tiers = panel.routing.tier_plot_widget
        assert tiers is not None
        qtbot.waitUntil(tiers.isVisible, timeout=2000)
    finally:
        store.close()


def test_auto_with_no_usable_model_shows_the_router_explanation(
        controller: AppController, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    async def body() -> None:
        controller.start(autoload=False)
        pg = controller.playground
        assert pg.model.currentData() is None  # Auto
        qtbot.keyClicks(pg.prompt, "Extract the salary from this offer.")
        qtbot.mouseClick(pg.send_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: pg.send_button.isEnabled(), 10, "send restored")
        assert "Chosen model" in pg.explanation.toPlainText()
        assert "rejected" in pg.explanation.toPlainText()
        assert "generation failed" in controller.events.event_log.toPlainText()
        controller.window.close()
        await asyncio_wait(controller.finished.wait(), 10)

    loop.run_until_complete(body())


def test_route_only_shows_a_what_if_decision_without_loading(
        controller: AppController, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    async def body() -> None:
        controller.start(autoload=False)
        pg = controller.playground
        qtbot.keyClicks(pg.prompt, "Plan the migration step by step.")
        pg.task_type.setCurrentText("complex_reasoning")  # 0.7
        qtbot.mouseClick(pg.route_button, Qt.MouseButton.LeftButton)
        measured = pg.explanation.toPlainText()
        assert "what-if" not in measured
        assert "rule: complexity > 0.4 -> prefer qwen3-8b" in measured  # 15.4 GiB free

        pg.assume_free.setChecked(True)
        pg.free_gib.setValue(9.5)  # 8 <= free < 10, complexity not below 0.7: 4B thinking
        qtbot.mouseClick(pg.route_button, Qt.MouseButton.LeftButton)
        text = pg.explanation.toPlainText()
        assert "what-if: assumed, not measured: 9.50 GiB free" in text
        assert "-> prefer qwen3-4b-thinking-2507" in text

        pg.assume_temperature.setChecked(True)
        pg.gpu_temperature.setValue(85.0)  # hot, complexity not below 0.5: the 8B
        qtbot.mouseClick(pg.route_button, Qt.MouseButton.LeftButton)
        text = pg.explanation.toPlainText()
        assert "what-if: assumed, not measured: 9.50 GiB free, 85 C" in text
        assert "selection: hot: 85 C > 80 C" in text

        pg.free_gib.setValue(20.0)  # more than the simulated card's 16 GiB
        qtbot.mouseClick(pg.route_button, Qt.MouseButton.LeftButton)
        assert pg.explanation.toPlainText().startswith("What-if not possible: cannot assume")
        assert controller.runtime.manager.active_model is None  # nothing was loaded
        controller.window.close()
        await asyncio_wait(controller.finished.wait(), 10)

    loop.run_until_complete(body())


def test_an_hour_of_data_is_decimated_keeping_every_peak(qtbot: QtBot) -> None:
    history = TelemetryHistory(36_000)
    rng = np.random.default_rng(1)
    values = rng.normal(60, 5, 36_000)
    values[12_345] = 99.0  # a one-sample spike and a one-sample dip must survive decimation
    values[23_456] = 1.0
    for i, v in enumerate(values):
        history.append_values(1_000_000.0 + i / 10, {"gpu0.temperature_c": float(v)})
    panel = ChartPanel(history, [ChartSpec("temperature", "°C", ("gpu0.temperature_c",))])
    qtbot.addWidget(panel)
    panel.resize(1200, 400)
    panel.set_window(3600)
    x, y = panel.curve_data("gpu0.temperature_c")
    t, v = history.window("gpu0.temperature_c", 3600)
    assert len(y) < len(v) / 10  # decimated...
    assert y.max() == v.max() == 99.0  # ...keeping the peaks
    assert y.min() == v.min() == 1.0
    assert x[0] == t[0]
    assert x[-1] == t[-1]
    assert panel.timer.interval() >= 1000  # 60 min over ~1200 px: no faster than a pixel
    # New rows extend the kept buckets (only the newest is recomputed, buckets that left the
    # window are dropped): the curve is what decimating the stored rows from scratch gives.
    more = np.full(95, 61.0)
    more[50] = 150.0
    for i, v in enumerate(more, start=36_000):
        history.append_values(1_000_000.0 + i / 10, {"gpu0.temperature_c": float(v)})
    panel.redraw()
    x, y = panel.curve_data("gpu0.temperature_c")
    t, v = history.window("gpu0.temperature_c", 3600)
    fresh = PeakBuckets(panel._peaks["gpu0.temperature_c"].width_s)
    fresh.extend(1_000_000.0 + np.arange(36_095) / 10, np.concatenate((values, more)))
    fresh.trim(t[-1] - 3600)
    assert np.array_equal(x, fresh.xs)
    assert np.array_equal(y, fresh.ys)
    assert y.max() == 150.0
    assert x[-1] == t[-1]
    assert x[0] <= t[0] < x[0] + fresh.width_s  # the oldest bucket starts at most one early
