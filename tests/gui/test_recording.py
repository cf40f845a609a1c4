"""Recording the monitoring: samples of the simulated RTX 4090 Laptop go to a file while the
sampler runs; the file reopens read-only in the Monitor's charts with the same data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from core.telemetry.history import TelemetryHistory
from core.telemetry.recording import TelemetryRecorder
from gui.app import chart_specs
from gui.recording_controls import RecordingControls


def test_a_recording_reopens_with_the_same_chart_data(qtbot: QtBot, runtime: Runtime,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    controls = RecordingControls(lambda: TelemetryRecorder(runtime.sampler, path),
                                 lambda: chart_specs(runtime))
    qtbot.addWidget(controls)
    logs: list[tuple[str, str]] = []
    controls.event_line.connect(lambda level, text: logs.append((level, text)))
    runtime.sampler.interval_seconds = 0.1
    runtime.sampler.start()
    try:
        time.sleep(0.35)  # samples before the recording starts are not in it
        controls.record_button.click()
        assert controls.recorder is not None
        deadline = time.monotonic() + 10
        while controls.recorder.rows < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        controls.record_button.click()
    finally:
        runtime.sampler.stop()
    assert controls.recorder is None
    assert logs[-1][1].startswith("recorded ")
    recorded = TelemetryHistory.from_csv(path)
    assert len(recorded) >= 8
    live = runtime.history
    assert len(live) > len(recorded)  # the sampler ran before (and maybe after) the recording

    window = controls.open_recording(path)
    qtbot.addWidget(window)
    assert "read-only" in window.windowTitle()
    for spec in chart_specs(runtime):
        for metric in spec.metrics:
            x, y = window.charts.curve_data(metric)
            t, v = recorded.window(metric)
            np.testing.assert_array_equal(x, t)
            np.testing.assert_allclose(y, v * spec.scale)
            # ... and they are the live history's samples at those times.
            lt, lv = live.window(metric)
            keep = np.isin(lt, t)
            np.testing.assert_allclose(lv[keep] * spec.scale, y)
    # The same export as the Monitor: a CSV of what is shown.
    assert window.charts._export_csv is not None
    window.charts._export_csv(tmp_path / "again.csv")
    again = TelemetryHistory.from_csv(tmp_path / "again.csv")
    np.testing.assert_array_equal(again.window("gpu0.temperature_c")[1],
                                  recorded.window("gpu0.temperature_c")[1])
    controls.close_all()


def test_a_file_that_is_not_a_recording_is_refused(qtbot: QtBot, runtime: Runtime,
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "notes.csv"
    bad.write_text("hello,world\n")
    controls = RecordingControls(lambda: TelemetryRecorder(runtime.sampler, tmp_path / "r.csv"),
                                 lambda: chart_specs(runtime))
    qtbot.addWidget(controls)
    with pytest.raises(ValueError, match="no 'timestamp' header"):
        controls.open_recording(bad)


def test_the_charts_name_the_metrics_the_history_and_the_alerts_use(runtime: Runtime) -> None:
    """One helper (core.telemetry.snapshot.gpu_metric) names a GPU's metrics for all three."""
    from core.telemetry.alerts import AlertEvaluator
    from core.telemetry.history import sample_metrics

    sample = runtime.sampler.sample_once()
    recorded = set(sample_metrics(sample))
    evaluator = AlertEvaluator(runtime.config.monitoring.hardware_monitoring)
    evaluator.evaluate(sample)
    alert_metrics = {t.metric for trackers in evaluator._per_gpu.values()
                     for t in trackers.values()}
    assert "gpu0.vram_usage" in alert_metrics
    for spec in chart_specs(runtime):
        assert set(spec.metrics) <= recorded, spec.title
        # Throttle reasons are shaded too: the GPU panel names them with the same helper.
        shaded = {m for m in spec.alert_metrics if ".clock_event." not in m}
        assert shaded <= alert_metrics, spec.title
        assert all(m.startswith("gpu0.") for m in spec.alert_metrics), spec.title
