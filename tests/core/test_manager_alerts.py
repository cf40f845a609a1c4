"""AlertReactor: VRAM/power critical switch smaller; thermal lowers concurrency first; cooldown;
advise-only mode changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.manager.alert_policy import AlertReactor
from core.manager.events import SwitchEvent, SwitchPhase
from core.telemetry.alerts import AlertEvent
from core.telemetry.config import load_monitoring_config
from tests.core.manager_fakes import Rig, make_rig

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


def test_power_critical_switches_smaller(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> None:
        await rig.manager.switch_to("qwen3-8b")
        await r.handle([alert("power_limit")])

    asyncio.run(run())
    # The 4B in FP16 needs more memory than the 8B in AWQ: "smaller" means less memory.
    assert rig.manager.active_model != "qwen3-8b"


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
              and e.phase is SwitchPhase.ADVICE]
    assert len(advice) == 2
    assert any("qwen3-14b -> qwen3-8b" in e.message for e in advice)
