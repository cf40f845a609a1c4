"""File > Settings through the real dialog: a change is validated by the YAML's rules, written to
the user's config file (keeping what the dialog does not edit) and applied to the running app."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QLineEdit
from pytestqt.qtbot import QtBot

from core import settings_file
from core.config import load_app_config
from core.config_loading import ConfigError
from core.runtime import Runtime
from gui.app import AppController
from gui.settings_dialog import SettingsDialog
from tests.gui.conftest import PROFILE, wait_until

HAND_WRITTEN = """\
# my vrampilot settings (written by hand)
hardware_monitoring:
  # keep the charts smooth
  interval_seconds: 0.5
performance_tracking:
  track_routing: false   # a key the dialog does not edit
"""


def _type(qtbot: QtBot, dialog: SettingsDialog, key: str, text: str) -> None:
    field = dialog.inputs[key]
    assert isinstance(field, QLineEdit)
    field.selectAll()
    qtbot.keyClicks(field, text)


def test_a_changed_setting_is_written_and_applied_live(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    path = settings_file.default_file()
    assert path.parent == data_dir  # VRAMPILOT_DATA_DIR keeps tests out of ~/.config
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    controller = AppController(runtime, settings=None, tray=False)

    async def body() -> None:
        controller.start(autoload=False)
        controller.window.actions_by_name["Settings"].trigger()  # File > Settings (Ctrl+,)
        dialog = controller.settings_dialog
        assert dialog is not None
        assert dialog.isVisible()
        assert dialog.window().windowTitle() == "vrampilot settings"
        assert controller.window.actions_by_name["Settings"].shortcut().toString() == "Ctrl+,"
        # The idle simulated card sits at ~41.5 C: a warning line at 40 with no minimum
        # duration must raise an alert once applied.
        _type(qtbot, dialog, "hardware_monitoring.thresholds.temperature.warning", "40")
        _type(qtbot, dialog, "hardware_monitoring.thresholds.temperature.min_duration_seconds",
              "0")
        _type(qtbot, dialog, "hardware_monitoring.interval_seconds", "0.2")
        _type(qtbot, dialog, "model_switching.vram_buffer_gb", "2.5")
        dialog.set_value("hardware_monitoring.policy", "advise")
        dialog.set_value("startup.load_last_model", True)
        await wait_until(lambda: dialog.save_button.isEnabled() and dialog.config is not None,
                         5, "validated")
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert not dialog.isVisible()

        text = path.read_text(encoding="utf-8")
        assert "# my vrampilot settings (written by hand)" in text
        assert "# keep the charts smooth" in text
        assert "track_routing: false   # a key the dialog does not edit" in text
        saved = load_app_config(path)
        hm = saved.monitoring.hardware_monitoring
        assert (hm.thresholds.temperature.warning, hm.interval_seconds, hm.policy) == (
            40, 0.2, "advise")
        assert saved.monitoring.model_switching.vram_buffer_gb == 2.5
        assert saved.router.selection.buffer_gib == 2.5  # one setting: the router reads it too
        assert "buffer_gib" not in text
        assert saved.startup.load_last_model
        assert not saved.monitoring.performance_tracking.track_routing
        assert "critical" not in text  # only what changed is written

        # Applied to the running app, not only written.
        assert runtime.sampler.interval_seconds == 0.2
        assert runtime.alert_policy == "advise"
        assert controller.events.policy.currentData() == "advise"
        assert runtime.router.config.selection.buffer_gib == 2.5
        assert runtime.manager.switching.vram_buffer_gb == 2.5
        log = controller.events.event_log
        await wait_until(lambda: "temperature warning (started)" in log.toPlainText(), 10,
                         "an alert at the new line")
        assert "line 40 °C" in log.toPlainText()
        assert "the start-up options at the next start" in log.toPlainText()
        controller.window.close()
        await asyncio.wait_for(controller.finished.wait(), 20)

    loop.run_until_complete(body())


def test_the_chart_threshold_lines_move_to_the_saved_thresholds(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    controller = AppController(runtime, settings=None, tray=False)
    charts = controller.charts
    title = next(s.title for s in charts._specs if s.title.endswith(" temperature"))

    def line_at(label: str) -> tuple[float, float]:
        """The threshold's value and the height (view pixels) its dashed line is drawn at."""
        (value, y_px), = [(v, y) for name, v, y in charts.threshold_values(title) if name == label]
        return value, y_px

    def height_of(value: float) -> float:
        """Where that value is on the chart's value axis, in the same pixels."""
        view = charts.plots[title].getViewBox()
        return float(view.mapFromView(QPointF(0.0, value)).y())

    async def body() -> None:
        controller.start(autoload=False)
        await wait_until(lambda: len(charts.curve_data(charts._specs[1].metrics[0])[0]) >= 1,
                         10, "the charts drawn")
        warning, y_before = line_at("warning")
        assert warning == 80.0
        assert y_before == pytest.approx(height_of(80.0), abs=1)
        controller.window.actions_by_name["Settings"].trigger()
        dialog = controller.settings_dialog
        assert dialog is not None
        _type(qtbot, dialog, "hardware_monitoring.thresholds.temperature.warning", "60")
        _type(qtbot, dialog, "hardware_monitoring.thresholds.temperature.critical", "75")
        await wait_until(lambda: dialog.save_button.isEnabled() and dialog.config is not None,
                         5, "validated")
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        # Moved at once (no restart, no new sample needed), to the new values on the axis.
        for label, value in (("warning", 60.0), ("critical", 75.0)):
            assert line_at(label)[0] == value
            assert line_at(label)[1] == pytest.approx(height_of(value), abs=1)
        assert line_at("warning")[1] > y_before + 5  # lower on screen than the old 80 line
        charts.redraw()  # and they stay there frame after frame
        assert line_at("warning")[1] == pytest.approx(height_of(60.0), abs=1)
        controller.window.close()
        await asyncio.wait_for(controller.finished.wait(), 20)

    loop.run_until_complete(body())


def test_clearing_the_remote_url_removes_the_endpoint(
        data_dir: Path, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    path = settings_file.default_file()
    # Port 9 (discard) refuses at once: the Models tab's health probe ends quickly.
    path.write_text(HAND_WRITTEN + "remote:  # my workstation\n"
                    "  base_url: http://127.0.0.1:9/v1\n  model: big-model\n"
                    "  api_key_env: MY_KEY\n", encoding="utf-8")
    runtime = Runtime.create(config_file=path, simulate=PROFILE,
                             history_path=data_dir / "history.sqlite3")
    controller = AppController(runtime, settings=None, tray=False, config_path=path)

    async def body() -> None:
        controller.start(autoload=False)
        assert runtime.config.remote is not None
        assert runtime.manager.catalog.get("remote").enabled
        assert controller.models.remote_timer.isActive()
        dialog = controller.open_settings()
        url = dialog.inputs["remote.base_url"]
        assert isinstance(url, QLineEdit)
        assert url.text() == "http://127.0.0.1:9/v1"
        url.selectAll()
        qtbot.keyClick(url, Qt.Key.Key_Backspace)  # cleared; model and key variable left as is
        await wait_until(lambda: not dialog._timer.isActive() and dialog.config is not None,
                         5, "validated")
        assert dialog.error_text("remote.base_url") == ""
        assert dialog.save_button.isEnabled()
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert not dialog.isVisible()

        # Written: the section is gone, the rest of the hand-written file stays.
        text = path.read_text(encoding="utf-8")
        assert "remote" not in text
        assert "big-model" not in text
        assert "MY_KEY" not in text
        assert "# keep the charts smooth" in text
        assert load_app_config(path).remote is None
        # Applied: no endpoint to switch or fall back to, none probed.
        assert runtime.config.remote is None
        assert not runtime.manager.catalog.get("remote").enabled
        assert not runtime.router.catalog.get("remote").enabled
        assert not controller.models.remote_timer.isActive()
        assert "the remote endpoint is removed" in controller.events.event_log.toPlainText()
        # The next dialog shows no endpoint.
        again = controller.open_settings()
        assert all(again.value(k) is None for k in ("remote.base_url", "remote.model"))
        again.reject()
        controller.window.close()
        await asyncio.wait_for(controller.finished.wait(), 20)

    try:
        loop.run_until_complete(body())
    finally:
        loop.run_until_complete(runtime.close())


def test_a_bad_value_is_refused_with_the_yaml_message(tmp_path: Path, qtbot: QtBot) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    dialog = SettingsDialog(path, load_app_config(path), validate_delay_ms=10)
    qtbot.addWidget(dialog)
    dialog.show()
    _type(qtbot, dialog, "server.port", "eighty")
    _type(qtbot, dialog, "hardware_monitoring.thresholds.power.warning", "150")  # > critical 140
    _type(qtbot, dialog, "hardware_monitoring.interval_seconds", "0.01")
    qtbot.waitUntil(lambda: dialog.error_text("server.port") != "", timeout=5000)
    assert not dialog.save_button.isEnabled()

    # The same values in the YAML file get the same sentences.
    for key, yaml_text in (
            ("server.port", "server: {port: eighty}\n"),
            ("hardware_monitoring.thresholds.power.warning",
             "hardware_monitoring: {thresholds: {power: {warning: 150}}}\n"),
            ("hardware_monitoring.interval_seconds",
             "hardware_monitoring: {interval_seconds: 0.01}\n")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml_text, encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_app_config(bad, log_warnings=False)
        assert dialog.error_text(key) == f"{caught.value.key}: {caught.value.problem}"
        assert dialog.errors[key].isVisible()
    assert "greater than or equal to 0.1" in dialog.error_text(
        "hardware_monitoring.interval_seconds")

    # Saving is refused and the file is left as it was; fixing the fields clears the messages.
    dialog.save()
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN
    _type(qtbot, dialog, "server.port", "8123")
    _type(qtbot, dialog, "hardware_monitoring.thresholds.power.warning", "120")
    _type(qtbot, dialog, "hardware_monitoring.interval_seconds", "0.25")
    qtbot.waitUntil(dialog.save_button.isEnabled, timeout=5000)
    assert all(not label.isVisible() for label in dialog.errors.values())
    dialog.save()
    assert load_app_config(path).server.port == 8123


def test_a_broken_file_is_named_and_never_overwritten(tmp_path: Path, qtbot: QtBot) -> None:
    path = tmp_path / "config.yaml"
    broken = "hardware_monitoring:\n  interval_seconds: [unclosed\n"
    path.write_text(broken, encoding="utf-8")
    dialog = SettingsDialog(path, load_app_config(), validate_delay_ms=10)
    qtbot.addWidget(dialog)
    assert str(path) in dialog.banner.text()
    assert "not valid YAML" in dialog.banner.text()
    assert not dialog.save_button.isEnabled()
    dialog.save()
    assert path.read_text(encoding="utf-8") == broken
