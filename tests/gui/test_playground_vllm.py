"""The playground on the real vLLM CPU engine: a three-turn conversation with a system prompt
whose engine request (and rendered prompt) carries every turn; the same seed giving the same
reply; an edited turn; a thinking model's reply split into its pane; save and reopen.

The config makes demo-tiny-a a Qwen3 hybrid ("base": the Think toggle) and points demo-tiny-b at a
copy whose chat template opens the reasoning block like Qwen3-4B-Thinking-2507's ("thinking")."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt, QUrl
from pytestqt.qtbot import QtBot

from core.conversation import Conversation
from core.engine.base import ChatMessage, GenerationRequest
from core.engine.demo_model import CHAT_TEMPLATE
from core.prompt_tokens import PromptCounter
from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import PROFILE, wait_until

LOAD_S = 240.0
REPLY_S = 120.0
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}", "{{- '<think>\\n' }}")


def thinking_copy(source: Path, target: Path) -> Path:
    """demo-tiny-b with Qwen3-Thinking-2507's kind of template: the prompt opens <think>."""
    assert THINKING_TEMPLATE != CHAT_TEMPLATE
    shutil.copytree(source, target)
    (target / "chat_template.jinja").write_text(THINKING_TEMPLATE)
    return target


@pytest.fixture
def app(with_demo_models: Path, tmp_path: Path, loop: qasync.QEventLoop
        ) -> Iterator[AppController]:
    think_dir = thinking_copy(with_demo_models / "models" / "demo-tiny-b",
                              tmp_path / "demo-think")
    config = tmp_path / "config.yaml"
    config.write_text(f"model_switching:\n  switch_timeout_seconds: {LOAD_S:.0f}\n"
                      "models:\n  demo-tiny-a: {mode: base}\n"
                      f"  demo-tiny-b: {{mode: thinking, path: {think_dir}}}\n")
    runtime = Runtime.create(config_file=config, simulate=PROFILE,
                             history_path=with_demo_models / "history.sqlite3")
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))
    loop.run_until_complete(runtime.close())


@pytest.mark.vllm
def test_conversation_seed_edit_thinking_and_reopen(app: AppController, tmp_path: Path,
                                                    loop: qasync.QEventLoop,
                                                    qtbot: QtBot) -> None:
    pg = app.playground
    sent: list[GenerationRequest] = []
    pg.request_sent.connect(sent.append)
    finished: list[tuple[int, object]] = []
    pg.reply_finished.connect(lambda i, r: finished.append((i, r)))
    models = app.runtime.manager.catalog

    async def ask(text: str) -> None:
        qtbot.keyClicks(pg.prompt, text)
        qtbot.keyClick(pg.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert pg.busy
        await wait_until(lambda: not pg.busy, LOAD_S, f"the reply to {text!r}")
        assert pg.conversation.turns[-1].reply is not None, pg.stats.text()

    async def body() -> None:
        app.start(autoload=False)
        app.window.tabs.setCurrentWidget(pg)
        pg.model.setCurrentIndex(pg.model.findData("demo-tiny-a"))
        assert pg.think.isEnabled()  # a hybrid: the toggle is offered, on by default
        assert pg.think.isChecked()
        qtbot.mouseClick(pg.think, Qt.MouseButton.LeftButton)
        assert not pg.think.isChecked()
        pg.system.setPlainText("You are a terse assistant.")
        pg.max_tokens.setValue(12)
        pg.temperature.setValue(1.0)
        pg.top_p.setValue(0.9)
        pg.top_k.setValue(40)
        pg.seed.setValue(1234)
        pg.presence_penalty.setValue(0.3)
        pg.frequency_penalty.setValue(0.2)
        for text in ("First question.", "Second question.", "Third question."):
            await ask(text)

        # The third request carries the system prompt, every turn and every knob.
        turns = pg.conversation.turns
        last = sent[-1]
        assert last.messages == (
            ChatMessage("system", "You are a terse assistant."),
            ChatMessage("user", "First question."),
            ChatMessage("assistant", turns[0].reply.text),
            ChatMessage("user", "Second question."),
            ChatMessage("assistant", turns[1].reply.text),
            ChatMessage("user", "Third question."))
        assert (last.temperature, last.top_p, last.top_k, last.seed, last.presence_penalty,
                last.frequency_penalty, last.thinking, last.max_tokens) == (
            1.0, 0.9, 40, 1234, 0.3, 0.2, False, 12)
        # ...and the engine rendered all of it: its prompt length is the tokenizer's count.
        model_dir = models.local_path(models.get("demo-tiny-a"))
        third = turns[2].reply
        assert third.prompt_tokens == PromptCounter().count(model_dir, last.messages, False)
        assert third.prompt_tokens > turns[0].reply.prompt_tokens
        assert [i for i, _r in finished] == [0, 1, 2]
        assert finished[-1][1] is third
        assert third.model == "demo-tiny-a"
        assert third.tokens > 0
        assert third.first_token_s is not None
        assert "tok/s" in pg.transcript.toPlainText()

        # Same seed, same prompt, same model: the same reply. A random seed: another one.
        qtbot.mouseClick(pg.regenerate_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: not pg.busy, REPLY_S, "the regenerated reply")
        assert turns[2].reply.text == third.text
        assert sent[-1].messages == last.messages
        pg.seed.setValue(-1)
        qtbot.mouseClick(pg.regenerate_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: not pg.busy, REPLY_S, "the unseeded reply")
        assert turns[2].reply.text != third.text

        # Edit the second turn: what followed it goes, the edited turn is answered.
        pg.transcript.anchorClicked.emit(QUrl("edit:1"))
        assert pg.prompt.toPlainText() == "Second question."
        pg.prompt.selectAll()
        qtbot.keyClicks(pg.prompt, "Second question, edited.")
        qtbot.mouseClick(pg.send_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: not pg.busy, REPLY_S, "the edited turn's reply")
        assert [t.user for t in pg.conversation.turns] == ["First question.",
                                                           "Second question, edited."]
        assert sent[-1].messages[-1] == ChatMessage("user", "Second question, edited.")
        assert "Third question." not in pg.transcript.toPlainText()

        # Save, clear, reopen: the same conversation and settings.
        path = tmp_path / "chat.json"
        assert pg.save_to(path)
        qtbot.mouseClick(pg.clear_button, Qt.MouseButton.LeftButton)
        assert not pg.conversation.turns
        assert pg.open_from(path)
        assert pg.conversation.turns == Conversation.load(path).turns
        assert pg.conversation.turns[1].reply is not None
        assert pg.conversation.turns[1].reply.model == "demo-tiny-a"

        # A thinking model: the toggle is on and fixed; the reply's reasoning goes to its pane.
        pg.clear()
        pg.model.setCurrentIndex(pg.model.findData("demo-tiny-b"))
        assert pg.think.isChecked()
        assert not pg.think.isEnabled()
        pg.max_tokens.setValue(24)
        await ask("Think about this.")
        reply = pg.conversation.turns[-1].reply
        assert app.runtime.manager.active_model == "demo-tiny-b"
        assert reply.thinking
        assert pg.thinking.toPlainText() == reply.thinking
        assert reply.thinking not in pg.answer.toPlainText()
        assert "▸ thinking" in pg.transcript.toPlainText()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 30)

    loop.run_until_complete(body())
