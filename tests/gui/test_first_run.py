"""The first run on a machine without an NVIDIA GPU (this one: NVML finds no driver), through
the real controller: it says so and offers the simulated RTX 4090 Laptop in one click."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import qasync
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from gui.app import AppController
from gui.first_run import NoGpuBanner, relaunch_command


def _banner(app: AppController) -> NoGpuBanner | None:
    return app.window.findChild(NoGpuBanner)


def test_no_gpu_is_said_once_and_the_simulated_laptop_is_one_click_away(
        data_dir: Path, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    settings = QSettings(str(data_dir / "qt.ini"), QSettings.Format.IniFormat)
    runtime = Runtime.create(history_path=data_dir / "history.sqlite3")  # no --simulate
    assert not runtime.devices  # no NVIDIA GPU here
    app = AppController(runtime, settings=settings, tray=False)

    async def body() -> None:
        app.start(autoload=False)
        banner = _banner(app)
        assert banner is not None
        assert banner.isVisible()
        assert banner.text.text().startswith("No NVIDIA GPU found")
        assert banner.simulate_button.text() == "Use the simulated RTX 4090 Laptop"
        banner.simulate_button.click()  # one click: this app quits, the launcher starts again
        await asyncio.wait_for(app.finished.wait(), 20)
        assert app.relaunch_simulated

    loop.run_until_complete(body())
    loop.run_until_complete(runtime.close())
    assert relaunch_command(None) == [sys.executable, "-m", "gui.launcher",
                                      "--simulate", "rtx4090-laptop"]
    # Answered: the next start does not ask again.
    again = Runtime.create(history_path=data_dir / "history.sqlite3")
    second = AppController(again, settings=settings, tray=False)
    assert _banner(second) is None
    second.start(autoload=False)
    second.window.close()
    loop.run_until_complete(asyncio.wait_for(second.finished.wait(), 20))
    loop.run_until_complete(again.close())


def test_a_simulated_gpu_gets_no_offer(data_dir: Path, runtime: Runtime,
                                       loop: qasync.QEventLoop) -> None:
    app = AppController(runtime, settings=None, tray=False)
    assert _banner(app) is None
    app.start(autoload=False)
    app.window.close()
    loop.run_until_complete(asyncio.wait_for(app.finished.wait(), 20))
