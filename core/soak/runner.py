"""Runs a soak: K concurrent requests on one model, back to back, through the ChatSession (the
same path as every other request), while the sampler records the device; then the report.

It ends when the planned time runs out, when stop() is called (the GUI's Stop, Ctrl+C), when a
request fails, or when another model is switched in: by the alert policy (under "act" a critical
alert may step down to a smaller model) or by the user. The report says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from core.chat_session import ChatSession
from core.engine.base import ChatMessage, EngineError, GenerationRequest
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.soak.recording import RequestRow, SoakRecording
from core.soak.report import build_report
from core.telemetry.alerts import AlertEvent
from core.telemetry.sampler import Sampler
from core.telemetry.snapshot import Sample

MAX_CONCURRENCY = 64
MAX_TOKENS_LIMIT = 32768
# Filler for the prompt: common words, about one token each in Qwen's (and most) tokenizers.
_WORDS = ("the", "heat", "of", "a", "long", "run", "and", "its", "cost", "in", "time", "power")


class SoakInputError(ValueError):
    """Settings a soak cannot run with; str() is one sentence naming the flag."""


@dataclass(frozen=True)
class SoakSettings:
    minutes: float
    concurrency: int = 1
    prompt_tokens: int = 256
    max_tokens: int = 256
    model: str | None = None

    def check(self) -> None:
        """SoakInputError naming the first bad value (the CLI's flag names)."""
        if not self.minutes > 0 or self.minutes != self.minutes or self.minutes == float("inf"):
            raise SoakInputError(f"--minutes must be a positive number, got {self.minutes}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise SoakInputError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, "
                                 f"got {self.concurrency}")
        if not 1 <= self.prompt_tokens <= MAX_TOKENS_LIMIT:
            raise SoakInputError(f"--prompt-tokens must be between 1 and {MAX_TOKENS_LIMIT}, "
                                 f"got {self.prompt_tokens}")
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise SoakInputError(f"--max-tokens must be between 1 and {MAX_TOKENS_LIMIT}, "
                                 f"got {self.max_tokens}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def soak_prompt(n: int, words: int) -> str:
    """About `words` tokens; the leading number makes each prompt differ from its first token,
    so prefix caching cannot skip the prefill of a sustained run."""
    filler = " ".join(_WORDS[i % len(_WORDS)] for i in range(max(0, words - 2)))
    return f"{n}: {filler}"


class SoakRunner:
    """One soak run. Use from the event loop the manager lives on; `run()` once."""

    def __init__(self, chat: ChatSession, sampler: Sampler, settings: SoakSettings, *,
                 device_label: str, simulated: bool,
                 clock: Callable[[], float] = time.time) -> None:
        settings.check()
        self.chat = chat
        self.sampler = sampler
        self.settings = settings
        self.device_label = device_label
        self.simulated = simulated
        self._clock = clock
        self.recording: SoakRecording | None = None
        self.model: str | None = None
        self._done = asyncio.Event()
        self._ended_by = "time"
        self._end_reason = ""
        self._workers: list[asyncio.Task[None]] = []
        self._stop_requested: tuple[str, str] | None = None

    # -- control --------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped by the user") -> None:
        """End the run now (the report covers what ran so far)."""
        self._end("stopped", reason)

    def note(self, level: str, text: str) -> None:
        """A runtime log line: alert actions, errors and warnings go into the report's events
        (advice arrives as the manager's ADVICE event, see _on_switch_event)."""
        if self.recording is not None and self.recording.ended is None and level in (
                "action", "error", "warning"):
            self.recording.add_event(self._clock(), level, text)

    @property
    def running(self) -> bool:
        return self.recording is not None and self.recording.ended is None

    # -- the run --------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        """Make the model active, generate until the end, return the report."""
        manager = self.chat.manager
        model = self.settings.model or manager.active_model
        if model is None:
            raise SoakInputError("no model is active and none was given: pass --model")
        manager.catalog.get(model)  # UnknownModelError lists the known ids
        # Load (if needed) before the clock starts: the soak measures generation, not a switch.
        result = await manager.switch_to(model, reason="manual")
        if not result.ok or manager.active_model != model:
            raise EngineError(f"could not make {model} active: " + "; ".join(result.errors))
        self.model = model
        recording = SoakRecording(self._clock())
        self.recording = recording
        if self._stop_requested is not None:  # Stop pressed while the model was loading
            self._end(*self._stop_requested)
        owns_sampler = not self.sampler.running
        unsubscribe_sampler = self.sampler.subscribe(self._on_sample)
        unsubscribe_manager = manager.subscribe(self._on_switch_event)
        if owns_sampler:
            self.sampler.start()
        try:
            self._workers = [asyncio.ensure_future(self._worker(k))
                             for k in range(self.settings.concurrency)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.settings.minutes * 60.0)
            self._end("time", f"the planned {self.settings.minutes:g} min ran out")
            await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            self._end("stopped", "stopped")  # no-op unless cancelled from outside
            for task in self._workers:
                task.cancel()
            unsubscribe_manager()
            unsubscribe_sampler()
            if owns_sampler:
                self.sampler.stop()
        return build_report(recording, self.settings.as_dict(), model=model,
                            device=self.device_label, simulated=self.simulated,
                            ended_by=self._ended_by, end_reason=self._end_reason)

    def _end(self, ended_by: str, reason: str) -> None:
        recording = self.recording
        if recording is None:
            self._stop_requested = (ended_by, reason)
            return
        if recording.ended is not None:
            return
        recording.ended = self._clock()
        self._ended_by, self._end_reason = ended_by, reason
        recording.add_event(recording.ended, "end", reason)
        self._done.set()
        # Cancelling a worker ends its stream (the engine aborts the request) or its queued
        # switch back to this model; nothing is counted after `ended`.
        for task in self._workers:
            if task is not asyncio.current_task():
                task.cancel()

    async def _worker(self, k: int) -> None:
        assert self.recording is not None
        assert self.model is not None
        recording, s = self.recording, self.settings
        n = 0
        while recording.ended is None:
            n += 1
            request = GenerationRequest(
                (ChatMessage("user", soak_prompt(n * s.concurrency + k, s.prompt_tokens)),),
                max_tokens=s.max_tokens, temperature=0.8, request_id=f"soak-{k}-{n}",
                ignore_eos=True)  # every request streams max_tokens: a steady load
            started = self._clock()
            tokens = 0
            first: float | None = None
            try:
                async for delta in self.chat.generate(request, self.model):
                    recording.add_tokens(self._clock(), delta.tokens - tokens)
                    tokens, first = delta.tokens, delta.first_token_s
            except EngineError as exc:
                self._end("error", f"a request failed: {exc}")
                return
            finally:
                if tokens:
                    recording.add_request(RequestRow(started, first, tokens,
                                                     self._clock() - started))

    # -- observers ------------------------------------------------------------------------------
    def _on_sample(self, sample: Sample, events: list[AlertEvent]) -> None:
        recording = self.recording  # sampler thread
        if recording is None or recording.ended is not None:
            return
        recording.on_sample(sample)
        for e in events:
            recording.add_event(e.at, "alert", f"{e.kind} {e.level} {e.change} "
                                               f"({e.metric} {e.value:.1f}, line {e.threshold:g})")

    def _on_switch_event(self, event: SwitchEvent) -> None:
        if event.phase == StateChange.ADVICE:
            self.note("advice", event.message)
        elif event.phase == SwitchPhase.PLANNING and event.target != self.model:
            # Another model is about to replace this one: the soak of this model is over (it
            # must not switch back on its next request).
            if event.reason == "alert":
                self._end("policy", f"the alert policy ('act') began switching "
                                    f"{event.from_model} -> {event.target}, ending the soak of "
                                    f"{self.model}")
            else:
                self._end("switched", f"a switch to {event.target} ({event.reason}) ended the "
                                      f"soak of {self.model}")
