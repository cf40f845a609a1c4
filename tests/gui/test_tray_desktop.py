"""Desktop options in the settings dialog through the real controller on the simulated GPU:
keeping the app in the tray when the window closes, starting at log-in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QLabel, QSystemTrayIcon
from pytestqt.qtbot import QtBot

from core import settings_file
from core.config import load_app_config
from core.runtime import Runtime
from gui.app import AppController
from gui.settings_dialog import SettingsDialog
from tests.gui.conftest import PROFILE, wait_until

KEEP = "startup.keep_in_tray"


@pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise",
                           "systemTrayWindowChanged")  # offscreen
def test_kept_in_the_tray_closing_hides_and_the_trays_quit_quits(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The offscreen platform has no tray; the desktop's answer is the one seam faked here.
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))
    app = AppController(runtime, settings=None, tray=True)

    async def body() -> None:
        app.start(autoload=False)
        assert app.tray.available
        app.window.show()
        # Off by default: the close button would quit. Turn it on in the dialog.
        dialog = app.open_settings()
        box = dialog.inputs[KEEP]
        assert isinstance(box, QCheckBox)
        assert box.isEnabled()
        assert not box.isChecked()
        box.click()  # as a click on its indicator does
        await wait_until(lambda: dialog.config is not None and dialog.save_button.isEnabled(),
                         5, "validated")
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert load_app_config(settings_file.default_file()).startup.keep_in_tray
        assert runtime.config.startup.keep_in_tray  # applied at once, no restart
        # The close button now only hides the window; the app goes on sampling.
        app.window.close()
        await asyncio.sleep(0.3)
        assert not app.window.isVisible()
        assert not app.finished.is_set()
        app.tray.refresh()
        assert app.tray.show_action.text() == "Show window"
        app.tray.show_action.trigger()
        assert app.window.isVisible()
        # The tray's Quit really quits.
        app.tray.quit_action.trigger()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())


def test_without_a_tray_the_option_is_disabled_with_the_reason_and_close_quits(
        data_dir: Path, loop: qasync.QEventLoop) -> None:
    config = settings_file.default_file()
    config.write_text("startup: {keep_in_tray: true}\n", encoding="utf-8")
    runtime = Runtime.create(config_file=config, simulate=PROFILE,
                             history_path=data_dir / "history.sqlite3")
    app = AppController(runtime, settings=None, tray=False)

    async def body() -> None:
        app.start(autoload=False)
        dialog = app.open_settings()
        box = dialog.inputs[KEEP]
        assert box.isChecked()
        assert not box.isEnabled()
        reason = dialog.findChild(QLabel, f"{KEEP}.unavailable")
        assert reason is not None
        assert reason.text() == "No system tray on this desktop: closing the window quits."
        dialog.reject()
        app.window.close()  # no tray to come back from: closing quits
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())
    loop.run_until_complete(runtime.close())


def test_the_autostart_toggle_writes_and_removes_the_xdg_entry(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    entry = tmp_path / "xdg" / "autostart" / "vrampilot.desktop"
    app = AppController(runtime, settings=None, tray=False)

    async def save(dialog: SettingsDialog) -> None:
        await wait_until(lambda: dialog.config is not None and dialog.save_button.isEnabled(),
                         5, "validated")
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert not dialog.isVisible()

    async def body() -> None:
        app.start(autoload=False)
        dialog = app.open_settings()
        assert not dialog.autostart.isChecked()
        assert str(entry) in dialog.autostart.toolTip()
        dialog.autostart.click()
        await save(dialog)
        text = entry.read_text(encoding="utf-8")
        assert "[Desktop Entry]" in text
        exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
        assert exec_line.endswith("/vrampilot")  # this venv's launcher, not a bare name
        assert not settings_file.default_file().exists()  # no YAML key: nothing written there
        # Opened again, the dialog reads the entry's presence; unticked, the entry goes.
        dialog = app.open_settings()
        assert dialog.autostart.isChecked()
        dialog.autostart.click()
        await save(dialog)
        assert not entry.exists()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())
