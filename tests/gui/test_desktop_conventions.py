"""Desktop conventions: the menu bar and its standard shortcuts, driven by key presses on the real
window; and the Models tab's header and table reading the same state during a switch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from gui.app import AppController
from gui.model_switcher import STATE_COLUMN, ModelSwitcherPanel
from tests.core.manager_fakes import make_rig
from tests.gui.conftest import wait_until

CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def controller(runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot
               ) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 20))


def _shown(controller: AppController, qtbot: QtBot) -> None:
    controller.start(autoload=False)
    qtbot.waitExposed(controller.window)
    controller.window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is controller.window, timeout=5000)


def test_menus_hold_the_actions_with_their_shortcuts(controller: AppController,
                                                     qtbot: QtBot) -> None:
    w = controller.window
    menus = [a.text().replace("&", "") for a in w.menuBar().actions()]
    assert menus == ["File", "View", "Models", "Server", "Help"]
    shortcuts = {name: a.shortcut().toString() for name, a in w.actions_by_name.items()}
    assert shortcuts["Quit"] == "Ctrl+Q"
    assert shortcuts["vrampilot help"] == "F1"
    # The window's five panels; the app's own tabs (Soak test) come without a shortcut.
    panels = [w.monitor, w.models, w.history, w.playground, w.events]
    for i, panel in enumerate(panels):
        assert shortcuts[w.tabs.tabText(w.tabs.indexOf(panel))] == f"Ctrl+{i + 1}"
    assert "Export telemetry (CSV)" in shortcuts  # the runtime's history exports CSV
    for name in ("Load / switch to selected", "Unload", "Cancel switch", "About vrampilot"):
        assert name in shortcuts


def test_ctrl_digits_show_the_panels(controller: AppController, loop: qasync.QEventLoop,
                                     qtbot: QtBot) -> None:
    _shown(controller, qtbot)
    w = controller.window
    panels = [w.monitor, w.models, w.history, w.playground, w.events]
    for i in (4, 2, 0, 3, 1):
        qtbot.keyClick(w, getattr(Qt.Key, f"Key_{i + 1}"), CTRL)
        assert w.tabs.currentWidget() is panels[i]


def test_f1_shows_where_the_logs_and_history_are(controller: AppController, runtime: Runtime,
                                                 data_dir: Path, qtbot: QtBot) -> None:
    _shown(controller, qtbot)
    qtbot.keyClick(controller.window, Qt.Key.Key_F1)
    box = controller.window.help_box
    assert box is not None
    assert box.isVisible()
    text = box.text()
    assert f"history database: {runtime.history_store.path}" in text
    assert f"engine logs: {data_dir / 'logs'}" in text
    assert "Ctrl+Q" in text
    box.close()


def test_ctrl_q_quits_through_the_shutdown(controller: AppController, loop: qasync.QEventLoop,
                                           qtbot: QtBot) -> None:
    _shown(controller, qtbot)
    qtbot.keyClick(controller.window, Qt.Key.Key_Q, CTRL)
    loop.run_until_complete(wait_until(controller.finished.is_set, 20, "the shutdown to finish"))
    assert not controller.window.isVisible()
    assert "shut down in" in controller.events.event_log.toPlainText()


def test_header_and_table_agree_during_a_switch(tmp_path: Path, loop: qasync.QEventLoop,
                                                qtbot: QtBot) -> None:
    """The old model is unloaded while the new one loads: neither place may still call it
    active (a new user saw "Active model: none" above a table showing it loaded and active)."""
    rig = make_rig(tmp_path)
    panel = ModelSwitcherPanel(rig.manager, rig.history)
    qtbot.addWidget(panel)
    rig.manager.subscribe(panel.on_switch_event)

    def cell(model: str, column: int) -> str:
        panel.select_model(model)
        row = panel.table.currentRow()
        item = panel.table.item(row, column)
        return "" if item is None else item.text()

    async def body() -> None:
        assert panel.request_switch("demo-tiny-a")
        await wait_until(lambda: not panel.busy, 10, "demo-tiny-a to load")
        assert cell("demo-tiny-a", STATE_COLUMN).startswith("active")
        assert cell("demo-tiny-a", 2) == "loaded"
        gate = asyncio.Event()
        rig.script.block["demo-tiny-b"] = gate  # the new model's load waits here
        assert panel.request_switch("demo-tiny-b")
        await wait_until(lambda: rig.engines[-1].entry.id == "demo-tiny-b"
                         and rig.manager.active_model is None, 10, "the old model unloaded")
        await asyncio.sleep(0.05)
        assert "Active model: <b>none</b>" in panel.active_label.text()
        assert "switching to <b>demo-tiny-b</b>" in panel.active_label.text()
        assert cell("demo-tiny-a", STATE_COLUMN) == ""
        assert cell("demo-tiny-a", 2) != "loaded"
        assert cell("demo-tiny-b", STATE_COLUMN).startswith("switching")
        gate.set()
        await wait_until(lambda: not panel.busy, 10, "demo-tiny-b to load")
        assert "Active model: <b>demo-tiny-b</b>" in panel.active_label.text()
        assert cell("demo-tiny-b", STATE_COLUMN).startswith("active")
        assert cell("demo-tiny-a", STATE_COLUMN) == ""
        await rig.manager.close()  # ends the engine watch of the active model

    loop.run_until_complete(body())


def test_header_is_right_after_a_switch_begun_elsewhere(tmp_path: Path, loop: qasync.QEventLoop,
                                                        qtbot: QtBot) -> None:
    """A switch not started from this panel (the start-up load, the API, the router): once it
    is over the header must not still say "switching to" (it did, until the next click)."""
    rig = make_rig(tmp_path)
    panel = ModelSwitcherPanel(rig.manager, rig.history)
    qtbot.addWidget(panel)
    rig.manager.subscribe(panel.on_switch_event)

    async def body() -> None:
        for model in ("demo-tiny-a", "demo-tiny-b"):
            assert (await rig.manager.switch_to(model, reason="router")).ok
            assert not panel.busy
            assert panel.active_label.text() == f"Active model: <b>{model}</b>"
        await rig.manager.close()

    loop.run_until_complete(body())
    rig.history.close()
