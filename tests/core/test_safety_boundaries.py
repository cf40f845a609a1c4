"""The safety core at its edges: every gate exactly at its limit, failures inside a switch, privacy
with a remote endpoint configured, restore after a failed cascade, retry accounting, and the
numbers the router and the predictions depend on.

These pin what mutation testing (`make mutate`) found unguarded: each test fails when the one line
it names is changed. The manager runs against the simulated 16 GB GPU with the in-test engine
(tests/core/manager_fakes.py); conditions come from the device where the simulation can produce
them (streams drive the power), else from the probe at the hardware seam.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.base import (
    ContextTooLongError,
    EngineDiedError,
    EngineTimeoutError,
    InsufficientMemoryError,
    ModelDirectoryError,
)
from core.history_store import HistoryStore
from core.manager.alert_policy import AlertReactor
from core.manager.fit import CPU_MIN_UTILIZATION, estimator_fit
from core.manager.memory_wait import (
    RETURN_FRACTION,
    MemoryNotReturnedError,
    MemoryWaitResult,
    wait_for_memory,
)
from core.manager.plan import DeviceReading, FitEstimate, SafetyLimits, SwitchPlan, plan_switch
from core.models.catalog import Catalog, load_catalog
from core.models.estimator import Estimator, EstimatorSettings, fit_footprint
from core.router import HardwareState, Router, load_router_config
from core.telemetry.alerts import AlertEvaluator, AlertEvent
from core.telemetry.config import ModelSwitching, load_monitoring_config
from core.telemetry.snapshot import GpuSnapshot, HostSnapshot, Sample
from tests.core.manager_fakes import CASCADE, GIB, DrivenClock, RecordingEngine, Rig, make_rig
from tests.core.test_manager_alerts import alert

FOUR_B = "qwen3-4b-instruct-2507"
HOST = HostSnapshot(0.0, 100, 10, 90, 0, 0, 1.0)


def rig_in(directory: Path, **kwargs: object) -> Rig:
    directory.mkdir(parents=True, exist_ok=True)
    return make_rig(directory, **kwargs)  # type: ignore[arg-type]


def loaded_ids() -> list[str]:
    return [e.entry.id for e in RecordingEngine.loaded]


def device_used(rig: Rig) -> int:
    """VRAM in use as the simulated device reports it."""
    used = rig.gpu.sample().vram_used_bytes
    assert used is not None
    return used


def baseline(rig: Rig) -> int:
    return int(rig.gpu.profile.baseline_vram_used_mib * 1024**2)


# -- the switch gate: temperature and power, exactly at the limit ---------------------------------
@pytest.mark.parametrize(("metric", "limit", "unit"), [("power_w", 120.0, "W"),
                                                       ("temperature_c", 85.0, "°C")])
def test_gate_refuses_at_the_limit_and_passes_just_under(metric: str, limit: float, unit: str,
                                                         tmp_path: Path) -> None:
    rig = rig_in(tmp_path / "at")
    setattr(rig.probe, metric, limit)
    refused = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert refused.outcome == "failed"
    assert rig.manager.active_model is None
    assert rig.engines == []  # refused before any engine was made
    assert f"{limit:.0f} {unit}, limit {limit:.0f} {unit}" in refused.errors[0]
    assert {r.outcome for r in rig.history.recent()} == {"refused"}

    rig = rig_in(tmp_path / "under")
    setattr(rig.probe, metric, limit - 0.5)
    assert asyncio.run(rig.manager.switch_to(FOUR_B)).outcome == "ready"


def test_power_over_the_limit_keeps_the_loaded_model(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    rig.probe.power_w = 121.0
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert result.active == FOUR_B
    assert not rig.engines[0].shut
    assert [e.entry.id for e in rig.engines] == [FOUR_B]
    assert "power: 121 W, limit 120 W" in result.errors[0]


def test_plan_passes_a_metric_the_device_does_not_report(tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path)
    limits = SafetyLimits(GIB, 85.0, 120.0)
    fit = estimator_fit(Estimator(catalog))
    entry = catalog.get(FOUR_B)
    plan = plan_switch(entry, active_model=None, active_loaded_bytes=0,
                       reading=DeviceReading(15 * GIB, 16 * GIB, None, None), limits=limits,
                       estimate=fit, on_disk=True)
    assert plan.ok
    checks = {c.name: c.detail for c in plan.checks}
    assert checks["power"] == checks["temperature"] == "not reported"
    hot = plan_switch(entry, active_model=None, active_loaded_bytes=0,
                      reading=DeviceReading(15 * GIB, 16 * GIB, 85.0, 120.0), limits=limits,
                      estimate=fit, on_disk=True)
    assert [c.name for c in hot.checks if not c.passed] == ["temperature", "power"]


def test_memory_gate_counts_what_the_active_model_will_give_back(tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path)
    limits = SafetyLimits(GIB, 85.0, 120.0)
    need = 5 * GIB

    def fixed(entry: object, free: int | None, total: int | None, buffer: int) -> FitEstimate:
        return FitEstimate(True, need, 4096, 0.3)

    def plan(free: int) -> SwitchPlan:
        return plan_switch(catalog.get(FOUR_B), active_model="other",
                           active_loaded_bytes=3 * GIB, reading=DeviceReading(free, 16 * GIB),
                           limits=limits, estimate=fixed, on_disk=True)

    # Exactly the need plus the buffer free once the active model's 3 GiB are back: allowed.
    assert plan(need + GIB - 3 * GIB).ok
    short = plan(need + GIB - 3 * GIB - 1)
    assert not short.ok
    assert "memory" in (short.refusal or "")


# -- failures inside a switch ---------------------------------------------------------------------
def test_warm_up_failure_unloads_the_engine(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, on_disk=lambda e: e.id == "qwen3-8b")  # nothing to fall back to
    rig.script.fail_next_generation("qwen3-8b", EngineDiedError("engine core died"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert result.outcome == "failed"
    assert rig.manager.active_model is None
    [engine] = rig.engines
    assert engine.shut
    assert RecordingEngine.loaded == set()
    assert rig.activity.state().loaded_bytes == 0
    assert device_used(rig) == baseline(rig)  # the device got its memory back
    [row] = rig.history.recent()
    assert row.outcome == "failed"
    assert "warm-up failed: engine core died" in (row.error or "")
    assert "warming_up" in row.phases


def test_warm_up_failure_falls_back_to_the_next_model(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next_generation("qwen3-8b", EngineDiedError("engine core died"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert (result.outcome, result.active) == ("fallback", FOUR_B)
    assert loaded_ids() == [FOUR_B]
    assert rig.engines[0].shut


def test_a_private_task_never_falls_back_to_a_configured_remote(tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path / "models")
    remote = catalog.get("remote").model_copy(update={
        "enabled": True, "base_url": "http://gpu-box:8000/v1", "remote_model": "served"})
    catalog = catalog.with_entry(remote)

    def only_8b(e: object) -> bool:
        return getattr(e, "id", None) == "qwen3-8b"

    rig = rig_in(tmp_path / "private", catalog=catalog, on_disk=only_8b)
    assert rig.manager.is_usable(catalog.get("remote"))  # configured: usable when not private
    rig.script.fail_next("qwen3-8b", ModelDirectoryError("/m", "broken"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b", private=True))
    assert (result.outcome, result.active) == ("failed", None)
    assert "remote" not in [e.entry.id for e in rig.engines]
    # Not even attempted: no switch toward the endpoint was planned or recorded.
    assert [r.to_model for r in rig.history.recent()] == ["qwen3-8b"]
    assert "remote" not in {getattr(e, "target", None) for e in rig.events}
    direct = asyncio.run(rig.manager.switch_to("remote", private=True))
    assert direct.outcome == "failed"
    assert "the task is private" in direct.errors[0]
    assert "remote" not in [e.entry.id for e in rig.engines]

    # The same failure for a task that is not private does reach the remote endpoint.
    rig = rig_in(tmp_path / "public", catalog=catalog, on_disk=only_8b)
    rig.script.fail_next("qwen3-8b", ModelDirectoryError("/m", "broken"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert (result.outcome, result.active) == ("fallback", "remote")


def test_a_disabled_target_is_refused_and_skipped_as_a_fallback(tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path / "models")
    catalog = catalog.with_entry(catalog.get(FOUR_B).model_copy(update={"enabled": False}))
    rig = make_rig(tmp_path, catalog=catalog)
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert FOUR_B not in [e.entry.id for e in rig.engines]
    assert f"{FOUR_B} is disabled" in result.errors[0]
    assert rig.history.recent()[-1].outcome == "refused"
    assert result.active == "demo-tiny-a"  # the next usable model down the cascade
    # Falling back from the 8B passes over the disabled 4B.
    rig.script.fail_next("qwen3-8b", ModelDirectoryError("/m", "broken"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert FOUR_B not in [e.entry.id for e in rig.engines]


def test_the_previous_model_is_restored_when_the_whole_cascade_fails(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to("qwen3-14b"))
    for model in ("qwen3-8b", FOUR_B, "demo-tiny-a", "demo-tiny-b"):
        rig.script.fail_next(model, ModelDirectoryError(f"/m/{model}", "broken"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert result.outcome == "failed"
    assert result.active == rig.manager.active_model == "qwen3-14b"
    assert loaded_ids() == ["qwen3-14b"]
    assert len(result.errors) == 4
    last = rig.history.recent()[0]
    assert (last.from_model, last.to_model, last.reason, last.outcome) == (
        None, "qwen3-14b", "fallback", "ready")
    # The device holds the restored model, not nothing.
    assert device_used(rig) == baseline(rig) + rig.manager.state.loaded_bytes > baseline(rig)


# -- retry accounting -----------------------------------------------------------------------------
def test_insufficient_memory_is_retried(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next(FOUR_B, InsufficientMemoryError(1.0, 16.0, 0.9, "still draining"))
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert (result.outcome, result.active) == ("ready", FOUR_B)
    assert rig.history.recent()[0].attempts == 2
    assert [e.entry.id for e in rig.engines] == [FOUR_B, FOUR_B]


@pytest.mark.parametrize("max_retries", [1, 3])
def test_a_context_retry_is_not_a_failed_attempt(max_retries: int, tmp_path: Path) -> None:
    settings = ModelSwitching(max_retries=max_retries, fallback_cascade=CASCADE)
    rig = make_rig(tmp_path, switching=settings)
    transient = [EngineTimeoutError("slow")] * (max_retries - 1)
    rig.script.fail_next(FOUR_B, ContextTooLongError(32768, 4096), *transient)
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert (result.outcome, result.active) == ("ready", FOUR_B)
    assert rig.manager.state.max_model_len == 4096
    assert rig.history.recent()[0].attempts == max_retries + 1


def test_only_one_context_retry(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, on_disk=lambda e: e.id == FOUR_B)
    rig.script.fail_next(FOUR_B, ContextTooLongError(32768, 4096), ContextTooLongError(4096, 2048))
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.outcome == "failed"
    assert [e.spec.max_model_len for e in rig.engines if e.spec] == [32768, 4096]


# -- the memory-return wait: its end condition is ">=" --------------------------------------------
class ExactProbe:
    def __init__(self, free: int) -> None:
        self.free = free

    def read(self) -> DeviceReading:
        return DeviceReading(self.free, 16 * GIB)


def test_memory_wait_ends_when_exactly_the_expected_memory_is_back() -> None:
    before, released = 2 * GIB, 8 * GIB
    target = before + int(RETURN_FRACTION * released)
    clock = DrivenClock(0.0)
    result = asyncio.run(wait_for_memory(ExactProbe(target), free_before_unload=before,
                                         released_bytes=released, poll_interval_s=0.25,
                                         timeout_s=5, clock=clock, sleep=clock.sleep))
    assert (result.polls, result.waited_s, result.free_bytes) == (1, 0.0, target)
    with pytest.raises(MemoryNotReturnedError):
        asyncio.run(wait_for_memory(ExactProbe(target - 1), free_before_unload=before,
                                    released_bytes=released, poll_interval_s=0.25, timeout_s=5,
                                    clock=clock, sleep=clock.sleep))


def test_memory_wait_ends_when_exactly_the_next_need_is_free() -> None:
    clock = DrivenClock(0.0)
    result = asyncio.run(wait_for_memory(ExactProbe(3 * GIB), free_before_unload=2 * GIB,
                                         released_bytes=8 * GIB, poll_interval_s=0.25,
                                         timeout_s=5, clock=clock, sleep=clock.sleep,
                                         sufficient_free_bytes=3 * GIB))
    assert result.polls == 1
    assert result.target_free_bytes == 3 * GIB


def test_memory_wait_times_out_exactly_at_the_timeout() -> None:
    clock = DrivenClock(0.0)
    with pytest.raises(MemoryNotReturnedError) as info:
        asyncio.run(wait_for_memory(ExactProbe(0), free_before_unload=2 * GIB,
                                    released_bytes=8 * GIB, poll_interval_s=0.25, timeout_s=1.0,
                                    clock=clock, sleep=clock.sleep))
    assert info.value.waited_s == 1.0
    assert clock() == 1.0  # it never slept past the timeout


def test_memory_wait_never_sleeps_past_its_timeout() -> None:
    """The last sleep is cut to what is left of the timeout (1.1 s is not a multiple of 0.25)."""
    clock = DrivenClock(500.0)
    with pytest.raises(MemoryNotReturnedError) as info:
        asyncio.run(wait_for_memory(ExactProbe(0), free_before_unload=2 * GIB,
                                    released_bytes=8 * GIB, poll_interval_s=0.25, timeout_s=1.1,
                                    clock=clock, sleep=clock.sleep))
    assert info.value.waited_s == pytest.approx(1.1)
    assert clock() == pytest.approx(501.1)


def test_memory_wait_measures_from_its_own_start() -> None:
    clock = DrivenClock(500.0)

    class Returning:
        def read(self) -> DeviceReading:
            return DeviceReading(10 * GIB if clock() >= 500.9 else 2 * GIB, 16 * GIB)

    result = asyncio.run(wait_for_memory(Returning(), free_before_unload=2 * GIB,
                                         released_bytes=8 * GIB, poll_interval_s=0.25,
                                         timeout_s=5, clock=clock, sleep=clock.sleep))
    assert result.waited_s == pytest.approx(1.0)
    assert (result.polls, result.free_bytes, result.target_free_bytes) == (5, 10 * GIB, 8 * GIB)


@pytest.mark.parametrize(("before", "released", "expected"), [
    (None, 8 * GIB, MemoryWaitResult(0.0, 0, None, None)),  # free memory not reported
    (2 * GIB, 0, MemoryWaitResult(0.0, 0, 2 * GIB, None)),  # nothing to wait for
    (2 * GIB, 1, MemoryWaitResult(0.0, 1, 4 * GIB, 2 * GIB)),  # one byte: one poll
])
def test_memory_wait_returns_at_once_when_there_is_nothing_to_wait_for(
        before: int | None, released: int, expected: MemoryWaitResult) -> None:
    clock = DrivenClock(500.0)
    result = asyncio.run(wait_for_memory(ExactProbe(4 * GIB), free_before_unload=before,
                                         released_bytes=released, poll_interval_s=0.25,
                                         timeout_s=5, clock=clock, sleep=clock.sleep))
    assert result == expected


def test_memory_wait_ends_when_the_device_stops_reporting_free_memory() -> None:
    clock = DrivenClock(500.0)

    class Silent:
        def read(self) -> DeviceReading:
            return DeviceReading(None, None)

    result = asyncio.run(wait_for_memory(Silent(), free_before_unload=2 * GIB,
                                         released_bytes=8 * GIB, poll_interval_s=0.25,
                                         timeout_s=5, clock=clock, sleep=clock.sleep))
    assert result == MemoryWaitResult(0.0, 1, None, 8 * GIB)


# -- alerts: the hysteresis line, "notify", thermal persistence ------------------------------------
def temperature_sample(t: float, temp: float) -> Sample:
    total = 16 * GIB
    gpu = GpuSnapshot(timestamp=t, index=0, name="g", simulated=True, vram_total_bytes=total,
                      vram_used_bytes=GIB, vram_free_bytes=total - GIB, temperature_c=temp,
                      power_w=50.0, clock_events=("Idle",))
    return Sample(HOST, (gpu,))


def test_an_alert_is_held_exactly_at_threshold_minus_hysteresis() -> None:
    monitoring = load_monitoring_config({"hardware_monitoring": {"thresholds": {"temperature": {
        "warning": 80, "critical": 87, "hysteresis": 2, "min_duration_seconds": 0}}}})
    ev = AlertEvaluator(monitoring.hardware_monitoring)
    assert [e.level for e in ev.evaluate(temperature_sample(0, 87.0))] == ["critical"]
    assert ev.evaluate(temperature_sample(1, 85.0)) == []  # exactly 87 - 2: still critical
    [down] = ev.evaluate(temperature_sample(2, 84.99))
    assert (down.change, down.level) == ("deescalated", "warning")
    assert ev.evaluate(temperature_sample(3, 78.0)) == []  # exactly 80 - 2: still warning
    [ended] = ev.evaluate(temperature_sample(4, 77.99))
    assert ended.change == "ended"


def critical_power_events(rig: Rig, monitoring_alerts: dict[str, str] | None = None
                          ) -> tuple[list[AlertEvent], AlertEvaluator]:
    """Three streams on the engine: the simulated card draws ~149 W, above the 140 W critical
    line; six seconds of samples (5 s minimum duration) raise the power alert."""
    overrides = {"alerts": monitoring_alerts} if monitoring_alerts else {}
    hw = load_monitoring_config({"hardware_monitoring": overrides}).hardware_monitoring
    evaluator = AlertEvaluator(hw)
    for _ in range(3):
        rig.activity.stream_started()
    events: list[AlertEvent] = []
    for _ in range(13):
        rig.clock.now += 0.5
        events += evaluator.evaluate(Sample(HOST, (rig.gpu.sample(),)))
    return events, evaluator


def test_power_alert_with_action_notify_never_switches(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to("qwen3-8b"))
    events, evaluator = critical_power_events(rig, {"power_limit": "notify"})
    assert [(e.kind, e.level) for e in events if e.level == "critical"] == [
        ("power_limit", "critical")]
    r = AlertReactor(rig.manager, evaluator._config, cooldown_s=0, clock=rig.clock)

    async def react() -> list[object]:
        out: list[object] = list(await r.handle(events))
        for _ in range(5):
            rig.clock.now += 100
            out += await r.tick()
        return out

    assert asyncio.run(react()) == []
    assert rig.manager.active_model == "qwen3-8b"
    assert [e.entry.id for e in rig.engines] == ["qwen3-8b"]
    assert rig.history.count() == 1


def test_thermal_step_down_exactly_when_the_persistence_runs_out(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    hw = load_monitoring_config().hardware_monitoring
    r = AlertReactor(rig.manager, hw, thermal_persist_s=60, cooldown_s=0, clock=rig.clock)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        start = rig.clock.now
        actions = [x.action for x in await r.handle([alert("temperature")])]
        rig.clock.now = start + 59.99
        actions += [x.action for x in await r.tick()]
        assert rig.manager.active_model == "qwen3-14b"
        rig.clock.now = start + 60.0
        actions += [x.action for x in await r.tick()]
        return actions

    assert asyncio.run(run()) == ["limit_concurrency", "switch_smaller"]
    assert rig.manager.active_model == "qwen3-8b"


def test_cooldown_ends_exactly_after_its_length(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    hw = load_monitoring_config().hardware_monitoring
    r = AlertReactor(rig.manager, hw, cooldown_s=120, clock=rig.clock)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        switched_at = rig.clock.now  # the cooldown counts from when the reaction began
        actions = [x.action for x in await r.handle([alert("vram_overflow")])]
        rig.clock.now = switched_at + 119.9
        actions += [x.action for x in await r.tick()]
        rig.clock.now = switched_at + 120.0
        actions += [x.action for x in await r.tick()]
        return actions

    assert asyncio.run(run()) == ["switch_smaller", "cooldown", "switch_smaller"]


# -- the router's minimum context, the predictions, the CPU utilisation floor ----------------------
def hardware_with_context(router: Router, catalog: Catalog, model: str, low: int, high: int
                          ) -> HardwareState:
    """A card whose free memory fits `model` with a context in [low, high)."""
    entry = catalog.get(model)
    fp = router.estimator.footprint(entry)
    total = 16 * GIB
    for free in range(GIB, total, 8 * 1024**2):
        est = fit_footprint(fp, total, free, int(router.config.selection.buffer_gib * GIB),
                            wanted=entry.default_context, settings=router.estimator.settings)
        if est.fits and low <= est.context_tokens < high:
            return HardwareState(free, total, 50.0, "test card")
    raise AssertionError(f"no free memory gives {model} a context in [{low}, {high})")


def test_router_rejects_a_model_that_fits_with_less_than_the_minimum_context(
        tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path / "models")
    directory = catalog.local_path(catalog.get("qwen3-8b"))
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "qwen3"}')
    config = load_router_config(catalog)
    minimum = config.selection.min_context_tokens
    router = Router(config, catalog)
    hardware = hardware_with_context(router, catalog, "qwen3-8b", minimum // 4, minimum)
    rejection = router.check(catalog.get("qwen3-8b"), hardware, private=False)
    assert getattr(rejection, "kind", None) == "does_not_fit"
    assert f"fewer than {minimum}" in getattr(rejection, "reason", "")
    # With a smaller minimum the same memory is enough.
    relaxed = config.model_copy(update={"selection": config.selection.model_copy(
        update={"min_context_tokens": minimum // 4})})
    accepted = Router(relaxed, catalog).check(catalog.get("qwen3-8b"), hardware, private=False)
    assert getattr(accepted, "fits", False)


def test_switch_time_prediction_depends_on_the_model_pair(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        for from_model, total in (("a", 10.0), ("a", 12.0), ("b", 2.0), (None, 6.0)):
            store.record_switch(from_model=from_model, to_model="c", reason="manual",
                                outcome="ready", total_s=total, phases={})
        store.record_switch(from_model="a", to_model="c", reason="manual", outcome="failed",
                            total_s=99.0, phases={})
        assert store.predicted_duration("a", "c") == 11.0
        assert store.predicted_duration("b", "c") == 2.0
        # No history for this pair, or no model loaded: every successful switch to the target.
        assert store.predicted_duration("z", "c") == 7.5
        assert store.predicted_duration(None, "c") == 7.5
        assert store.predicted_duration("a", "nothing-yet") is None
        assert store.predicted_duration("a", "c", window=1) == 12.0
    finally:
        store.close()


def test_cpu_engine_utilisation_never_goes_under_the_floor(tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path)
    estimator = Estimator(catalog, EstimatorSettings.for_cpu_engine())
    entry = catalog.get("demo-tiny-a")
    total, free = 24 * GIB, 20 * GIB
    bare = estimator_fit(estimator)(entry, free, total, GIB)
    assert bare.memory_utilization < CPU_MIN_UTILIZATION  # the tiny model alone needs less
    floored = estimator_fit(estimator, min_utilization=CPU_MIN_UTILIZATION)(entry, free, total,
                                                                            GIB)
    assert floored.memory_utilization == CPU_MIN_UTILIZATION
    assert floored.needed_bytes == int(CPU_MIN_UTILIZATION * total)
    assert floored.fits
    # The floor counts against free memory: a host with less than it free refuses.
    tight = estimator_fit(estimator, min_utilization=CPU_MIN_UTILIZATION)(
        entry, int(CPU_MIN_UTILIZATION * total) + GIB - 1, total, GIB)
    assert not tight.fits
