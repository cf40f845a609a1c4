"""Routing feedback end to end on the real vLLM CPU engine with a demo model: a prompt sent with
model = Auto from the Playground is routed and logged in the history database, the user marks it
"wrong model" in the feedback bar, and the History tab shows the router's accuracy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.routing_log import RoutingLog
from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import wait_until

LOAD_S = 240.0  # engine start is ~20-60 s here; generous for a loaded shared machine


@pytest.fixture
def app(with_demo_models: Path, runtime: Runtime, loop: qasync.QEventLoop
        ) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


@pytest.mark.vllm
def test_a_routed_reply_is_logged_rated_and_shown_as_accuracy(
        app: AppController, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    async def body() -> None:
        app.start(autoload=False)
        pg = app.playground
        app.window.tabs.setCurrentWidget(pg)
        assert pg.model.currentData() is None  # Auto: the router decides
        pg.task_type.setCurrentText("simple_extraction")
        pg.max_tokens.setValue(16)
        qtbot.keyClicks(pg.prompt, "Extract the job title: Senior Data Engineer, Berlin.")
        qtbot.mouseClick(pg.send_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: not pg.busy, LOAD_S, "the routed reply")
        assert "tok/s" in pg.stats.text(), pg.stats.text()
        answered = runtime.manager.active_model
        assert answered in ("demo-tiny-a", "demo-tiny-b", "demo-small")

        # Logged in SQLite with the decision, the hardware it was made on and the speed.
        [row] = RoutingLog(runtime.history_store).all()
        assert (row.task_type, row.tier, row.outcome) == ("simple_extraction", "simple",
                                                          "answered")
        assert row.decided_model == row.answered_model == answered
        assert row.total_bytes == 16 * 1024**3  # the simulated RTX 4090 Laptop
        assert row.tokens_per_s is not None
        assert row.tokens_per_s > 0

        # The feedback bar offers a verdict on this reply; the user says another model.
        bar = pg.feedback_bar
        assert bar.isVisibleTo(pg)
        assert answered in bar.question.text()
        wanted = "demo-tiny-b" if answered != "demo-tiny-b" else "demo-tiny-a"
        bar.wanted.setCurrentIndex(bar.wanted.findText(wanted))
        qtbot.mouseClick(bar.wrong_button, Qt.MouseButton.LeftButton)
        assert bar.status.text() == f"Recorded: {wanted} should have answered"

        # The History tab shows it: 0 % right for simple_extraction, answered -> wanted.
        history = app.history
        app.window.tabs.setCurrentWidget(history)
        history.pages.setCurrentWidget(history.routing)
        routing = history.routing
        table = routing.accuracy_table
        assert (table.item(0, 0).text(), table.item(0, 1).text(),
                table.item(0, 2).text()) == ("simple_extraction", "0 %", "0 / 1")
        confusion = routing.confusion_table
        columns = [confusion.horizontalHeaderItem(c).text()
                   for c in range(confusion.columnCount())]
        assert confusion.verticalHeaderItem(0).text() == answered
        assert confusion.item(0, columns.index(wanted)).text() == "1"
        # This session had a model ready since its first load: uptime is measured.
        assert routing.report is not None
        assert routing.report.uptime.share is not None
        assert "Model uptime" in routing.uptime_label.text()

        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 30)

    loop.run_until_complete(body())
