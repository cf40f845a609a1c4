"""Model uptime: the share of time a model was ready to answer, against the record's 95 % target.

Definition. Each run of vrampilot that holds the model (the app, a `generate` with no app) is a
session. The recorder writes the session's state whenever it changes:
  ready      a model is loaded and no switch is under way: requests are answered
  switching  a switch is unloading, waiting for memory, checking, loading or warming up
  down       no model, after a crash, an emergency unload or a switch that loaded nothing
  idle       no model because none was asked for yet or the user unloaded it
Uptime = ready / (ready + switching + down), counted from the session's first `ready` (the load
at start-up is start-up, not an outage) to its end. Idle time is not counted: nobody wanted a
model then. A session that ended without saying so (killed) counts up to the last time it was
seen (it refreshes that at most every SEEN_EVERY_S while it runs).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.history_store import HistoryStore
from core.manager.events import StateChange, SwitchEvent, SwitchPhase

STATES = ("ready", "switching", "down", "idle")
UPTIME_TARGET = 0.95  # the record's "Model Uptime: 95%+ availability"
SEEN_EVERY_S = 30.0
_IN_PROGRESS = frozenset({SwitchPhase.UNLOADING, SwitchPhase.WAITING_FOR_MEMORY,
                          SwitchPhase.CHECKING, SwitchPhase.LOADING, SwitchPhase.WARMING_UP})
_LOST = frozenset({StateChange.CRASHED, StateChange.UNLOADED, SwitchPhase.FAILED,
                   SwitchPhase.CANCELLED})


class UptimeRecorder:
    """Writes one session's state changes. Feed it the manager's events (`on_event`) and call
    `observe()` now and then (the sampler's tick): an unload by the user emits no event."""

    def __init__(self, store: HistoryStore, active_model: Callable[[], str | None],
                 switching: Callable[[], bool], *, clock: Callable[[], float] = time.time,
                 session: str | None = None) -> None:
        self.store = store
        self.session = session or uuid.uuid4().hex
        self._active_model = active_model
        self._switching = switching
        self._clock = clock
        self._current: tuple[str, str | None] | None = None
        self._without_model = "idle"  # what "no model" means now: idle until something is lost
        self._seen = 0.0
        self._started = False  # the session's row is written with its first state change
        self._ended = False

    def on_event(self, event: SwitchEvent) -> None:
        """A manager event: a switch phase or a change of the active model."""
        if self._ended:
            return
        if event.phase in _IN_PROGRESS:
            self._set("switching", None)
        elif event.phase == SwitchPhase.READY:
            self._without_model = "idle"
            self._set("ready", event.target)
        elif event.phase in _LOST:
            self._without_model = "down"
            model = self._active_model()
            self._set("ready" if model else "down", model)
        else:
            self._from_manager()

    def observe(self) -> None:
        """Read the manager now (between switches) and refresh the session's last-seen time."""
        if self._ended:
            return
        if not self._switching():
            self._from_manager()
        now = self._clock()
        if self._started and now - self._seen >= SEEN_EVERY_S:
            self._seen = now
            self.store.changed("UPDATE uptime_sessions SET last_seen = ? WHERE session = ?",
                               (now, self.session))

    def end(self) -> None:
        """The session ends (the app or command closes); nothing is written after this."""
        if self._ended:
            return
        self._ended = True
        if not self._started:
            return
        now = self._clock()
        self.store.changed("UPDATE uptime_sessions SET last_seen = ?, ended = 1 "
                           "WHERE session = ?", (now, self.session))

    def _from_manager(self) -> None:
        model = self._active_model()
        if model is not None:
            self._set("ready", model)
        elif self._current is not None and self._current[0] == "ready":
            # The model went without an event: the user unloaded it.
            self._set("idle", None)
        else:
            self._set(self._without_model, None)

    def _set(self, state: str, model: str | None) -> None:
        if self._ended or self._current == (state, model):
            return
        self._current = (state, model)
        now = self._clock()
        if not self._started:
            self._started = True
            self.store.write("INSERT INTO uptime_sessions (session, started_at, last_seen) "
                             "VALUES (?, ?, ?)", (self.session, now, now))
        self.store.write("INSERT INTO model_states (session, at, state, model) VALUES (?, ?, ?, ?)",
                         (self.session, now, state, model))
        self.store.changed("UPDATE uptime_sessions SET last_seen = ? WHERE session = ?",
                           (now, self.session))


@dataclass(frozen=True)
class Uptime:
    """Seconds in each state (counted part only) over every session, and the share ready."""

    seconds: dict[str, float]
    ready_by_model: dict[str, float] = field(default_factory=dict)
    sessions: int = 0
    target: float = UPTIME_TARGET

    @property
    def counted_s(self) -> float:
        return sum(v for k, v in self.seconds.items() if k != "idle")

    @property
    def share(self) -> float | None:
        """Ready time over counted time; None before any model was ever ready."""
        counted = self.counted_s
        return self.seconds.get("ready", 0.0) / counted if counted > 0 else None

    @property
    def meets_target(self) -> bool | None:
        share = self.share
        return None if share is None else share >= self.target

    def as_dict(self) -> dict[str, object]:
        return {"share": self.share, "target": self.target, "meets_target": self.meets_target,
                "counted_s": self.counted_s, "seconds": dict(self.seconds),
                "ready_by_model": dict(self.ready_by_model), "sessions": self.sessions}


def uptime(store: HistoryStore, now: float | None = None,
           live_session: str | None = None) -> Uptime:
    """Uptime over every recorded session (see the module's definition). The live session (this
    process's own) counts up to `now`; every other one up to its last-seen time."""
    now = time.time() if now is None else now
    ends = {s: float(seen) for s, seen in
            store.query("SELECT session, last_seen FROM uptime_sessions")}
    if live_session is not None:
        ends[live_session] = now
    rows = store.query("SELECT session, at, state, model FROM model_states ORDER BY session, id")
    return _sum(rows, ends)


def _sum(rows: Iterable[tuple[Any, ...]], ends: dict[str, float]) -> Uptime:
    seconds = dict.fromkeys(STATES, 0.0)
    by_model: dict[str, float] = {}
    by_session: dict[str, list[tuple[float, str, str | None]]] = {}
    for session, at, state, model in rows:
        by_session.setdefault(str(session), []).append(
            (float(at), str(state), None if model is None else str(model)))
    counted_sessions = 0
    for session, changes in by_session.items():
        end = ends.get(session, changes[-1][0])
        started = False
        for i, (at, state, model) in enumerate(changes):
            until = changes[i + 1][0] if i + 1 < len(changes) else max(at, end)
            started = started or state == "ready"
            if not started or state not in seconds:
                continue
            span = max(0.0, until - at)
            seconds[state] += span
            if state == "ready" and model is not None:
                by_model[model] = by_model.get(model, 0.0) + span
        counted_sessions += started
    return Uptime(seconds, dict(sorted(by_model.items())), counted_sessions)
