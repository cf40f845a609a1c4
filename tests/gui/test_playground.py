"""The playground without an engine: a saved conversation opened, rendered as Markdown (code
monospaced, thinking folded, copy and edit links), exported; a bad file named and nothing lost;
recent runs off by default, kept when switched on, forgotten; the prompt's token count with the
model's tokenizer off the GUI thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication
from pytestqt.qtbot import QtBot

from core.conversation import Conversation, Reply, Sampling
from core.engine.base import ChatMessage
from core.prompt_tokens import PromptCounter
from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import wait_until

CODE_REPLY = "Here:\n\n```python\nprint('hi')\n```\n\nDone."


@pytest.fixture
def controller(with_demo_models: Path, runtime: Runtime, loop: qasync.QEventLoop,
               qtbot: QtBot) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    c.start(autoload=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


def saved(tmp_path: Path) -> Path:
    c = Conversation(system="Be brief.", model="demo-tiny-a", task_type="simple_extraction",
                     sampling=Sampling(temperature=0.3, top_p=0.8, top_k=12, max_tokens=99,
                                       seed=42, stop=("END", "\n\n"), presence_penalty=0.5,
                                       frequency_penalty=-0.5, thinking=True))
    c.ask("Show me code.")
    c.finish(Reply(CODE_REPLY, thinking="The user wants **code**.", model="demo-tiny-a",
                   tokens=20, first_token_s=0.01, tokens_per_s=100.0))
    c.ask("Again?")
    c.finish(Reply("Sure.", model="demo-tiny-a", tokens=2))
    path = tmp_path / "saved.json"
    c.save(path)
    return path


def test_open_render_fold_copy_edit_and_export(controller: AppController, tmp_path: Path,
                                               loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    pg = controller.playground
    path = saved(tmp_path)
    assert pg.open_from(path)
    assert str(path) in pg.file_status.text()
    # The settings come back with the conversation.
    assert pg.model.currentData() == "demo-tiny-a"
    assert (pg.temperature.value(), pg.top_p.value(), pg.top_k.value(), pg.max_tokens.value(),
            pg.seed.value(), pg.presence_penalty.value(), pg.frequency_penalty.value()) == (
        0.3, 0.8, 12, 99, 42, 0.5, -0.5)
    assert pg.sampling().stop == ("END", "\n\n")
    assert pg.system.toPlainText() == "Be brief."
    assert pg.task_type.currentText() == "simple_extraction"

    shown = pg.transcript.toPlainText()
    assert "print('hi')" in shown
    assert "```" not in shown  # rendered, not shown as source
    assert "The user wants" not in shown  # thinking folded
    assert "thinking (24 characters)" in shown
    code = pg.transcript.document().find("print('hi')")
    assert code.charFormat().fontFixedPitch() or "mono" in code.charFormat().fontFamilies()[0]

    pg.transcript.anchorClicked.emit(QUrl("fold:0"))
    assert "The user wants code." in pg.transcript.toPlainText()
    pg.transcript.anchorClicked.emit(QUrl("fold:0"))
    assert "The user wants" not in pg.transcript.toPlainText()

    pg.transcript.anchorClicked.emit(QUrl("copy:0"))
    assert QGuiApplication.clipboard().text() == CODE_REPLY

    pg.transcript.anchorClicked.emit(QUrl("edit:1"))
    assert pg.prompt.toPlainText() == "Again?"
    assert "editing turn 2" in pg.stats.text()

    # A turn replaced in place (as a regenerated reply is) reads as a full render does.
    pg.conversation.regenerate()
    pg.show_turn(1)
    incremental = pg.transcript.toPlainText()
    assert "Sure." not in incremental
    assert "Again?" in incremental
    assert "print('hi')" in incremental
    pg.render_transcript()
    assert pg.transcript.toPlainText() == incremental
    pg.conversation.finish(Reply("Sure.", model="demo-tiny-a", tokens=2))
    pg.show_turn(1)
    assert pg.transcript.toPlainText().count("Sure.") == 1

    md = tmp_path / "out.md"
    assert pg.export_markdown(md)
    text = md.read_text()
    assert "```python\nprint('hi')\n```" in text
    assert "<details><summary>Thinking</summary>" in text
    assert "seed 42" in text

    again = tmp_path / "again.json"
    assert pg.save_to(again)
    assert Conversation.load(again).turns == Conversation.load(path).turns


@pytest.mark.parametrize("content", ["{broken", json.dumps({"format": "other"}), ""])
def test_a_bad_file_is_named_and_the_conversation_kept(controller: AppController,
                                                       tmp_path: Path, content: str) -> None:
    pg = controller.playground
    assert pg.open_from(saved(tmp_path))
    before = pg.transcript.toPlainText()
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert not pg.open_from(bad)
    assert pg.file_status.text().startswith(f"Not opened: {bad}: ")
    assert pg.transcript.toPlainText() == before
    assert len(pg.conversation.turns) == 2
    assert "Not opened" in controller.events.event_log.toPlainText()
    assert not pg.save_to(tmp_path / "no-such-dir" / "x.json")
    assert "Not saved" in pg.file_status.text()
    assert "no-such-dir" in pg.file_status.text()


def test_recent_runs_are_off_by_default_kept_when_on_and_forgotten(
        controller: AppController, with_demo_models: Path, tmp_path: Path) -> None:
    pg = controller.playground
    store = with_demo_models / "recent_runs.json"
    assert not pg.keep_recent.isChecked()
    assert pg.open_from(saved(tmp_path))
    assert not store.exists()  # off: nothing written
    pg.keep_recent.setChecked(True)
    assert pg.recent_box.count() == 1
    assert pg.recent_box.itemText(0) == "Show me code."
    assert "Show me code." in store.read_text()
    pg.clear()
    assert "Show me code." not in pg.transcript.toPlainText()
    assert pg.system.toPlainText() == "Be brief."  # clear keeps the system prompt
    pg.recent_box.activated.emit(0)
    assert len(pg.conversation.turns) == 2
    pg.forget_button.click()
    assert pg.recent_box.count() == 0
    assert "Show me code." not in store.read_text()
    assert json.loads(store.read_text())["enabled"] is True


def test_prompt_tokens_are_counted_with_the_models_tokenizer(
        controller: AppController, with_demo_models: Path, loop: qasync.QEventLoop,
        qtbot: QtBot) -> None:
    pg = controller.playground

    async def body() -> None:
        assert "counted once a model is chosen" in pg.tokens_label.text() or \
            pg.tokens_label.text() == ""
        pg.model.setCurrentIndex(pg.model.findData("demo-tiny-a"))
        pg.system.setPlainText("Be brief.")
        qtbot.keyClicks(pg.prompt, "How many tokens is this?")
        expected = PromptCounter().count(
            with_demo_models / "models" / "demo-tiny-a",
            (ChatMessage("system", "Be brief."), ChatMessage("user", "How many tokens is this?")),
            pg.sampling().thinking)
        context = controller.runtime.chat.model_context("demo-tiny-a")
        await wait_until(lambda: f"Prompt tokens: {expected:,} of {context:,}"
                         in pg.tokens_label.text(), 60, "the token count")
        assert context is not None
        assert context > expected

    loop.run_until_complete(body())


def test_the_think_toggle_follows_the_catalogs_mode(controller: AppController) -> None:
    pg = controller.playground
    assert pg.model.currentData() is None  # Auto: the chosen model's default
    assert pg.think.checkState() == Qt.CheckState.PartiallyChecked
    assert not pg.think.isEnabled()
    assert pg.sampling().thinking is None
    pg.model.setCurrentIndex(pg.model.findData("demo-tiny-a"))  # mode: instruct
    assert not pg.think.isChecked()
    assert not pg.think.isEnabled()
    assert pg.sampling().thinking is False
    chat = controller.runtime.chat
    assert chat.default_thinking("qwen3-4b-thinking-2507")
    assert chat.default_thinking("qwen3-8b")  # a hybrid thinks unless told not to
    assert not chat.default_thinking("demo-tiny-a")


def test_a_conversation_for_a_model_not_usable_here_opens_on_auto(
        controller: AppController, tmp_path: Path) -> None:
    pg = controller.playground
    c = Conversation(model="qwen3-8b")  # in the catalog, not on disk here
    c.ask("hi")
    c.finish(Reply("hello", model="qwen3-8b"))
    c.save(tmp_path / "c.json")
    assert pg.open_from(tmp_path / "c.json")
    assert pg.model.currentData() is None
    assert pg.conversation.turns[0].reply is not None
    pg.refresh_models()  # relisting keeps the choice
    pg.model.setCurrentIndex(pg.model.findData("demo-tiny-b"))
    pg.refresh_models()
    assert pg.model.currentData() == "demo-tiny-b"


def test_the_task_types_are_the_routers_own(controller: AppController) -> None:
    """The playground lists what the router's config scores (plus "unknown"), not a copy."""
    pg = controller.playground
    listed = [pg.task_type.itemText(i) for i in range(pg.task_type.count())]
    configured = list(controller.runtime.router.config.complexity.task_types)
    assert listed == [*configured, "unknown"]
    assert pg.task_type.currentText() == "standard_parsing"
