"""The safety policy's decisions with the in-test engine (fast): forced step-downs skip the
temperature/power gate but never the memory check, the emergency unload, thermal "gradual" in two
steps, gpu_lost, crash recovery and the crash-loop guard, one deadline per switch, the
concurrency gate. The same reactions on real vLLM engines: test_safety_vllm.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.base import ModelDirectoryError
from core.history_store import NO_MODEL
from core.manager.alert_policy import AlertReactor
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.manager.manager import CRASH_LOOP_WINDOW_S
from core.models.catalog import load_catalog
from core.telemetry.config import ModelSwitching, load_monitoring_config
from tests.core.manager_fakes import GIB, RecordingEngine, Rig, make_rig
from tests.core.test_manager_alerts import alert

CASCADE = ("qwen3-30b-a3b-instruct-2507", "qwen3-14b", "qwen3-8b", "qwen3-4b-instruct-2507",
           "demo-small", "demo-tiny-a", "demo-tiny-b", "remote")


def rig_with(tmp_path: Path, **switching: object) -> Rig:
    settings = ModelSwitching(**{"fallback_cascade": CASCADE, **switching})  # type: ignore[arg-type]
    return make_rig(tmp_path, switching=settings)


def reactor(rig: Rig, persist_s: float = 60, cooldown_s: float = 120) -> AlertReactor:
    hw = load_monitoring_config().hardware_monitoring
    return AlertReactor(rig.manager, hw, thermal_persist_s=persist_s, cooldown_s=cooldown_s,
                        clock=rig.clock)


def events(rig: Rig, phase: SwitchPhase) -> list[SwitchEvent]:
    return [e for e in rig.events if isinstance(e, SwitchEvent) and e.phase is phase]


# -- the one "which model next" ----------------------------------------------------------------
def test_demo_models_differ_in_size_so_a_step_down_exists(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    m = rig.manager
    small, tiny_a, tiny_b = (m.model_bytes(x) for x in ("demo-small", "demo-tiny-a",
                                                         "demo-tiny-b"))
    assert small is not None
    assert tiny_a is not None
    assert small > tiny_a == tiny_b

    async def run() -> None:
        await m.switch_to("demo-small")

    asyncio.run(run())
    assert m.smaller_model() == "demo-tiny-a"
    assert m.next_models("demo-small", smaller_only=True) == ["demo-tiny-a", "demo-tiny-b"]
    # The Models tab's offer comes from the same place: the first next model whose plan passes.
    assert m.first_fallback("qwen3-30b-a3b-instruct-2507") == "qwen3-14b"


# -- forced step-down --------------------------------------------------------------------------
def test_forced_switch_skips_temperature_and_power_but_not_memory(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    m = rig.manager

    async def run() -> None:
        await m.switch_to("qwen3-14b")
        rig.probe.temperature_c, rig.probe.power_w = 90.0, 150.0
        refused = await m.switch_to("qwen3-8b")
        assert not refused.ok
        assert m.active_model == "qwen3-14b"  # refused before unloading
        plan = m.plan_switch("qwen3-8b")
        assert plan.refused_only_on_heat_or_power
        forced = await m.switch_to("qwen3-8b", reason="alert", force=True)
        assert forced.outcome == "ready"
        assert forced.forced
        # Memory is never skipped: with the card full (another process), forced or not, refused.
        await m.unload()
        rig.probe.other_process_bytes = 100 * GIB
        no_room = m.plan_switch("demo-tiny-a", force=True)
        assert not no_room.ok
        assert not no_room.refused_only_on_heat_or_power
        assert "memory" in (no_room.refusal or "")

    asyncio.run(run())
    row = rig.history.recent()[0]
    assert (row.to_model, row.reason, row.outcome, row.forced) == (
        "qwen3-8b", "alert", "ready", True)
    assert row.reason_label == "alert, forced"
    assert not rig.history.recent()[1].forced
    assert rig.history.recent()[1].outcome == "refused"


def test_temperature_critical_steps_down_through_the_gate_it_raised(tmp_path: Path) -> None:
    """The reading that raises the alert (90 C, over the 85 C gate) is the one the plan sees."""
    rig = rig_with(tmp_path)
    r = reactor(rig, persist_s=60)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        rig.probe.temperature_c = 90.0
        actions = [x.action for x in await r.handle([alert("temperature")])]
        assert rig.manager.max_concurrent == 1  # step 1
        rig.clock.now += 59
        actions += [x.action for x in await r.tick()]
        rig.clock.now += 2
        step2 = await r.tick()
        assert step2[0].applied, step2[0].reason
        actions += [x.action for x in step2]
        return actions

    assert asyncio.run(run()) == ["limit_concurrency", "switch_smaller"]
    assert rig.manager.active_model == "qwen3-8b"
    row = rig.history.recent()[0]
    assert (row.reason, row.outcome, row.forced) == ("alert", "ready", True)
    assert events(rig, StateChange.CONCURRENCY)


def test_throttle_alert_at_its_configured_warning_level_is_acted_on(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    r = reactor(rig, persist_s=5)

    async def run() -> None:
        await rig.manager.switch_to("demo-small")
        await r.handle([alert("thermal_throttle", level="warning")])
        assert rig.manager.max_concurrent == 1
        rig.clock.now += 6
        await r.tick()

    asyncio.run(run())
    assert rig.manager.active_model == "demo-tiny-a"


def test_vram_critical_with_nothing_smaller_unloads(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    r = reactor(rig, cooldown_s=10)

    async def run() -> list[str]:
        await rig.manager.switch_to("demo-small")
        actions = [x.action for x in await r.handle([alert("vram_overflow")])]
        assert rig.manager.active_model == "demo-tiny-a"
        actions += [x.action for x in await r.tick()]  # cooldown
        rig.clock.now += 11
        actions += [x.action for x in await r.tick()]
        return actions

    assert asyncio.run(run()) == ["switch_smaller", "cooldown", "unload"]
    assert rig.manager.active_model is None
    assert RecordingEngine.loaded == set()
    row = rig.history.recent()[0]
    assert (row.from_model, row.to_model, row.outcome) == ("demo-tiny-a", NO_MODEL, "unloaded")
    assert "no smaller model" in (row.error or "")
    assert events(rig, StateChange.UNLOADED)


# -- gpu_lost ----------------------------------------------------------------------------------
def remote_rig(tmp_path: Path) -> Rig:
    catalog = load_catalog(models_dir=tmp_path / "models")
    remote = catalog.get("remote").model_copy(update={"enabled": True,
                                                      "base_url": "http://127.0.0.1:9/v1"})
    settings = ModelSwitching(fallback_cascade=CASCADE)
    return make_rig(tmp_path, switching=settings, catalog=catalog.with_entry(remote))


def test_gpu_lost_hands_the_work_to_the_remote_endpoint(tmp_path: Path) -> None:
    rig = remote_rig(tmp_path)
    r = reactor(rig)

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-a")
        await r.handle([alert("gpu_lost")])

    asyncio.run(run())
    assert rig.manager.active_model == "remote"


def test_gpu_lost_with_a_private_task_unloads_and_says_why(tmp_path: Path) -> None:
    rig = remote_rig(tmp_path)
    r = reactor(rig)

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-a", private=True)
        await r.handle([alert("gpu_lost")])

    asyncio.run(run())
    assert rig.manager.active_model is None
    row = rig.history.recent()[0]
    assert row.outcome == "unloaded"
    assert "private" in (row.error or "")


def test_gpu_lost_without_a_remote_endpoint_unloads(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    r = reactor(rig)

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-a")
        await r.handle([alert("gpu_lost")])

    asyncio.run(run())
    assert rig.manager.active_model is None
    assert "no remote endpoint" in (rig.history.recent()[0].error or "")


# -- crash recovery ----------------------------------------------------------------------------
def test_a_dead_engine_is_not_active_and_the_next_request_reloads_it(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    m = rig.manager

    async def run() -> None:
        await m.switch_to("demo-tiny-a")
        rig.engines[-1].crash()
        for _ in range(200):  # the watcher polls every 0.05 s here (real time)
            if m.active_model is None:
                break
            await asyncio.sleep(0.01)
        assert m.active_model is None
        again = await m.switch_to("demo-tiny-a")
        assert again.outcome == "ready"

    asyncio.run(run())
    crashed = rig.history.recent()[1]
    assert (crashed.from_model, crashed.to_model, crashed.reason, crashed.outcome) == (
        "demo-tiny-a", NO_MODEL, "crash", "crashed")
    assert "SIGKILL" in (crashed.error or "")
    assert events(rig, StateChange.CRASHED)


def test_crash_loop_guard_trips_on_the_third_death_and_falls_back(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    m = rig.manager

    async def run() -> None:
        for _ in range(3):
            assert (await m.switch_to("demo-tiny-a")).outcome == "ready"
            assert "demo-tiny-a" not in m.crashing_models()
            rig.engines[-1].crash()
            rig.clock.now += 60
        # A request for it finds the death itself (no need to wait for the watcher).
        result = await m.switch_to("demo-tiny-a")
        assert "demo-tiny-a" in m.crashing_models()
        assert (result.outcome, result.active) == ("fallback", "demo-tiny-b")
        assert "crash_loop" in result.errors[0]
        assert "demo-tiny-a" in m.state.crashing
        assert "demo-tiny-a" not in m.next_models("demo-small")
        rig.clock.now += CRASH_LOOP_WINDOW_S
        assert m.crashing_models() == {}
        assert (await m.switch_to("demo-tiny-a")).outcome == "ready"

    asyncio.run(run())
    outcomes = [r.outcome for r in reversed(rig.history.recent(20))]
    assert outcomes.count("crashed") == 3


# -- one deadline per switch ---------------------------------------------------------------------
def test_deadline_bounds_the_whole_cascade_and_restores_the_previous_model(
        tmp_path: Path) -> None:
    rig = rig_with(tmp_path, switch_timeout_seconds=0.5)
    rig.script.block["demo-tiny-a"] = asyncio.Event()  # its loads hang, never released

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-b")
        rig.script.fail_next("demo-small", ModelDirectoryError("/m", "broken"))
        t0 = asyncio.get_running_loop().time()
        # demo-small fails, the cascade moves on to demo-tiny-a, whose load hangs.
        result = await rig.manager.switch_to("demo-small")
        took = asyncio.get_running_loop().time() - t0
        assert 0.5 <= took < 2.0, took
        assert result.outcome == "failed"
        assert result.active == "demo-tiny-b"
        assert "deadline of" in result.errors[0]
        assert result.errors[-1] == "demo-tiny-b restored"

    asyncio.run(run())
    rows = rig.history.recent(5)
    assert (rows[0].to_model, rows[0].outcome) == ("demo-tiny-b", "ready")  # restored
    hung = rows[1]
    assert (hung.to_model, hung.outcome) == ("demo-tiny-a", "timed_out")
    assert "tried demo-small, demo-tiny-a" in (hung.error or "")
    assert "loading" in (hung.error or "")
    assert (rows[2].to_model, rows[2].outcome) == ("demo-small", "failed")
    assert not RecordingEngine.overlap_seen


# -- concurrency gate ----------------------------------------------------------------------------
def test_concurrency_limit_really_limits_running_generations(tmp_path: Path) -> None:
    rig = rig_with(tmp_path)
    m = rig.manager
    running = 0
    peak = 0

    async def generation() -> None:
        nonlocal running, peak
        async with m.generation_slot():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    async def run() -> None:
        nonlocal peak
        await asyncio.gather(*(generation() for _ in range(4)))
        assert peak == 4
        peak = 0
        await m.set_max_concurrent(1)
        assert m.max_concurrent == 1
        await asyncio.gather(*(generation() for _ in range(4)))
        assert peak == 1
        with pytest.raises(ValueError, match="at least 1"):
            await m.set_max_concurrent(0)

    asyncio.run(run())
