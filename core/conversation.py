"""A multi-turn conversation for the playground (Qt-free): the system prompt, the user turns and
their replies, the sampling settings; builds the engine request; saved and opened as JSON,
exported as Markdown.

A reply keeps what the user needs to reproduce and compare it: the model that wrote it, the
router's decision (when Auto chose), the request's settings and its timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.engine.base import ChatMessage, GenerationRequest

FORMAT = "vrampilot-conversation"
FORMAT_VERSION = 1


class ConversationFileError(ValueError):
    """A conversation file that cannot be read; str() names the file and what is wrong."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Sampling:
    """The request settings a user can set; defaults are vLLM's where it has one."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0: off
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    thinking: bool | None = None  # None: the model's own default (its chat template decides)


@dataclass(frozen=True)
class Reply:
    """One finished (or stopped) assistant reply and how it was made."""

    text: str
    thinking: str = ""
    model: str | None = None
    tokens: int = 0
    prompt_tokens: int | None = None
    first_token_s: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float = 0.0
    finish_reason: str | None = None
    routing: dict[str, Any] | None = None  # RoutingDecision.as_dict() when the router chose
    sampling: Sampling | None = None  # the settings this reply was generated with


@dataclass
class Turn:
    user: str
    reply: Reply | None = None


@dataclass
class Conversation:
    """System prompt + turns. The last turn may still wait for its reply (the one to generate)."""

    system: str = ""
    turns: list[Turn] = field(default_factory=list)
    sampling: Sampling = field(default_factory=Sampling)
    model: str | None = None  # None: Auto (the router picks)
    task_type: str = "unknown"
    private: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    # -- editing -------------------------------------------------------------------------------

    def ask(self, text: str) -> None:
        """Add a user turn (its reply is generated next)."""
        if self.turns and self.turns[-1].reply is None:
            raise ValueError("the last turn is still waiting for its reply")
        self.turns.append(Turn(text))

    def edit(self, index: int, text: str) -> None:
        """Replace user turn `index`; what came after it is dropped (it answered the old text)."""
        if not 0 <= index < len(self.turns):
            raise IndexError(f"no user turn {index}")
        del self.turns[index + 1:]
        self.turns[index] = Turn(text)

    def regenerate(self) -> None:
        """Drop the last reply, so the last user turn is answered again."""
        if not self.turns:
            raise IndexError("nothing to regenerate")
        self.turns[-1].reply = None

    def finish(self, reply: Reply) -> None:
        """Store the reply to the last user turn."""
        if not self.turns or self.turns[-1].reply is not None:
            raise ValueError("no user turn waits for a reply")
        self.turns[-1].reply = reply

    def clear(self) -> None:
        self.turns.clear()

    @property
    def pending(self) -> bool:
        """Whether the last user turn still needs its reply."""
        return bool(self.turns) and self.turns[-1].reply is None

    # -- the engine request --------------------------------------------------------------------

    def messages(self, draft: str | None = None) -> tuple[ChatMessage, ...]:
        """The chat so far: the system prompt, every turn and reply (a reply's thinking is not
        sent back, as Qwen3's template drops it), then `draft` as a new user turn if given."""
        out = [ChatMessage("system", self.system)] if self.system.strip() else []
        for turn in self.turns:
            out.append(ChatMessage("user", turn.user))
            if turn.reply is not None:
                out.append(ChatMessage("assistant", turn.reply.text))
        if draft is not None:
            out.append(ChatMessage("user", draft))
        return tuple(out)

    def request(self, request_id: str) -> GenerationRequest:
        """The request for the pending turn, with every earlier turn and the system prompt."""
        if not self.pending:
            raise ValueError("no user turn waits for a reply")
        s = self.sampling
        return GenerationRequest(
            messages=self.messages(), max_tokens=s.max_tokens, temperature=s.temperature,
            top_p=s.top_p, top_k=s.top_k, seed=s.seed, stop=s.stop,
            presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty,
            thinking=s.thinking, request_id=request_id)

    # -- files ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Conversation:
        """Raises ValueError/TypeError/KeyError naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a vrampilot conversation (no \"format\": \"{FORMAT}\")")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r}")
        turns = []
        for i, raw in enumerate(data["turns"]):
            if not isinstance(raw, dict) or not isinstance(raw.get("user"), str):
                raise ValueError(f"turns[{i}] has no user text")
            reply = raw.get("reply")
            if reply is not None:
                reply = dict(reply)
                if reply.get("sampling") is not None:
                    reply["sampling"] = _sampling(reply["sampling"])
                reply = Reply(**reply)
            turns.append(Turn(raw["user"], reply))
        system = data.get("system", "")
        if not isinstance(system, str):
            raise ValueError("system is not text")
        return cls(system=system, turns=turns, sampling=_sampling(data.get("sampling", {})),
                   model=data.get("model"), task_type=str(data.get("task_type", "unknown")),
                   private=bool(data.get("private", False)),
                   id=str(data.get("id") or uuid.uuid4().hex))

    def save(self, path: Path | str) -> None:
        """Write as JSON, atomically: a failed write never leaves a half-written file."""
        target = Path(path)
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".conversation-", dir=target.parent)
        except OSError as exc:
            raise ConversationFileError(target, f"cannot write there ({exc.strerror})") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ConversationFileError(target, f"cannot write ({exc.strerror})") from exc

    @classmethod
    def load(cls, path: Path | str) -> Conversation:
        """Read a saved conversation; ConversationFileError names the file and the problem."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConversationFileError(path, f"cannot read ({exc.strerror})") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConversationFileError(path, f"not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConversationFileError(path, f"not a usable conversation: {what}") from exc

    def to_markdown(self) -> str:
        """The conversation for sharing: settings, each turn, each reply with its model and
        timings, thinking in a collapsed block."""
        s = self.sampling
        lines = ["# vrampilot conversation", ""]
        lines.append(f"- model: {self.model or 'Auto (router)'}; task type: {self.task_type}")
        settings = (f"temperature {s.temperature}, top-p {s.top_p}, top-k {s.top_k}, "
                    f"max tokens {s.max_tokens}, seed {s.seed}, presence penalty "
                    f"{s.presence_penalty}, frequency penalty {s.frequency_penalty}, thinking "
                    f"{'model default' if s.thinking is None else s.thinking}")
        if s.stop:
            settings += ", stop " + ", ".join(repr(x) for x in s.stop)
        lines += [f"- settings: {settings}", ""]
        if self.system.strip():
            lines += ["## System", "", self.system, ""]
        for i, turn in enumerate(self.turns, 1):
            lines += [f"## User {i}", "", turn.user, ""]
            r = turn.reply
            if r is None:
                continue
            lines += [f"## Assistant {i} ({reply_stats(r)})", ""]
            if r.thinking:
                lines += ["<details><summary>Thinking</summary>", "", r.thinking, "",
                          "</details>", ""]
            lines += [r.text, ""]
        return "\n".join(lines)


def reply_stats(r: Reply) -> str:
    """One line: model, tokens, first-token time, tokens/s."""
    parts = [r.model or "?", f"{r.tokens} tokens"]
    if r.first_token_s is not None:
        parts.append(f"first token {r.first_token_s * 1000:.0f} ms")
    if r.tokens_per_s is not None:
        parts.append(f"{r.tokens_per_s:.1f} tok/s")
    if r.finish_reason == "abort":
        parts.append("stopped")
    return " · ".join(parts)


def _sampling(raw: Any) -> Sampling:
    if not isinstance(raw, dict):
        raise ValueError("sampling is not an object")
    known = {f.name for f in dataclasses.fields(Sampling)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown sampling key {sorted(unknown)[0]!r}")
    values = dict(raw)
    if "stop" in values:
        values["stop"] = tuple(values["stop"])
    return Sampling(**values)
