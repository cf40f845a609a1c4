"""The Models tab's "Switch anyway": offered only when the temperature/power gate alone refused a
switch, confirmed in a non-modal box (QDialog.exec() fails inside the qasync loop), then a real
forced load whose history row says `forced` in the History tab and in `vrampilot history`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import PROFILE, wait_until

LOAD_S = 240.0


@pytest.fixture
def hot_runtime(with_demo_models: Path, loop: qasync.QEventLoop) -> Iterator[Runtime]:
    # The idle card sits at 41.5 C: a 30 C gate refuses every switch on temperature alone.
    # A cold first load (vLLM's import included) took over 90 s on the busy CI machine.
    config = with_demo_models / "hot.yaml"
    config.write_text("model_switching:\n  max_temperature_c: 30\n"
                      f"  switch_timeout_seconds: {LOAD_S:.0f}\n", encoding="utf-8")
    rt = Runtime.create(config_file=config, simulate=PROFILE,
                        history_path=with_demo_models / "history.sqlite3")
    yield rt
    loop.run_until_complete(rt.close())


@pytest.mark.vllm
def test_switch_anyway_after_confirmation_is_recorded_as_forced(
        hot_runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    app = AppController(hot_runtime, settings=None, tray=False)

    async def body() -> None:
        app.start(autoload=False)
        panel = app.models
        panel.select_model("demo-tiny-a")
        qtbot.mouseClick(panel.switch_button, Qt.MouseButton.LeftButton)
        assert "FAILED temperature" in panel.refusal.text()
        assert panel.force_button.isVisibleTo(panel)
        assert not panel.busy  # refused: nothing ran

        # Cancel in the confirmation: nothing happens.
        qtbot.mouseClick(panel.force_button, Qt.MouseButton.LeftButton)
        box = panel.confirm_box
        assert box is not None
        assert box.isVisible()
        box.button(QMessageBox.StandardButton.Cancel).click()
        await wait_until(lambda: panel.confirm_box is None, 5, "the box to close")
        assert not panel.busy
        assert hot_runtime.history_store.count() == 0

        # Yes: the switch runs with the gate skipped.
        qtbot.mouseClick(panel.force_button, Qt.MouseButton.LeftButton)
        box = panel.confirm_box
        assert box is not None
        box.button(QMessageBox.StandardButton.Yes).click()
        await wait_until(lambda: panel.busy, 5, "the forced switch to start")
        await wait_until(lambda: not panel.busy, LOAD_S, "the forced switch to end")
        rows = [(r.to_model, r.reason, r.outcome, r.error)
                for r in hot_runtime.history_store.recent(5)]
        assert hot_runtime.manager.active_model == "demo-tiny-a", (
            rows, app.events.event_log.toPlainText())
        app.history.refresh()
        reason_col = 3
        assert app.history.table.item(0, reason_col).text() == "manual, forced"
        row = hot_runtime.history_store.recent(1)[0]
        assert (row.to_model, row.outcome, row.forced) == ("demo-tiny-a", "ready", True)
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 30)

    loop.run_until_complete(body())
    from core.cli import history

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history.run(argparse.Namespace(json=False, limit=5, routing=False))
    assert "-> demo-tiny-a [manual, forced] ready" in out.getvalue()


def test_memory_refusal_offers_no_switch_anyway(
        hot_runtime: Runtime, qtbot: QtBot) -> None:
    from gui.model_switcher import ModelSwitcherPanel

    panel = ModelSwitcherPanel(hot_runtime.manager, hot_runtime.history_store)
    qtbot.addWidget(panel)
    panel.select_model("qwen3-30b-a3b-instruct-2507")  # not on disk, does not fit, and hot
    qtbot.mouseClick(panel.switch_button, Qt.MouseButton.LeftButton)
    assert "FAILED temperature" in panel.refusal.text()
    assert "FAILED memory" in panel.refusal.text()
    assert not panel.force_button.isVisibleTo(panel)
