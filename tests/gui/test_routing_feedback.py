"""The feedback bar and the History tab's routing page, through the real widgets on a real
ChatSession, manager and SQLite history (the engine is the manager tests' in-test engine; the
real vLLM run is test_routing_feedback_vllm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.chat_session import ChatSession
from core.uptime import UptimeRecorder
from gui.feedback_bar import FeedbackBar
from gui.history_panel import HistoryPanel
from tests.core.manager_fakes import Rig
from tests.core.test_chat_session import FOUR_B
from tests.core.test_routing_log import ask, routed_session


def logged_session(tmp_path: Path) -> tuple[ChatSession, Rig]:
    chat, rig = routed_session(tmp_path)
    recorder = UptimeRecorder(rig.history, lambda: rig.manager.active_model,
                              lambda: rig.manager.state.switching_to is not None,
                              clock=rig.clock, session="gui-test")
    rig.manager.subscribe(recorder.on_event)
    for request_id, task in (("r1", "simple_extraction"), ("r2", "simple_extraction"),
                             ("r3", "complex_reasoning")):
        ask(chat, request_id, task_type=task, n=3)
        rig.clock.now += 600  # ten minutes ready between requests
    ask(chat, "named", model="qwen3-8b", n=3)  # a named model: not routed, no feedback
    rig.clock.now += 60
    recorder.observe()
    recorder.end()
    return chat, rig


def test_feedback_bar_records_verdicts_and_refuses_an_unknown_model(
        tmp_path: Path, qtbot: QtBot) -> None:
    chat, rig = logged_session(tmp_path)
    bar = FeedbackBar(chat)
    qtbot.addWidget(bar)
    assert bar.isHidden()
    assert bar.show_for("r1")
    assert not bar.isHidden()
    assert bar.question.text() == f"Router chose {FOUR_B}: right model?"
    with qtbot.waitSignal(bar.feedback_given) as given:
        qtbot.mouseClick(bar.good_button, Qt.MouseButton.LeftButton)
    assert given.args[0].verdict == "good"
    assert bar.status.text() == "Recorded: good"
    assert not bar.good_button.isEnabled()

    assert bar.show_for("r2")
    assert bar.good_button.isEnabled()
    assert FOUR_B not in [bar.wanted.itemText(i) for i in range(bar.wanted.count())]
    bar.wanted.setEditText("")
    qtbot.keyClicks(bar.wanted.lineEdit(), "gpt-9")
    qtbot.mouseClick(bar.wrong_button, Qt.MouseButton.LeftButton)
    assert bar.status.text().startswith("Not recorded: unknown model 'gpt-9' named as the one "
                                        "that should have answered; known models: ")
    assert chat.routed_request("r2").verdict is None  # type: ignore[union-attr]
    assert bar.wrong_button.isEnabled()  # still usable
    bar.wanted.setCurrentIndex(bar.wanted.findText("qwen3-14b"))
    qtbot.mouseClick(bar.wrong_button, Qt.MouseButton.LeftButton)
    assert bar.status.text() == "Recorded: qwen3-14b should have answered"
    stored = chat.routed_request("r2")
    assert stored is not None
    assert (stored.verdict, stored.wanted_model) == ("wrong_model", "qwen3-14b")

    assert not bar.show_for("named")
    assert bar.isHidden()
    rig.history.close()


def test_history_tab_shows_accuracy_confusion_tiers_and_uptime(
        tmp_path: Path, qtbot: QtBot) -> None:
    chat, rig = logged_session(tmp_path)
    chat.give_feedback("r1", "good")
    chat.give_feedback("r2", "wrong_model", "qwen3-8b")
    chat.give_feedback("r3", "good")
    panel = HistoryPanel(rig.history)
    qtbot.addWidget(panel)
    panel.pages.setCurrentWidget(panel.routing)
    routing = panel.routing
    assert "3 routed requests logged, 3 rated" in routing.summary.text()
    assert "right for 67 %" in routing.summary.text()
    table = routing.accuracy_table
    rows = {table.item(r, 0).text(): (table.item(r, 1).text(), table.item(r, 2).text())
            for r in range(table.rowCount())}
    assert rows == {"complex_reasoning": ("100 %", "1 / 1"),
                    "simple_extraction": ("50 %", "1 / 2")}
    confusion = routing.confusion_table
    columns = [confusion.horizontalHeaderItem(c).text() for c in range(confusion.columnCount())]
    assert confusion.verticalHeaderItem(0).text() == FOUR_B
    assert confusion.item(0, columns.index(FOUR_B)).text() == "2"
    assert confusion.item(0, columns.index("qwen3-8b")).text() == "1"
    tiers = routing.tier_chart_data()
    assert tiers["simple"][0] == pytest.approx(200 / 3)  # two of three requests, in %
    assert tiers["complex"][0] == pytest.approx(100 / 3)
    assert {t: e for t, (_m, e) in tiers.items()} == {
        "simple": 40.0, "standard": 35.0, "complex": 20.0, "expert": 5.0}
    uptime = routing.uptime_label.text()
    assert "Model uptime" in uptime
    assert routing.report is not None
    share = routing.report.uptime.share
    assert share is not None
    assert 0.9 < share < 1.0  # 31 min ready, one switch to the 8B
    assert f"{share * 100:.0f} %" in uptime
    # New feedback shows when the tab is refreshed (it is, whenever it is shown).
    chat.give_feedback("r2", "good")
    panel.refresh()
    assert "right for 100 %" in routing.summary.text()
    rig.history.close()
