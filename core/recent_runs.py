"""Recent playground runs, kept on this computer only when the user turns it on (off by default:
prompts can be private). One JSON file in the data dir holds the switch and the runs; "forget"
deletes every run at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.conversation import Conversation, ConversationFileError

FILE_NAME = "recent_runs.json"
KEEP = 20


@dataclass(frozen=True)
class RecentRun:
    id: str
    saved_at: float  # unix time
    title: str  # the first user turn, shortened
    conversation: Conversation


class RecentRuns:
    """The list behind the playground's Recent menu. Nothing is written while disabled."""

    def __init__(self, folder: Path, keep: int = KEEP) -> None:
        self.path = folder / FILE_NAME
        self._keep = keep
        self.enabled = False
        self._runs: list[dict[str, Any]] = []
        self.problem: str | None = None  # an unreadable file: said once, left untouched
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.enabled = bool(data["enabled"])
            self._runs = [r for r in data["runs"] if isinstance(r, dict)]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.problem = f"{self.path}: cannot be read ({exc}); recent runs are not kept"
            self._runs = []

    def _write(self) -> None:
        if self.problem is not None:
            return  # never overwrite a file we could not read
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"enabled": self.enabled, "runs": self._runs}),
                       encoding="utf-8")
        tmp.replace(self.path)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        self._write()

    def remember(self, conversation: Conversation) -> bool:
        """Keep (or update) this conversation as the newest run; False when disabled."""
        if not self.enabled or not conversation.turns:
            return False
        first = conversation.turns[0].user.strip().splitlines()[0] if conversation.turns[
            0].user.strip() else "(empty)"
        entry = {"id": conversation.id, "saved_at": time.time(), "title": first[:80],
                 "conversation": conversation.to_dict()}
        self._runs = [entry] + [r for r in self._runs if r.get("id") != conversation.id]
        del self._runs[self._keep:]
        self._write()
        return True

    def runs(self) -> list[RecentRun]:
        """Newest first; a damaged entry is skipped."""
        out = []
        for r in self._runs:
            try:
                conversation = Conversation.from_dict(r["conversation"])
                out.append(RecentRun(str(r["id"]), float(r["saved_at"]), str(r["title"]),
                                     conversation))
            except (ValueError, TypeError, KeyError, ConversationFileError):
                continue
        return out

    def forget(self) -> None:
        """Delete every kept run (the on/off switch stays as it is)."""
        self._runs = []
        self._write()
