"""Property-based (hypothesis stateful): whatever the sequence of switch requests, failing loads,
alerts and concurrent callers, at most one model is loaded at every instant, the simulated GPU never
exceeds its memory, and every finished switch has a history row."""

from __future__ import annotations

import asyncio
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.engine.base import ContextTooLongError, EngineTimeoutError, ModelDirectoryError
from core.manager.alert_policy import AlertReactor
from core.manager.events import TERMINAL_PHASES, SwitchEvent, SwitchPhase
from core.telemetry.config import load_monitoring_config
from tests.core.manager_fakes import RecordingEngine, make_rig
from tests.core.test_manager_alerts import alert

MODELS = ["qwen3-30b-a3b-instruct-2507", "qwen3-14b", "qwen3-8b", "qwen3-4b-instruct-2507",
          "demo-tiny-a", "demo-tiny-b"]
FAILURES = st.sampled_from([None, EngineTimeoutError("slow"), ContextTooLongError(32768, 2048),
                            ModelDirectoryError("/m", "broken")])


class ManagerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.rig = make_rig(self.tmp.name)
        self.loop = asyncio.new_event_loop()
        self.max_vram_seen = 0
        hw = load_monitoring_config().hardware_monitoring
        self.reactor = AlertReactor(self.rig.manager, hw, thermal_persist_s=10, cooldown_s=5,
                                    clock=self.rig.clock)
        # Sample the device on every event: "at every instant" of the switch pipeline.
        self.rig.manager.subscribe(lambda _e: self._sample())

    def _sample(self) -> None:
        snap = self.rig.gpu.sample()
        assert snap.vram_total_bytes is not None
        self.max_vram_seen = max(self.max_vram_seen, self.rig.vram_in_use())
        assert self.rig.vram_in_use() <= snap.vram_total_bytes
        assert len(RecordingEngine.loaded) <= 1

    @rule(model=st.sampled_from(MODELS), failure=FAILURES)
    def switch(self, model: str, failure: BaseException | None) -> None:
        if failure is not None:
            self.rig.script.fail_next(model, failure)
        self.loop.run_until_complete(self.rig.manager.switch_to(model))

    @rule(models=st.lists(st.sampled_from(MODELS), min_size=2, max_size=4))
    def concurrent_callers(self, models: list[str]) -> None:
        async def run() -> None:
            await asyncio.gather(*(self.rig.manager.switch_to(m) for m in models))

        self.loop.run_until_complete(run())

    @rule(kind=st.sampled_from(["vram_overflow", "temperature", "power_limit"]),
          ended=st.booleans(), advance=st.floats(0, 30))
    def alert_arrives(self, kind: str, ended: bool, advance: float) -> None:
        self.rig.clock.now += advance
        self.loop.run_until_complete(
            self.reactor.handle([alert(kind, change="ended" if ended else "started")]))

    @rule(hot=st.booleans())
    def temperature_changes(self, hot: bool) -> None:
        self.rig.probe.temperature_c = 90.0 if hot else None

    @invariant()
    def at_most_one_model_and_within_memory(self) -> None:
        assert not RecordingEngine.overlap_seen
        self._sample()
        active = self.rig.manager.active_model
        assert len(RecordingEngine.loaded) == (0 if active is None else 1)
        if active is None:
            assert self.rig.activity.state().loaded_bytes == 0

    @invariant()
    def every_finished_switch_has_a_history_row(self) -> None:
        ended = [e for e in self.rig.events if isinstance(e, SwitchEvent)
                 and e.switch_id > 0 and e.phase in TERMINAL_PHASES]
        # Emergency unloads (an alert with nothing smaller) are rows too, announced by an event.
        unloads = [e for e in self.rig.events if isinstance(e, SwitchEvent)
                   and e.phase is SwitchPhase.UNLOADED]
        assert len({e.switch_id for e in ended}) + len(unloads) == self.rig.history.count()

    def teardown(self) -> None:
        self.loop.run_until_complete(self.rig.manager.close())
        assert RecordingEngine.loaded == set()
        self.loop.close()
        self.rig.history.close()
        self.tmp.cleanup()


ManagerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=15,
                                            deadline=None)
TestManagerStateful = ManagerMachine.TestCase
