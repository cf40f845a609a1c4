"""Model uptime from the recorded state changes of a session, driven by the real manager (its
engine is the in-test engine; the clock is driven, so every figure is exact)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.routing_report import build_report, format_report
from core.uptime import UptimeRecorder, uptime
from tests.core.manager_fakes import Rig, make_rig


def recorder(rig: Rig, session: str = "s1") -> UptimeRecorder:
    rec = UptimeRecorder(rig.history, lambda: rig.manager.active_model,
                         lambda: rig.manager.state.switching_to is not None,
                         clock=rig.clock, session=session)
    rig.manager.subscribe(rec.on_event)
    return rec


def states(rig: Rig) -> list[tuple[str, str | None]]:
    return [(s, m) for s, m in rig.history.query("SELECT state, model FROM model_states "
                                                 "ORDER BY id")]


def test_uptime_counts_switches_and_crashes_not_start_up_or_idle(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rec = recorder(rig)

    async def day() -> None:
        await rig.manager.switch_to("qwen3-4b-instruct-2507")  # start-up load: not counted
        rig.clock.now += 100
        t0 = rig.clock.now
        await rig.manager.switch_to("qwen3-8b")  # a switch: counted as switching
        switching_s = rig.clock.now - t0
        rig.clock.now += 100
        rig.engines[-1].crash()
        await rig.manager.check_engine()  # the crash is seen: down
        rig.clock.now += 10
        t1 = rig.clock.now
        await rig.manager.switch_to("qwen3-8b")  # reloaded after the crash
        reload_s = rig.clock.now - t1
        rig.clock.now += 50
        await rig.manager.unload()  # the user unloads: idle, no event
        rec.observe()
        rig.clock.now += 1000  # nobody wants a model: not counted
        rec.observe()
        rec.end()
        up = uptime(rig.history, now=rig.clock.now + 5000)
        assert up.seconds["ready"] == pytest.approx(250)
        assert up.seconds["switching"] == pytest.approx(switching_s + reload_s)
        assert up.seconds["down"] == pytest.approx(10)
        assert up.seconds["idle"] == pytest.approx(1000)
        counted = 250 + switching_s + reload_s + 10
        assert up.share == pytest.approx(250 / counted)
        assert up.ready_by_model == {"qwen3-4b-instruct-2507": pytest.approx(100),
                                     "qwen3-8b": pytest.approx(150)}
        assert up.sessions == 1

    asyncio.run(day())
    assert states(rig)[:4] == [("idle", None), ("switching", None),
                               ("ready", "qwen3-4b-instruct-2507"), ("switching", None)]
    assert ("down", None) in states(rig)
    assert states(rig)[-1] == ("idle", None)


def test_a_killed_session_counts_up_to_when_it_was_last_seen(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rec = recorder(rig, "killed")

    async def run() -> None:
        await rig.manager.switch_to("qwen3-4b-instruct-2507")
        for _ in range(4):  # ticks every 30 s refresh last_seen
            rig.clock.now += 30
            rec.observe()
        # no end(): the process was killed

    asyncio.run(run())
    up = uptime(rig.history, now=rig.clock.now + 3600)
    assert up.seconds["ready"] == pytest.approx(120)
    assert up.share == 1.0
    # Seen from the live session itself, it runs up to now.
    live = uptime(rig.history, now=rig.clock.now + 60, live_session="killed")
    assert live.seconds["ready"] == pytest.approx(180)


def test_no_ready_model_yet_means_no_uptime_figure(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    up = uptime(rig.history)
    assert (up.share, up.meets_target, up.sessions) == (None, None, 0)
    text = format_report(build_report(rig.history).as_dict())
    assert "Model uptime: n/a (no data for the 95 % target)" in text


def test_closed_recorder_writes_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rec = recorder(rig)
    rec.end()
    asyncio.run(rig.manager.switch_to("qwen3-8b"))
    rec.observe()
    assert states(rig) == []
