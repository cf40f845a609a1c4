"""AlertReactor: VRAM/power critical switch smaller; thermal lowers concurrency first; cooldown;
advise-only mode changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.manager.alert_policy import AlertReactor
from core.manager.events import StateChange, SwitchEvent
from core.telemetry.alerts import AlertEvaluator, AlertEvent
from core.telemetry.config import load_monitoring_config
from core.telemetry.snapshot import HostSnapshot, Sample
from tests.core.manager_fakes import RecordingEngine, Rig, make_rig

FOUR_B = "qwen3-4b-instruct-2507"


def alert(kind: str, level: str = "critical", change: str = "started", at: float = 0.0
          ) -> AlertEvent:
    return AlertEvent(kind=kind, metric=kind, level=level, change=change,  # type: ignore[arg-type]
                      value=1.0, threshold=1.0, started_at=at, ended_at=None, at=at)


def reactor(rig: Rig, policy: str = "act") -> AlertReactor:
    hw = load_monitoring_config().hardware_monitoring.model_copy(update={"policy": policy})
    return AlertReactor(rig.manager, hw, thermal_persist_s=60, cooldown_s=120, clock=rig.clock)


def test_vram_critical_switches_smaller_at_once_then_cools_down(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        first = await r.handle([alert("vram_overflow")])
        second = await r.tick()  # still critical: the cooldown holds
        return [x.action for x in first + second]

    assert asyncio.run(run()) == ["switch_smaller", "cooldown"]
    assert rig.manager.active_model == "qwen3-8b"
    assert rig.history.recent()[0].reason == "alert"


def test_thermal_lowers_concurrency_first_then_switches_if_it_persists(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        actions = [x.action for x in await r.handle([alert("temperature")])]
        assert rig.manager.state.max_concurrent == 1
        rig.clock.now += 30
        actions += [x.action for x in await r.tick()]  # not yet persisted long enough
        rig.clock.now += 31
        actions += [x.action for x in await r.tick()]
        actions += [x.action for x in await r.handle([alert("temperature", change="ended")])]
        return actions

    assert asyncio.run(run()) == ["limit_concurrency", "switch_smaller", "restore_concurrency"]
    assert rig.manager.active_model == "qwen3-8b"
    assert rig.manager.state.max_concurrent is None


def drive_power_critical(rig: Rig, evaluator: AlertEvaluator) -> list[AlertEvent]:
    """Three streams make the simulated card draw ~149 W, over the 140 W critical line, for
    6.5 s (the minimum is 5 s): the evaluator raises the power alert from the device's samples."""
    host = HostSnapshot(0.0, 100, 10, 90, 0, 0, 1.0)
    for _ in range(3):
        rig.activity.stream_started()
    events: list[AlertEvent] = []
    for _ in range(13):
        rig.clock.now += 0.5
        events += evaluator.evaluate(Sample(host, (rig.gpu.sample(),)))
    assert ("power_limit", "critical") in [(e.kind, e.level) for e in events]
    return events


def power_critical_reaction(rig: Rig, *, streams_end_first: bool) -> list[str]:
    hw = load_monitoring_config().hardware_monitoring
    r = AlertReactor(rig.manager, hw, clock=rig.clock)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-8b")
        events = drive_power_critical(rig, AlertEvaluator(hw))
        if streams_end_first:
            for _ in range(3):
                rig.activity.stream_ended()
        return [x.action for x in await r.handle(events)]

    return asyncio.run(run())


SMALLER_THAN_8B = "demo-tiny-a"  # the 4B in FP16 needs more memory than the 8B in AWQ


def assert_switched_smaller(rig: Rig) -> None:
    assert rig.manager.active_model == SMALLER_THAN_8B  # switched, not merely unloaded
    assert [e.entry.id for e in RecordingEngine.loaded] == [SMALLER_THAN_8B]
    row = rig.history.recent()[0]
    assert (row.from_model, row.to_model, row.reason, row.outcome) == (
        "qwen3-8b", SMALLER_THAN_8B, "alert", "ready")


def test_power_critical_switches_smaller(tmp_path: Path) -> None:
    """The replies that drew the power have ended when the reactor acts."""
    rig = make_rig(tmp_path)
    assert power_critical_reaction(rig, streams_end_first=True) == ["switch_smaller"]
    assert_switched_smaller(rig)


def test_power_critical_switches_smaller_while_the_streams_still_run(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    power_critical_reaction(rig, streams_end_first=False)
    assert_switched_smaller(rig)


def test_warning_level_does_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[object]:
        await rig.manager.switch_to("qwen3-14b")
        return await r.handle([alert("vram_overflow", level="warning")])

    assert asyncio.run(run()) == []
    assert rig.manager.active_model == "qwen3-14b"


def test_advise_only_emits_advice_and_changes_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig, policy="advise")

    async def run() -> None:
        await rig.manager.switch_to("qwen3-14b")
        await r.handle([alert("vram_overflow"), alert("temperature")])

    asyncio.run(run())
    assert rig.manager.active_model == "qwen3-14b"
    assert rig.manager.state.max_concurrent is None
    advice = [e for e in rig.events if isinstance(e, SwitchEvent)
              and e.phase is StateChange.ADVICE]
    assert len(advice) == 2
    assert any("qwen3-14b -> qwen3-8b" in e.message for e in advice)
