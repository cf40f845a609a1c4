"""Property-based (hypothesis stateful): whatever the sequence of switch requests, failing loads,
failing warm-ups and generations, alerts and concurrent callers, at most one model is loaded at
every instant, the simulated GPU never holds more than its memory, nothing is left half-loaded, the
active model is one whose switch ended ready, and every finished switch and generation has a
history row.

Memory is checked on the device side: what the engines really loaded take (their fitted
utilization of the card) against what the simulated GPU reports, never the manager's own figure.

The default run is short (a few hundred steps). VRAMPILOT_SLOW_TESTS=1 runs at least 10,000 steps
(about a minute here).
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from core.chat_session import ChatSession, NoModelError
from core.engine.base import (
    ChatMessage,
    ContextTooLongError,
    EngineDiedError,
    EngineError,
    EngineTimeoutError,
    GenerationRequest,
    ModelDirectoryError,
)
from core.manager.alert_policy import AlertReactor
from core.manager.events import TERMINAL_PHASES, StateChange, SwitchEvent, SwitchPhase
from core.router import Router, load_router_config
from core.telemetry.config import load_monitoring_config
from tests.core.manager_fakes import RecordingEngine, make_rig
from tests.core.test_manager_alerts import alert

SLOW = os.environ.get("VRAMPILOT_SLOW_TESTS") == "1"
# Under `make mutate` this test runs for every mutant of the manager: a short run keeps the whole
# mutation run within its half hour (the targeted tests do most of the killing).
MUTATION = bool(os.environ.get("MUTANT_UNDER_TEST"))
SLOW_STEPS = 10_000
MODELS = ["qwen3-30b-a3b-instruct-2507", "qwen3-14b", "qwen3-8b", "qwen3-4b-instruct-2507",
          "demo-tiny-a", "demo-tiny-b"]
FAILURES = st.sampled_from([None, EngineTimeoutError("slow"), ContextTooLongError(32768, 2048),
                            ModelDirectoryError("/m", "broken")])
GENERATION_FAILURES = st.sampled_from([None, None, EngineDiedError("engine core died"),
                                       EngineTimeoutError("no token for 30 s")])


class ManagerMachine(RuleBasedStateMachine):
    steps = 0  # across every example of a run: the slow mode asserts the total

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.rig = make_rig(self.tmp.name)
        self.loop = asyncio.new_event_loop()
        hw = load_monitoring_config().hardware_monitoring
        self.reactor = AlertReactor(self.rig.manager, hw, thermal_persist_s=10, cooldown_s=5,
                                    clock=self.rig.clock)
        router = Router(load_router_config(self.rig.catalog), self.rig.catalog)
        self.chat = ChatSession(self.rig.manager, router, self.rig.history, self.rig.probe,
                                clock=self.rig.clock)
        self.generations_with_tokens = 0
        self.violations: list[str] = []
        self.requests = 0
        # Check the device on every event: "at every instant" of the switch pipeline.
        self.rig.manager.subscribe(self._on_event)

    def _on_event(self, event: SwitchEvent) -> None:
        # The manager swallows a subscriber's exceptions (a GUI bug must not stop a switch), so
        # violations seen here are kept and asserted by an invariant.
        try:
            self._check_device()
            if event.switch_id > 0 and event.phase is SwitchPhase.FAILED:
                # A switch that failed (a load, a warm-up) leaves its target unloaded at once,
                # not only once the next fallback happens to unload it.
                assert self.rig.manager.active_model != event.target
                assert event.target not in {e.entry.id for e in RecordingEngine.loaded}
        except AssertionError as exc:
            self.violations.append(f"{event.phase.value} {event.target}: {exc!r}")

    def _check_device(self) -> None:
        snap = self.rig.gpu.sample()
        total, used = snap.vram_total_bytes, snap.vram_used_bytes
        assert total is not None
        assert used is not None
        baseline = int(self.rig.gpu.profile.baseline_vram_used_mib * 1024**2)
        assert len(RecordingEngine.loaded) <= 1
        # What the loaded engines take: vLLM claims its utilization's share of the whole card.
        held = sum(int(e.spec.memory_utilization * total) for e in RecordingEngine.loaded
                   if e.spec is not None)
        assert baseline + held <= total
        assert used == baseline + held  # the device shows every loaded engine, and only those
        assert self.rig.manager.state.loaded_bytes in (0, held)  # 0: still loading
        if self.rig.manager.active_engine is not None:
            assert self.rig.manager.state.loaded_bytes == held

    def _step(self) -> None:
        ManagerMachine.steps += 1

    @rule(model=st.sampled_from(MODELS), failure=FAILURES, warm_up_fails=st.booleans())
    def switch(self, model: str, failure: BaseException | None, warm_up_fails: bool) -> None:
        self._step()
        if failure is not None:
            self.rig.script.fail_next(model, failure)
        if warm_up_fails:
            self.rig.script.fail_next_generation(model, EngineDiedError("died warming up"))
        result = self.loop.run_until_complete(self.rig.manager.switch_to(model))
        assert result.active == self.rig.manager.active_model
        if result.outcome == "ready":
            assert result.active == model

    @rule(models=st.lists(st.sampled_from(MODELS), min_size=2, max_size=4))
    def concurrent_callers(self, models: list[str]) -> None:
        self._step()

        async def run() -> None:
            await asyncio.gather(*(self.rig.manager.switch_to(m) for m in models))

        self.loop.run_until_complete(run())

    @rule(model=st.sampled_from(MODELS), failure=GENERATION_FAILURES)
    def generate(self, model: str, failure: BaseException | None) -> None:
        """A chat request naming a model: switch if needed, then stream (maybe failing)."""
        self._step()
        if failure is not None:
            self.rig.script.fail_next_generation(model, failure)
        self.requests += 1
        request = GenerationRequest((ChatMessage("user", "hi"),), max_tokens=3,
                                    request_id=f"r{self.requests}")
        got: list[int] = []

        async def run() -> None:
            async for delta in self.chat.generate(request, model):
                got.append(delta.tokens)

        try:
            self.loop.run_until_complete(run())
        except NoModelError:
            assert not got
        except EngineError:
            # A failed reply (on the model or the fallback serving it) unloads nothing.
            assert self.rig.manager.active_model is not None
            assert got  # the in-test engine fails after its first token
        else:
            assert got[-1] == 3
        if got:
            self.generations_with_tokens += 1

    @rule(kind=st.sampled_from(["vram_overflow", "temperature", "power_limit"]),
          ended=st.booleans(), advance=st.floats(0, 30))
    def alert_arrives(self, kind: str, ended: bool, advance: float) -> None:
        self._step()
        self.rig.clock.now += advance
        self.loop.run_until_complete(
            self.reactor.handle([alert(kind, change="ended" if ended else "started")]))

    @rule(hot=st.booleans())
    def temperature_changes(self, hot: bool) -> None:
        self._step()
        self.rig.probe.temperature_c = 90.0 if hot else None

    @invariant()
    def held_at_every_event(self) -> None:
        assert self.violations == []

    @invariant()
    def at_most_one_model_and_within_memory(self) -> None:
        assert not RecordingEngine.overlap_seen
        self._check_device()
        active = self.rig.manager.active_engine
        assert RecordingEngine.loaded == (set() if active is None else {active})

    @invariant()
    def nothing_half_loaded(self) -> None:
        active = self.rig.manager.active_engine
        assert all(e.shut for e in self.rig.engines if e is not active)
        if active is not None:
            assert not active.shut
            assert active.generated >= 1  # it was warmed up

    @invariant()
    def the_active_model_is_one_whose_switch_ended_ready(self) -> None:
        active = self.rig.manager.active_model
        if active is None:
            return
        rows = [r for r in self.rig.history.recent(10_000) if r.to_model == active]
        assert rows
        assert rows[0].outcome == "ready"

    @invariant()
    def every_finished_switch_and_generation_has_a_history_row(self) -> None:
        ended = [e for e in self.rig.events if isinstance(e, SwitchEvent)
                 and e.switch_id > 0 and e.phase in TERMINAL_PHASES]
        # Emergency unloads (an alert with nothing smaller) are rows too, announced by an event.
        unloads = [e for e in self.rig.events if isinstance(e, SwitchEvent)
                   and e.phase is StateChange.UNLOADED]
        assert len({e.switch_id for e in ended}) + len(unloads) == self.rig.history.count()
        assert sum(t.generations for t in self.rig.history.throughput()) == \
            self.generations_with_tokens

    def teardown(self) -> None:
        self.loop.run_until_complete(self.rig.manager.close())
        assert RecordingEngine.loaded == set()
        assert all(e.shut for e in self.rig.engines)
        self.loop.close()
        self.rig.history.close()
        self.tmp.cleanup()


def test_manager_state_machine() -> None:
    ManagerMachine.steps = 0
    if SLOW:
        config = settings(max_examples=SLOW_STEPS // 40, stateful_step_count=60, deadline=None)
    elif MUTATION:
        config = settings(max_examples=10, stateful_step_count=10, deadline=None)
    else:
        config = settings(max_examples=40, stateful_step_count=15, deadline=None)
    run_state_machine_as_test(ManagerMachine, settings=config)
    if SLOW:
        assert ManagerMachine.steps >= SLOW_STEPS, ManagerMachine.steps
    print(f"\nstate machine: {ManagerMachine.steps} steps")
