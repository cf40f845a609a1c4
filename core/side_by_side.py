"""The same request on two or three models, one after the other (one model in memory at a time):
each model is made active by the scheduler and the manager (the switch is recorded in history
like any other), then the reply streams. Each run reports its reply, its timings and what its
switch cost, phase by phase."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace

from core.chat_session import ChatSession, Target
from core.engine.base import GenerationDelta, GenerationRequest
from core.scheduler import Admission

MAX_MODELS = 3


@dataclass
class ModelRun:
    """One model's part of a side-by-side run; filled in as it goes."""

    model: str
    text: str = ""
    thinking: str = ""
    tokens: int = 0
    first_token_s: float | None = None
    tokens_per_s: float | None = None
    switch_outcome: str | None = None  # "noop" when the model was already active
    switch_s: float | None = None
    switch_phases: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    done: bool = False


async def side_by_side(chat: ChatSession, request: GenerationRequest, models: list[str],
                       private: bool = False) -> AsyncIterator[tuple[int, ModelRun]]:
    """Run `request` on each model in turn; yields (column, run) after every change. A model
    that fails is reported in its column and the next one still runs."""
    if not 2 <= len(models) <= MAX_MODELS:
        raise ValueError(f"side by side takes 2 to {MAX_MODELS} models, not {len(models)}")
    for column, model in enumerate(models):
        run = ModelRun(model)
        admitted: list[Admission] = []
        one = replace(request, request_id=f"{request.request_id}-{column}")
        try:
            async for delta in chat.stream(one, Target(model, "manual"), private,
                                           on_admitted=admitted.append):
                if run.switch_outcome is None and admitted:
                    _switch_cost(chat, run, admitted[0])
                _add(run, delta)
                yield column, run
        except Exception as exc:  # noqa: BLE001 - one model failing leaves the others to run
            run.error = str(exc)
        if run.switch_outcome is None and admitted:
            _switch_cost(chat, run, admitted[0])
        run.done = True
        yield column, run


def _add(run: ModelRun, delta: GenerationDelta) -> None:
    run.text += delta.text
    run.thinking += delta.thinking
    run.tokens = delta.tokens
    run.first_token_s = delta.first_token_s
    run.tokens_per_s = delta.tokens_per_s


def _switch_cost(chat: ChatSession, run: ModelRun, admission: Admission) -> None:
    result = admission.result
    run.switch_outcome = result.outcome
    run.switch_s = 0.0 if result.outcome == "noop" else result.total_s
    ids = set(result.history_ids)
    if ids:
        for record in chat.history.recent(50):
            if record.id in ids and record.to_model == run.model:
                run.switch_phases = dict(record.phases)
