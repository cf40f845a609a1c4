"""The routing log: every request the router decided, and the user's verdict on it.

One row per routed request in the history database (task type, complexity, the hardware state
the decision was made against, the router's model and the model that answered, tokens/s, outcome).
After a reply the user may mark it "good" or "wrong_model" and name the model that should have
answered; the verdict is stored on the request's row. `performance_tracking.track_routing` (the
record's `track_task_routing_accuracy`) turns the logging off: then nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.history_store import HistoryStore
from core.router.selection import RoutingDecision

# How a routed request ended. answered: the reply finished; stopped: the user (or client) ended
# it early; failed: the engine or the switch failed; no_model: the router found nothing usable.
OUTCOMES = ("answered", "stopped", "failed", "no_model")
VERDICTS = ("good", "wrong_model")

# The record's task tiers (Simple 40 %, Standard 35 %, Complex 20 %, Expert 5 %), read from the
# complexity score: a request belongs to the tier whose TaskComplexity level (SIMPLE 0.1, MODERATE
# 0.4, COMPLEX 0.7, EXPERT 0.9) is nearest, a tie going to the lower one. So the record's own task
# types land where its comments put them: simple_extraction 0.1 simple, standard_parsing 0.3 and
# unknown 0.4 standard, complex_reasoning 0.7 and multi_step_analysis 0.8 complex, edge cases 0.9
# expert. Upper bounds (inclusive) of each tier but the last:
TIER_BOUNDS = (("simple", 0.25), ("standard", 0.55), ("complex", 0.8))
TIERS = ("simple", "standard", "complex", "expert")
TIER_ESTIMATE = {"simple": 0.40, "standard": 0.35, "complex": 0.20, "expert": 0.05}


def tier_of(complexity: float) -> str:
    """The record's tier for a complexity score (see TIER_BOUNDS)."""
    for name, upper in TIER_BOUNDS:
        if complexity <= upper + 1e-9:
            return name
    return "expert"


class FeedbackError(ValueError):
    """Feedback that cannot be stored: one sentence saying which value and why."""


@dataclass(frozen=True)
class RoutedRequest:
    """One logged routed request, with its verdict when the user gave one."""

    id: int
    at: float
    request_id: str
    task_type: str
    complexity: float
    private: bool
    free_bytes: int | None
    total_bytes: int | None
    temperature_c: float | None
    band: str | None
    decided_model: str | None
    answered_model: str | None
    tokens: int | None
    tokens_per_s: float | None
    first_token_s: float | None
    outcome: str
    verdict: str | None = None
    wanted_model: str | None = None
    feedback_at: float | None = None

    @property
    def tier(self) -> str:
        return tier_of(self.complexity)

    @property
    def judged_model(self) -> str | None:
        """The model the user judged: the one that answered (the router's choice when a
        fallback put another model in its place is kept in decided_model)."""
        return self.answered_model or self.decided_model

    @property
    def router_right(self) -> bool | None:
        """Whether the user said the router chose well; None: no verdict yet."""
        return None if self.verdict is None else self.verdict == "good"


_COLUMNS = ("id", "at", "request_id", "task_type", "complexity", "private", "free_bytes",
            "total_bytes", "temperature_c", "band", "decided_model", "answered_model", "tokens",
            "tokens_per_s", "first_token_s", "outcome", "verdict", "wanted_model", "feedback_at")


class RoutingLog:
    """Writes and reads the routed_requests table of a HistoryStore."""

    def __init__(self, store: HistoryStore, *, enabled: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.enabled = enabled
        self._clock = clock

    def record(self, request_id: str, decision: RoutingDecision, *, answered_model: str | None,
               outcome: str, tokens: int | None = None, tokens_per_s: float | None = None,
               first_token_s: float | None = None) -> int | None:
        """Log one routed request as it ended; returns its row id (None: logging is off)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        if not self.enabled:
            return None
        hw = decision.hardware
        return self.store.write(
            "INSERT INTO routed_requests (at, request_id, task_type, complexity, private, "
            "free_bytes, total_bytes, temperature_c, band, decided_model, answered_model, "
            "tokens, tokens_per_s, first_token_s, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self._clock(), request_id, decision.complexity.task_type, decision.score,
             int(decision.private), hw.free_bytes, hw.total_bytes, hw.temperature_c,
             decision.band, decision.model_id, answered_model, tokens, tokens_per_s,
             first_token_s, outcome))

    def find(self, request_id: str) -> RoutedRequest | None:
        """The logged request with this id (the newest, should an id repeat), else None."""
        rows = self.store.query(
            f"SELECT {', '.join(_COLUMNS)} FROM routed_requests WHERE request_id = ? "
            "ORDER BY id DESC LIMIT 1", (request_id,))
        return _row(rows[0]) if rows else None

    def all(self) -> list[RoutedRequest]:
        """Every logged request, oldest first."""
        rows = self.store.query(f"SELECT {', '.join(_COLUMNS)} FROM routed_requests ORDER BY id")
        return [_row(r) for r in rows]

    def give_feedback(self, request_id: str, verdict: str, wanted_model: str | None,
                      known_models: tuple[str, ...]) -> RoutedRequest:
        """Store the user's verdict on a logged request (a second verdict replaces the first).

        "good": the model that answered was right (wanted_model, if given, must be it).
        "wrong_model": wanted_model names the catalog model that should have answered.
        FeedbackError, in one sentence, for an unknown request, verdict or model.
        """
        if verdict not in VERDICTS:
            raise FeedbackError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        request = self.find(request_id)
        if request is None:
            why = ("routing feedback is off (performance_tracking.track_routing)"
                   if not self.enabled else "only requests the router decided are logged")
            raise FeedbackError(f"no routed request {request_id!r} in the routing log ({why})")
        judged = request.judged_model
        if verdict == "good":
            if wanted_model not in (None, judged):
                raise FeedbackError(f"a 'good' verdict says {judged} was right; to name "
                                    f"{wanted_model} use 'wrong_model'")
            wanted_model = judged
        else:
            if not wanted_model:
                raise FeedbackError("a 'wrong_model' verdict needs the model that should have "
                                    "answered")
            if wanted_model not in known_models:
                raise FeedbackError(f"unknown model {wanted_model!r} named as the one that "
                                    f"should have answered; known models: "
                                    f"{', '.join(known_models)}")
            if wanted_model == judged:
                raise FeedbackError(f"{wanted_model} is the model that answered; mark the reply "
                                    "'good' instead")
        self.store.changed(
            "UPDATE routed_requests SET verdict = ?, wanted_model = ?, feedback_at = ? "
            "WHERE id = ?", (verdict, wanted_model, self._clock(), request.id))
        found = self.find(request_id)
        assert found is not None
        return found


def _row(row: tuple[object, ...]) -> RoutedRequest:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["private"] = bool(values["private"])
    return RoutedRequest(**values)  # type: ignore[arg-type]
