"""The whole app on the real vLLM CPU engine with the demo models: stream a reply, stop a
stream, switch to the second demo model and see it in the history, close with no child left."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.history_store import HistoryStore
from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import wait_until

LOAD_S = 180.0  # engine start is ~20-60 s here; generous for a loaded CI machine
CLOSE_BOUND_S = 5.0  # closing takes under 3 s; slack for this shared 2-core machine


def engine_processes() -> list[psutil.Process]:
    """This process's descendants except multiprocessing's resource tracker, which vLLM starts
    and which ends with the process (core.process_exit stops it)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            command = " ".join(p.cmdline())
        except psutil.ZombieProcess:
            command = "(zombie)"  # left behind too
        except psutil.NoSuchProcess:
            continue
        if "resource_tracker" not in command:
            found.append(p)
    return found


@pytest.fixture
def app(with_demo_models: Path, runtime: Runtime, loop: qasync.QEventLoop
        ) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


@pytest.mark.vllm
def test_chat_stop_switch_and_clean_close(app: AppController, runtime: Runtime,
                                          loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    async def body() -> None:
        app.start(autoload=False)
        pg = app.playground
        app.window.tabs.setCurrentWidget(pg)
        app.window.activateWindow()
        pg.prompt.setFocus()
        pg.model.setCurrentIndex(pg.model.findData("demo-tiny-a"))
        pg.max_tokens.setValue(24)
        qtbot.keyClicks(pg.prompt, "Say hello.")
        qtbot.keyClick(pg.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert pg.busy
        await wait_until(lambda: not pg.busy, LOAD_S, "the first reply")
        assert pg.answer.toPlainText(), pg.stats.text()
        assert "tok/s" in pg.stats.text()
        assert runtime.manager.active_model == "demo-tiny-a"
        assert pg.demo_notice.isVisibleTo(pg)  # the demo model's text is noise: said so
        assert "noise" in app.window.model_status.text()

        # Stop ends a long stream early. (Send moved the prompt into the conversation.)
        assert pg.prompt.toPlainText() == ""
        pg.max_tokens.setValue(900)
        pg.temperature.setValue(1.0)
        qtbot.keyClicks(pg.prompt, "Tell a long story.")
        qtbot.mouseClick(pg.send_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: pg.answer.toPlainText() or not pg.busy, 60, "first tokens")
        assert pg.busy, "the stream ended before Stop could be pressed"
        qtbot.keyClick(pg.prompt, Qt.Key.Key_Escape)
        await wait_until(lambda: not pg.busy, 10, "the stream to stop")
        assert "stopped" in pg.stats.text()
        assert pg.send_button.isEnabled()
        assert not pg.stop_button.isEnabled()

        # Switch to the second demo model from the Models tab; it shows in the history.
        models = app.models
        models.select_model("demo-tiny-b")
        qtbot.mouseClick(models.switch_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: models.busy, 5, "the switch to start")
        await wait_until(lambda: not models.busy, LOAD_S, "the switch to end")
        assert runtime.manager.active_model == "demo-tiny-b"
        rows = [(app.history.table.item(r, 2).text(), app.history.table.item(r, 1).text(),
                 app.history.table.item(r, app.history.table.columnCount() - 2).text())
                for r in range(app.history.table.rowCount())]
        assert ("demo-tiny-b", "demo-tiny-a", "ready") in rows
        assert "demo-tiny-a → demo-tiny-b" in app.history.chart_data()
        title = app.charts._specs[0].title
        await wait_until(lambda: any(lbl == "demo-tiny-b"
                                     for _t, lbl in app.charts.switch_labels(title)),
                         5, "the switch line on the charts")
        assert "demo-tiny-a → demo-tiny-b ready" in app.events.event_log.toPlainText()

        # Close while a generation runs: it is cancelled, the engine shuts down, no child left.
        pg.model.setCurrentIndex(pg.model.findData("demo-tiny-b"))
        qtbot.keyClicks(pg.prompt, "One more.")
        qtbot.mouseClick(pg.send_button, Qt.MouseButton.LeftButton)
        started = time.monotonic()
        assert not app.finished.is_set()
        app.window.close()
        assert not app.window.isVisible()  # hidden at once, before the shutdown
        await asyncio.wait_for(app.finished.wait(), 12)
        assert time.monotonic() - started < CLOSE_BOUND_S
        left = engine_processes()
        assert left == [], ([(p.pid, p.name(), p.status()) for p in left],
                            time.monotonic() - started, app.events.event_log.toPlainText())
        assert "Task" not in app.events.event_log.toPlainText(), app.events.event_log.toPlainText()

    loop.run_until_complete(body())


@pytest.mark.vllm
def test_close_during_a_load_cancels_it_and_leaves_no_process(
        app: AppController, runtime: Runtime, loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        app.start(autoload=True)  # loads demo-tiny-a
        # vLLM's engine process runs: the load is past the imports (a close during those ends
        # at once but leaves the import to finish in its thread, which this fixture would flag).
        await wait_until(lambda: runtime.manager.state.phase is not None
                         and runtime.manager.state.phase.value == "loading"
                         and engine_processes(), LOAD_S, "the engine process of the load")
        started = time.monotonic()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 12)
        assert time.monotonic() - started < CLOSE_BOUND_S
        assert runtime.manager.active_model is None
        left = engine_processes()
        assert left == [], [(p.pid, p.name(), p.status()) for p in left]
        # Committed before the close finished (the runtime's store is closed by now).
        store = HistoryStore(runtime.history_store.path)
        assert [r.outcome for r in store.recent()] == ["cancelled"]
        store.close()

    loop.run_until_complete(body())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_closes_the_app_cleanly(tmp_path: Path, signum: int) -> None:
    """SIGTERM and SIGINT reach Python through the wake-up timer and close the window like the
    close button: at once, with exit code 0 and nothing alarming printed."""
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(tmp_path), QT_QPA_PLATFORM="offscreen",
               XDG_CONFIG_HOME=str(tmp_path / "config"), VRAMPILOT_REPORT_WINDOW_SHOWN="1",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "--simulate",
                             "rtx4090-laptop", "--no-autoload"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # ends if the app exits early
            if "window shown" in line:
                break
        assert proc.poll() is None, "the app did not start"
        sent = time.monotonic()
        proc.send_signal(signum)
        output = proc.stdout.read()
        rc = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, output
    assert took < CLOSE_BOUND_S, took
    assert "Traceback" not in output, output


def test_ctrl_q_hides_the_window_at_once_and_quits(app: AppController, loop: qasync.QEventLoop,
                                                    qtbot: QtBot) -> None:
    async def body() -> None:
        app.start(autoload=False)
        app.window.activateWindow()
        await wait_until(app.window.isActiveWindow, 5, "the window to be active")
        qtbot.keyClick(app.window.tabs, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
        assert not app.window.isVisible()
        await asyncio.wait_for(app.finished.wait(), CLOSE_BOUND_S)

    loop.run_until_complete(body())
