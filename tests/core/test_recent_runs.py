"""Recent runs: off by default, nothing written while off, forget deletes them all."""

from __future__ import annotations

from pathlib import Path

from core.conversation import Conversation, Reply
from core.recent_runs import RecentRuns


def chat(text: str) -> Conversation:
    c = Conversation()
    c.ask(text)
    c.finish(Reply("answer", model="demo-tiny-a"))
    return c


def test_off_by_default_and_nothing_is_written(tmp_path: Path) -> None:
    runs = RecentRuns(tmp_path)
    assert not runs.enabled
    assert not runs.remember(chat("secret prompt"))
    assert not (tmp_path / "recent_runs.json").exists()


def test_kept_newest_first_updated_in_place_and_forgotten(tmp_path: Path) -> None:
    runs = RecentRuns(tmp_path, keep=2)
    runs.set_enabled(True)
    a, b, c = chat("first\nmore"), chat("second"), chat("third")
    for conv in (a, b, c):
        assert runs.remember(conv)
    again = RecentRuns(tmp_path, keep=2)  # read back from disk
    assert again.enabled
    assert [r.title for r in again.runs()] == ["third", "second"]
    b.ask("follow-up")
    again.remember(b)
    assert [r.title for r in again.runs()] == ["second", "third"]
    assert again.runs()[0].conversation == b
    again.forget()
    assert RecentRuns(tmp_path).runs() == []
    assert "secret" not in (tmp_path / "recent_runs.json").read_text()
    assert RecentRuns(tmp_path).enabled  # forgetting does not switch it off


def test_an_unreadable_file_is_reported_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "recent_runs.json"
    path.write_text("{broken")
    runs = RecentRuns(tmp_path)
    assert runs.problem is not None
    assert str(path) in runs.problem
    runs.set_enabled(True)
    runs.remember(chat("x"))
    assert path.read_text() == "{broken"
