"""What the alert reactor reports: every reaction's action, kind, reason and whether it was applied
(the app logs them as actions or advice), and the advice events of advise-only mode."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from core.engine.base import EngineTimeoutError
from core.manager.alert_policy import AlertReaction, AlertReactor
from core.manager.events import StateChange, SwitchEvent
from core.telemetry.config import load_monitoring_config
from tests.core.manager_fakes import CASCADE, Rig, make_rig
from tests.core.test_manager_alerts import alert
from tests.core.test_manager_safety import remote_rig


def reactor(rig: Rig, policy: str = "act") -> AlertReactor:
    hw = load_monitoring_config().hardware_monitoring.model_copy(update={"policy": policy})
    return AlertReactor(rig.manager, hw, thermal_persist_s=60, cooldown_s=120, clock=rig.clock)


def advice(rig: Rig) -> list[SwitchEvent]:
    return [e for e in rig.events if isinstance(e, SwitchEvent) and e.phase is StateChange.ADVICE]


def test_thermal_reactions_in_full(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        out = await r.handle([alert("temperature")])
        out += await r.handle([alert("temperature", change="ended")])
        return out

    assert asyncio.run(run()) == [
        AlertReaction("limit_concurrency", "temperature",
                      "temperature: step 1, at most 1 request at a time", None, True),
        AlertReaction("restore_concurrency", "thermal",
                      "thermal alert ended: concurrency restored", None, True),
    ]
    assert advice(rig) == []


def test_advise_only_reactions_and_advice_events_in_full(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig, policy="advise")

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        return await r.handle([alert("temperature"), alert("vram_overflow")])

    reasons = ["temperature: step 1, at most 1 request at a time",
               "vram_overflow critical: switch qwen3-14b -> qwen3-8b"]
    assert asyncio.run(run()) == [
        AlertReaction("limit_concurrency", "temperature", reasons[0]),
        AlertReaction("switch_smaller", "vram_overflow", reasons[1], "qwen3-8b"),
    ]
    assert [(e.switch_id, e.target, e.from_model, e.reason, e.elapsed_s, e.message)
            for e in advice(rig)] == [
        (0, "qwen3-14b", "qwen3-14b", "alert", 0.0, reasons[0]),
        (0, "qwen3-14b", "qwen3-14b", "alert", 0.0, reasons[1] + " (advise only)"),
    ]
    assert rig.manager.state.max_concurrent is None
    assert rig.manager.active_model == "qwen3-14b"


def test_cooldown_reaction_says_how_long_is_left(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        started = rig.clock.now
        await r.handle([alert("vram_overflow")])
        rig.clock.now = started + 20
        return await r.tick()

    assert asyncio.run(run()) == [AlertReaction(
        "cooldown", "vram_overflow", "vram_overflow critical; cooling down (100 s left)")]


def test_vram_critical_with_nothing_smaller_unloads(tmp_path: Path) -> None:
    """The record's emergency unload: VRAM critical and no smaller model -> nothing loaded."""
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        return await r.handle([alert("vram_overflow")])

    why = "vram_overflow critical; no smaller model than demo-tiny-a: unloaded in 0.0 s"
    assert asyncio.run(run()) == [AlertReaction("unload", "vram_overflow", why, None, True)]
    assert advice(rig) == []
    assert rig.manager.active_model is None


def test_switch_smaller_reaction_in_full(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        return await r.handle([alert("vram_overflow")])

    assert asyncio.run(run()) == [AlertReaction(
        "switch_smaller", "vram_overflow", "vram_overflow critical: switch qwen3-14b -> qwen3-8b",
        "qwen3-8b", True)]


def test_thermal_step_down_says_how_long_it_persisted(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        await r.handle([alert("temperature")])
        rig.clock.now += 61
        return await r.tick()

    assert asyncio.run(run()) == [AlertReaction(
        "switch_smaller", "temperature", "temperature: step 2, still raised 61 s after lowering "
        "concurrency: switch qwen3-14b -> qwen3-8b", "qwen3-8b", True)]


def test_timings_default_to_the_switching_settings(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    hw = load_monitoring_config().hardware_monitoring
    defaults = AlertReactor(rig.manager, hw)
    assert (defaults.thermal_persist_s, defaults.cooldown_s) == (
        rig.manager.switching.thermal_persist_seconds, rig.manager.switching.cooldown_seconds)
    given = AlertReactor(rig.manager, hw, thermal_persist_s=5, cooldown_s=7)
    assert (given.thermal_persist_s, given.cooldown_s) == (5, 7)


def test_one_alert_waiting_does_not_hold_back_another(tmp_path: Path) -> None:
    """A notify-only alert, or a thermal one still within its persistence, sorts before
    vram_overflow: the VRAM alert is still acted on."""
    rig = make_rig(tmp_path)
    hw = load_monitoring_config({"hardware_monitoring": {"alerts": {
        "power_limit": "notify"}}}).hardware_monitoring
    r = AlertReactor(rig.manager, hw, thermal_persist_s=60, cooldown_s=0, clock=rig.clock)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        actions = [x.action for x in await r.handle([alert("temperature")])]
        actions += [x.action for x in await r.handle([alert("power_limit"),
                                                       alert("vram_overflow")])]
        return actions

    assert asyncio.run(run()) == ["limit_concurrency", "switch_smaller"]
    assert rig.manager.active_model == "qwen3-8b"


def test_smaller_means_after_the_active_model_and_usable(tmp_path: Path) -> None:
    (tmp_path / "all").mkdir()
    (tmp_path / "no-demo-a").mkdir()
    rig = make_rig(tmp_path / "all")
    r = reactor(rig)
    asyncio.run(rig.manager.switch_to("qwen3-4b-instruct-2507"))
    # The 8B (AWQ) needs less than the 4B (FP16) but comes before it in the cascade.
    assert r.smaller_model() == "demo-tiny-a"

    rig = make_rig(tmp_path / "no-demo-a", on_disk=lambda e: e.id not in ("demo-tiny-a",
                                                                           "remote"))
    r = reactor(rig)
    asyncio.run(rig.manager.switch_to("qwen3-4b-instruct-2507"))
    assert r.smaller_model() == "demo-tiny-b"  # demo-tiny-a is not on disk: passed over


def test_smaller_for_a_model_outside_the_cascade(tmp_path: Path) -> None:
    from core.telemetry.config import ModelSwitching

    rig = make_rig(tmp_path, switching=ModelSwitching(fallback_cascade=("qwen3-8b",
                                                                        "demo-tiny-a")))
    r = reactor(rig)
    asyncio.run(rig.manager.switch_to("qwen3-14b"))
    assert r.smaller_model() == "qwen3-8b"  # the whole cascade, from its start


# -- gpu_lost: the remote endpoint, or an unload -----------------------------------------------
GPU_LOST_TO_REMOTE = "gpu_lost: hand the work from demo-tiny-a to the remote endpoint remote"


def test_gpu_lost_reaction_hands_the_work_to_the_remote_endpoint_forced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = remote_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        return await r.handle([alert("gpu_lost")])

    with caplog.at_level(logging.WARNING, logger="core.manager.alert_policy"):
        reactions = asyncio.run(run())
    assert reactions == [AlertReaction("switch_remote", "gpu_lost", GPU_LOST_TO_REMOTE,
                                       "remote", True)]
    row = rig.history.recent()[0]
    # Recorded as the alert's switch, with the gate skipped like every alert step-down.
    assert (row.from_model, row.to_model, row.reason, row.outcome, row.forced) == (
        "demo-tiny-a", "remote", "alert", "ready", True)
    assert GPU_LOST_TO_REMOTE in [rec.getMessage() for rec in caplog.records]
    assert advice(rig) == []


def test_gpu_lost_advise_only_names_the_remote_endpoint_and_switches_nothing(
        tmp_path: Path) -> None:
    rig = remote_rig(tmp_path)
    r = reactor(rig, policy="advise")

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        return await r.handle([alert("gpu_lost")])

    assert asyncio.run(run()) == [AlertReaction("switch_remote", "gpu_lost", GPU_LOST_TO_REMOTE,
                                                "remote")]
    assert [(e.target, e.from_model, e.message) for e in advice(rig)] == [
        ("demo-tiny-a", "demo-tiny-a", GPU_LOST_TO_REMOTE + " (advise only)")]
    assert rig.manager.active_model == "demo-tiny-a"


def test_a_failed_hand_over_to_the_remote_endpoint_says_why(tmp_path: Path) -> None:
    rig = remote_rig(tmp_path)
    r = reactor(rig)
    rig.script.fail_next("remote", *[EngineTimeoutError("connection refused")] * 10)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        # The previous model does not come back either: the switch has two errors.
        rig.script.fail_next("demo-tiny-a", *[EngineTimeoutError("no memory")] * 10)
        return await r.handle([alert("gpu_lost")])

    assert asyncio.run(run()) == [AlertReaction(
        "switch_remote", "gpu_lost", GPU_LOST_TO_REMOTE + " failed: remote: connection refused "
        "(gave up after 3 attempts); demo-tiny-a: no memory (gave up after 3 attempts)",
        None, False)]
    assert rig.manager.active_model is None


@pytest.mark.parametrize(("private", "why"), [
    (False, "gpu_lost: no remote endpoint is configured"),
    (True, "gpu_lost: the task is private, so it is not sent to the remote endpoint"),
])
def test_gpu_lost_without_a_usable_remote_endpoint_unloads(tmp_path: Path, private: bool,
                                                           why: str) -> None:
    rig = remote_rig(tmp_path) if private else make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a", private=private)
        return await r.handle([alert("gpu_lost")])

    assert asyncio.run(run()) == [AlertReaction("unload", "gpu_lost",
                                                f"{why}: unloaded in 0.0 s", None, True)]
    assert rig.manager.active_model is None


def test_gpu_lost_advise_only_without_a_remote_endpoint_advises_the_unload(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig, policy="advise")

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        return await r.handle([alert("gpu_lost")])

    why = "gpu_lost: no remote endpoint is configured: unloading it"
    assert asyncio.run(run()) == [AlertReaction("unload", "gpu_lost", why)]
    assert [e.message for e in advice(rig)] == [why + " (advise only)"]
    assert rig.manager.active_model == "demo-tiny-a"


def test_an_emergency_unload_starts_the_cooldown_like_a_switch(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        [unloaded] = await r.handle([alert("vram_overflow")])
        assert unloaded.action == "unload"
        started = rig.clock.now
        await rig.manager.switch_to("qwen3-14b")  # the user loads a model again at once
        rig.clock.now = started + 30
        return await r.tick()  # the alert is still raised

    assert asyncio.run(run()) == [AlertReaction(
        "cooldown", "vram_overflow", "vram_overflow critical; cooling down (90 s left)")]
    assert rig.manager.active_model == "qwen3-14b"


def test_concurrency_is_restored_once_even_with_no_model_loaded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[list[AlertReaction]]:
        await rig.manager.switch_to("qwen3-14b")
        await r.handle([alert("temperature")])
        await rig.manager.unload()
        ended = await r.handle([alert("temperature", change="ended")])
        return [ended, await r.tick()]

    restored = "thermal alert ended: concurrency restored"
    ended, later = asyncio.run(run())
    assert ended == [AlertReaction("restore_concurrency", "thermal", restored, None, True)]
    assert later == []  # restored once, not on every sample after
    said = [(e.target, e.from_model) for e in rig.events if isinstance(e, SwitchEvent)
            and e.phase is StateChange.CONCURRENCY and e.message == restored]
    assert said == [("", "")]  # no model is named when none is loaded
    assert rig.manager.state.max_concurrent is None


def test_step_down_with_nothing_smaller_advises_and_keeps_the_model(tmp_path: Path) -> None:
    """power_limit steps down (it does not unload): with nothing smaller it only says so."""
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        return await r.handle([alert("power_limit")])

    why = "power_limit critical; no smaller model than demo-tiny-a is available"
    assert asyncio.run(run()) == [AlertReaction("none", "power_limit", why)]
    assert [(e.target, e.message) for e in advice(rig)] == [("demo-tiny-a", why)]
    assert rig.manager.active_model == "demo-tiny-a"


def test_a_failed_step_down_says_why_and_is_not_applied(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        for model in CASCADE:
            rig.script.fail_next(model, *[EngineTimeoutError("no memory")] * 10)
        return await r.handle([alert("vram_overflow")])

    errors = "; ".join(f"{m}: no memory (gave up after 3 attempts)" for m in (
        "qwen3-8b", "qwen3-4b-instruct-2507", "demo-tiny-a", "demo-tiny-b", "qwen3-14b"))
    # Every smaller model was tried, then the 14B again: nothing is loaded.
    assert asyncio.run(run()) == [AlertReaction(
        "switch_smaller", "vram_overflow",
        f"vram_overflow critical: switch qwen3-14b -> qwen3-8b failed: {errors}", None, False)]
    assert rig.manager.active_model is None


def test_alert_actions_are_logged_and_announced(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> None:
        await rig.manager.switch_to("qwen3-14b")
        await r.handle([alert("temperature")])
        await r.handle([alert("vram_overflow")])

    with caplog.at_level(logging.WARNING, logger="core.manager.alert_policy"):
        asyncio.run(run())
    limited = "temperature: step 1, at most 1 request at a time"
    assert [rec.getMessage() for rec in caplog.records if rec.name.endswith("alert_policy")] == [
        limited, "vram_overflow critical: switch qwen3-14b -> qwen3-8b (forced: the "
        "temperature/power gate is skipped)"]
    assert [(e.switch_id, e.target, e.from_model, e.reason, e.elapsed_s, e.message)
            for e in rig.events if isinstance(e, SwitchEvent)
            and e.phase is StateChange.CONCURRENCY] == [
        (0, "qwen3-14b", "qwen3-14b", "alert", 0.0, limited)]


def test_advise_only_walks_the_steps_once_each_not_on_every_sample(tmp_path: Path) -> None:
    """A thermal alert held for minutes in advise-only mode: step 1's advice once, step 2's once
    the alert has persisted, then nothing new within the cooldown (it was repeated on every
    sample, 0.5 s apart, and never reached step 2)."""
    rig = make_rig(tmp_path)
    r = reactor(rig, policy="advise")  # persist 60 s, cooldown 120 s

    async def run() -> None:
        await rig.manager.switch_to("qwen3-14b")
        started = rig.clock.now
        await r.handle([alert("temperature")])
        for i in range(1, 360):  # three minutes of samples, 0.5 s apart
            rig.clock.now = started + i * 0.5
            await r.tick()
        assert len(advice(rig)) == 2
        rig.clock.now = started + 180  # the cooldown after step 2's advice is over: a reminder
        await r.tick()

    asyncio.run(run())
    messages = [e.message for e in advice(rig)]
    assert messages[0] == "temperature: step 1, at most 1 request at a time"
    assert len(messages) == 3, messages
    assert messages[2].startswith("temperature: step 2, still raised 180 s")
    assert messages[1].startswith("temperature: step 2, still raised 60 s after lowering "
                                  "concurrency: switch qwen3-14b -> qwen3-8b")
    assert messages[1].endswith("(advise only)")
    assert rig.manager.active_model == "qwen3-14b"
    assert rig.manager.state.max_concurrent is None


def test_one_step_down_per_sample_whatever_raised_it(tmp_path: Path) -> None:
    """Two critical alerts in the same sample: one switch, not one per alert."""
    rig = make_rig(tmp_path)
    r = AlertReactor(rig.manager, load_monitoring_config().hardware_monitoring,
                     thermal_persist_s=60, cooldown_s=0, clock=rig.clock)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("qwen3-14b")
        return await r.handle([alert("power_limit"), alert("vram_overflow")])

    [reaction] = asyncio.run(run())
    assert (reaction.action, reaction.kind, reaction.applied) == (
        "switch_smaller", "power_limit", True)
    assert rig.manager.active_model == "qwen3-8b"  # one step down, not two


def test_a_hand_over_to_the_remote_endpoint_is_the_samples_one_step(tmp_path: Path) -> None:
    rig = remote_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[AlertReaction]:
        await rig.manager.switch_to("demo-tiny-a")
        return await r.handle([alert("gpu_lost"), alert("vram_overflow")])

    assert [x.action for x in asyncio.run(run())] == ["switch_remote"]
    assert rig.manager.active_model == "remote"


def test_an_alert_in_its_cooldown_does_not_hold_back_step_1_of_another(tmp_path: Path) -> None:
    """The cooldown is no step: a thermal alert raised meanwhile still lowers concurrency."""
    rig = make_rig(tmp_path)
    r = reactor(rig)

    async def run() -> list[str]:
        await rig.manager.switch_to("qwen3-14b")
        await r.handle([alert("power_limit")])  # steps down, starts the cooldown
        rig.clock.now += 10
        return [x.action for x in await r.handle([alert("temperature")])]

    assert asyncio.run(run()) == ["cooldown", "limit_concurrency"]
    assert rig.manager.state.max_concurrent == 1


def test_advise_only_restoring_concurrency_is_said_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig, policy="advise")

    async def run() -> list[list[AlertReaction]]:
        await rig.manager.switch_to("qwen3-14b")
        await r.handle([alert("temperature")])
        await rig.manager.unload()
        ended = await r.handle([alert("temperature", change="ended")])
        rig.clock.now += 600  # long after any cooldown: still nothing to restore
        return [ended, await r.tick()]

    ended, later = asyncio.run(run())
    assert [x.action for x in ended] == ["restore_concurrency"]
    assert later == []
    assert [(e.target, e.message) for e in advice(rig)] == [
        ("qwen3-14b", "temperature: step 1, at most 1 request at a time"),
        ("", "thermal alert ended: concurrency restored")]  # no model is named: none is loaded


def test_advise_only_unload_starts_the_cooldown(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    r = reactor(rig, policy="advise")

    async def run() -> list[str]:
        await rig.manager.switch_to("demo-tiny-a")
        actions = [x.action for x in await r.handle([alert("vram_overflow")])]
        rig.clock.now += 30
        return actions + [x.action for x in await r.tick()]

    assert asyncio.run(run()) == ["unload", "cooldown"]
    assert rig.manager.active_model == "demo-tiny-a"


@pytest.mark.parametrize("policy", ["act", "advise"])
def test_repeated_advice_is_given_once_per_cooldown(tmp_path: Path, policy: str) -> None:
    """What the policy can only advise (nothing smaller to step down to; in advise-only mode,
    the hand-over to the remote endpoint) comes up on every sample: it is said once per
    cooldown, from when it was said, and again once the cooldown is over."""
    rig = remote_rig(tmp_path) if policy == "advise" else make_rig(tmp_path)
    r = reactor(rig, policy=policy)  # cooldown 120 s
    kind = "gpu_lost" if policy == "advise" else "power_limit"

    async def run() -> list[float]:
        await rig.manager.switch_to("demo-tiny-a")
        started = rig.clock.now
        said_at = []
        await r.handle([alert(kind)])
        for i in range(1, 601):  # five minutes of samples
            rig.clock.now = started + i * 0.5
            before = len(advice(rig))
            await r.tick()
            if len(advice(rig)) > before:
                said_at.append(rig.clock.now - started)
        return said_at

    # Said at 0 s (not counted: the first handle), then when each cooldown has fully passed.
    assert asyncio.run(run()) == [120.0, 240.0]
    assert len({e.message for e in advice(rig)}) == 1
    assert rig.manager.active_model == "demo-tiny-a"
