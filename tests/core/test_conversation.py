"""The playground's conversation model: the engine request it builds, editing, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.conversation import Conversation, ConversationFileError, Reply, Sampling
from core.engine.base import ChatMessage


def three_turns() -> Conversation:
    c = Conversation(system="You are terse.",
                     sampling=Sampling(temperature=0.2, top_p=0.8, top_k=20, max_tokens=64,
                                       stop=("END",), seed=7, presence_penalty=0.5,
                                       frequency_penalty=0.25, thinking=True))
    for i in range(3):
        c.ask(f"question {i}")
        if i < 2:
            c.finish(Reply(f"answer {i}", thinking=f"why {i}", model="demo-tiny-a", tokens=5))
    return c


def test_a_three_turn_request_carries_every_turn_the_system_prompt_and_the_settings() -> None:
    req = three_turns().request("r1")
    assert req.messages == (
        ChatMessage("system", "You are terse."),
        ChatMessage("user", "question 0"), ChatMessage("assistant", "answer 0"),
        ChatMessage("user", "question 1"), ChatMessage("assistant", "answer 1"),
        ChatMessage("user", "question 2"))
    assert (req.temperature, req.top_p, req.top_k, req.max_tokens, req.stop, req.seed,
            req.presence_penalty, req.frequency_penalty, req.thinking, req.request_id) == (
        0.2, 0.8, 20, 64, ("END",), 7, 0.5, 0.25, True, "r1")


def test_edit_drops_what_followed_and_regenerate_drops_the_last_reply() -> None:
    c = three_turns()
    c.edit(1, "question 1, again")
    assert [t.user for t in c.turns] == ["question 0", "question 1, again"]
    assert c.pending
    assert c.request("r").messages[-1] == ChatMessage("user", "question 1, again")
    c.finish(Reply("new answer"))
    c.regenerate()
    assert c.pending
    assert c.turns[0].reply is not None
    with pytest.raises(ValueError, match="still waiting"):
        c.ask("not while a turn waits")
    c.clear()
    assert not c.turns
    assert not c.pending
    with pytest.raises(ValueError, match="no user turn"):
        c.request("r")


def test_an_empty_system_prompt_is_not_sent() -> None:
    c = Conversation(system="  ")
    c.ask("hi")
    assert c.request("r").messages == (ChatMessage("user", "hi"),)


def test_save_and_open_give_the_same_conversation(tmp_path: Path) -> None:
    c = three_turns()
    c.turns[0].reply = Reply("a", model="m", routing={"model_id": "m"},
                             sampling=Sampling(seed=3, stop=("x",)))
    path = tmp_path / "chat.json"
    c.save(path)
    assert Conversation.load(path) == c


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not valid JSON"),
    ('{"format": "something else"}', "not a vrampilot conversation"),
    ('{"format": "vrampilot-conversation", "version": 1}', "missing key 'turns'"),
    ('{"format": "vrampilot-conversation", "version": 1, "turns": [],'
     ' "sampling": {"temprature": 1}}', "unknown sampling key 'temprature'"),
])
def test_a_bad_file_is_named_with_its_problem(tmp_path: Path, content: str,
                                              problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConversationFileError) as err:
        Conversation.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert problem in str(err.value)
    assert path.read_text() == content  # left as it was


def test_a_failed_save_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    three_turns().save(path)
    before = path.read_text()
    with pytest.raises(ConversationFileError):
        three_turns().save(tmp_path / "missing-dir" / "chat.json")
    assert path.read_text() == before
    assert json.loads(before)["format"] == "vrampilot-conversation"


def test_markdown_export_has_turns_replies_timings_and_folded_thinking() -> None:
    c = three_turns()
    c.turns[0].reply = Reply("```python\nprint(1)\n```", thinking="hmm", model="demo-tiny-a",
                             tokens=9, first_token_s=0.012, elapsed_s=0.1)
    md = c.to_markdown()
    assert "## System\n\nYou are terse." in md
    assert "## User 1\n\nquestion 0" in md
    assert "## Assistant 1 (demo-tiny-a · 9 tokens · first token 12 ms)" in md
    assert "<details><summary>Thinking</summary>\n\nhmm" in md
    assert "```python\nprint(1)\n```" in md
    assert "seed 7" in md
    assert "stop 'END'" in md
