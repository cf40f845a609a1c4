"""What the manager does outside a switch: an engine that dies on its own (the crash row, the event,
the crash-loop guard and its window), an emergency unload, and the fallback offers it makes.

Driven through the public API with the in-test engine on the simulated 16 GB GPU (manager_fakes).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from core.history_store import NO_MODEL
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.manager.manager import CRASH_LOOP_WINDOW_S
from tests.core.manager_fakes import GIB, RecordingEngine, make_rig

FOUR_B, B8, B14 = "qwen3-4b-instruct-2507", "qwen3-8b", "qwen3-14b"


def events_of(rig: object, phase: SwitchPhase) -> list[SwitchEvent]:
    return [e for e in rig.events if isinstance(e, SwitchEvent) and e.phase is phase]  # type: ignore[attr-defined]


def test_a_dead_engine_is_a_crash_row_an_event_and_no_active_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(tmp_path)
    caplog.set_level(logging.WARNING, logger="core.manager.manager")

    async def run() -> bool:
        await rig.manager.switch_to(FOUR_B)
        rig.engines[-1].crash("process 4242 was killed by signal SIGKILL")
        return await rig.manager.check_engine()

    assert asyncio.run(run()) is False
    assert rig.manager.active_model is None
    assert rig.activity.state().loaded_bytes == 0  # the dead engine holds no memory
    crash = rig.history.recent()[0]
    assert (crash.from_model, crash.to_model, crash.reason, crash.outcome) == (
        FOUR_B, NO_MODEL, "crash", "crashed")
    assert crash.error == "process 4242 was killed by signal SIGKILL"
    assert (crash.total_s, crash.phases) == (0.0, {})
    [event] = events_of(rig, StateChange.CRASHED)
    assert (event.switch_id, event.target, event.from_model, event.reason) == (
        0, FOUR_B, FOUR_B, "crash")
    assert event.error == "process 4242 was killed by signal SIGKILL"
    assert event.elapsed_s == 0.0
    assert ("core.manager.manager", logging.ERROR, event.message) in caplog.record_tuples
    assert event.message == (f"{FOUR_B} crashed: process 4242 was killed by signal SIGKILL "
                             "The next request loads it again.")
    assert rig.engines[-1].shut  # what was left of it was reaped
    assert rig.manager.crashing_models() == {}
    # A second check finds nothing loaded: no second row.
    assert asyncio.run(rig.manager.check_engine()) is True
    assert rig.history.count() == 2


def test_an_engine_that_stops_answering_is_described_so(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        await rig.engines[-1].shutdown()  # unhealthy without a `died` reason
        await rig.manager.check_engine()

    asyncio.run(run())
    assert rig.history.recent()[0].error == "the engine stopped responding"


def test_the_crash_loop_guard_counts_three_deaths_in_ten_minutes(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def crash_once() -> None:
        await rig.manager.switch_to(FOUR_B)
        rig.engines[-1].crash()
        await rig.manager.check_engine()

    async def run() -> None:
        await crash_once()
        rig.clock.now += 100
        await crash_once()
        assert rig.manager.crashing_models() == {}  # two deaths: reloaded
        rig.clock.now += 100
        await crash_once()

    asyncio.run(run())
    # Three deaths within 600 s: the guard stops reloads for what is left of the window.
    crashing = rig.manager.crashing_models()
    first_death = rig.clock.now - 200 - 2 * 2.0  # two loads of 2 s each in between
    left = CRASH_LOOP_WINDOW_S - (rig.clock.now - first_death)
    assert crashing == {FOUR_B: f"its engine died 3 times in the last 10 minutes; not reloaded "
                                f"for {left:.0f} s"}
    last = events_of(rig, StateChange.CRASHED)[-1]
    assert last.message.endswith(f"Crash-loop guard: {crashing[FOUR_B]}; requests fall back "
                                 "down the cascade.")
    assert rig.manager.state.crashing == crashing
    assert FOUR_B not in rig.manager.next_models(B8)
    plan = rig.manager.plan_switch(FOUR_B)
    assert not plan.ok
    # A request for it falls back instead of reloading it.
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.active != FOUR_B
    # Once the first death is more than ten minutes old, the model loads again.
    rig.clock.now = first_death + CRASH_LOOP_WINDOW_S + 1
    assert rig.manager.crashing_models() == {}
    assert FOUR_B in rig.manager.next_models(B8)


def test_the_guard_window_edge(tmp_path: Path) -> None:
    """A death exactly 600 s ago still counts; a second later it does not."""
    rig = make_rig(tmp_path)

    async def crash_once() -> None:
        await rig.manager.switch_to(FOUR_B)
        rig.engines[-1].crash()
        await rig.manager.check_engine()

    async def run() -> float:
        await crash_once()
        first = rig.clock.now
        await crash_once()
        await crash_once()
        return first

    first = asyncio.run(run())
    rig.clock.now = first + CRASH_LOOP_WINDOW_S
    assert FOUR_B in rig.manager.crashing_models()
    assert rig.manager.crashing_models()[FOUR_B].endswith("not reloaded for 0 s")
    rig.clock.now = first + CRASH_LOOP_WINDOW_S + 0.5
    assert rig.manager.crashing_models() == {}


def test_emergency_unload_records_why_and_leaves_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(tmp_path)
    caplog.set_level(logging.WARNING, logger="core.manager.manager")

    async def run() -> tuple[float | None, float | None]:
        await rig.manager.switch_to(B8)
        took = await rig.manager.emergency_unload("GPU at 96 C")
        again = await rig.manager.emergency_unload("GPU at 96 C")
        return took, again

    took, again = asyncio.run(run())
    assert took is not None
    assert took >= 0
    assert again is None  # nothing loaded: nothing to do, no row
    assert rig.manager.active_model is None
    assert rig.engines[-1].shut
    assert rig.activity.state().loaded_bytes == 0
    assert rig.history.count() == 2
    row = rig.history.recent()[0]
    assert (row.from_model, row.to_model, row.reason, row.outcome, row.forced) == (
        B8, NO_MODEL, "alert", "unloaded", True)
    assert row.error == f"GPU at 96 C: unloaded {B8} in {took:.1f} s"
    assert row.total_s < 1.0  # the unload's own time on the manager's clock
    assert ("core.manager.manager", logging.WARNING, row.error) in caplog.record_tuples
    assert set(row.phases) == {"unloading"}
    assert row.phases["unloading"] == pytest.approx(took)
    [event] = events_of(rig, StateChange.UNLOADED)
    assert (event.switch_id, event.target, event.from_model, event.reason) == (0, B8, B8, "alert")
    assert event.message == row.error
    assert event.elapsed_s == pytest.approx(took)


def test_fallback_events_name_the_failure_and_the_next_model(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.probe.other_process_bytes = 6 * GIB  # 14B no longer fits: refused, then 8B

    result = asyncio.run(rig.manager.switch_to(B14))
    assert result.outcome == "fallback"
    [fallback, *_] = events_of(rig, SwitchPhase.FALLBACK)
    assert fallback.switch_id == 0
    assert fallback.from_model is None
    assert fallback.reason == "manual"
    assert (fallback.elapsed_s, fallback.eta_s, fallback.predicted_total_s, fallback.attempt) == (
        0.0, None, None, 1)
    assert fallback.message.startswith(f"{B14}: refused: ")
    assert fallback.message.endswith(f" - falling back to {fallback.target}")
    assert fallback.error is None


def test_a_failed_cascade_event_lists_every_error(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, on_disk=lambda e: e.id == B14)
    rig.probe.other_process_bytes = 12 * GIB  # nothing fits

    result = asyncio.run(rig.manager.switch_to(B14))
    assert result.outcome == "failed"
    failed = [e for e in events_of(rig, SwitchPhase.FAILED) if e.switch_id == 0]
    assert len(failed) == 1
    assert failed[0].message == "; ".join(result.errors)
    assert failed[0].error == failed[0].message
    assert failed[0].from_model is None


def test_the_models_tab_offers(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.manager.needed_bytes("remote") is None
    need8 = rig.manager.needed_bytes(B8)
    assert need8 is not None
    assert rig.manager.needed_bytes(FOUR_B) is not None
    assert need8 > 5 * GIB
    assert rig.manager.model_bytes(B8) is not None
    assert rig.manager.model_bytes(B14) > rig.manager.model_bytes(B8)  # type: ignore[operator]
    # Nothing active: no step-down.
    assert rig.manager.smaller_model() is None
    # The first next model whose plan passes now.
    rig.probe.other_process_bytes = 6 * GIB
    offer = rig.manager.first_fallback(B14)
    assert offer is not None
    assert rig.manager.plan_switch(offer).ok
    assert rig.manager.model_bytes(offer) < rig.manager.model_bytes(B14)  # type: ignore[operator]
    rig.probe.other_process_bytes = 15 * GIB  # nothing local fits; no remote configured
    assert rig.manager.first_fallback(B14) is None

    async def run() -> str | None:
        await rig.manager.switch_to(B8)
        return rig.manager.smaller_model()

    rig.probe.other_process_bytes = 0
    smaller = asyncio.run(run())
    assert smaller is not None
    assert rig.manager.model_bytes(smaller) < rig.manager.model_bytes(B8)  # type: ignore[operator]


def test_the_warm_up_is_one_short_deterministic_request(tmp_path: Path) -> None:
    from core.engine.base import ChatMessage

    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    [request] = rig.engines[0].requests
    assert request.messages == (ChatMessage("user", "Hi"),)
    assert (request.max_tokens, request.temperature) == (2, 0.0)
    assert request.request_id == f"warmup-{FOUR_B}"


def test_an_error_without_a_message_is_named_by_its_type(tmp_path: Path) -> None:
    from core.engine.base import EngineTimeoutError

    rig = make_rig(tmp_path, on_disk=lambda e: e.id == FOUR_B)
    rig.script.fail_next(FOUR_B, EngineTimeoutError(), EngineTimeoutError(),
                         EngineTimeoutError())
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.outcome == "failed"
    assert result.errors[0] == (f"{FOUR_B}: EngineTimeoutError (gave up after 3 attempts)")
    assert rig.activity.state().loading is False  # a discarded engine is not "loading"
    assert rig.activity.state().loaded_bytes == 0


def test_the_watcher_sees_a_death_by_itself_and_leaves_a_healthy_engine_alone(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> tuple[str | None, str | None]:
        await rig.manager.switch_to(FOUR_B)
        await asyncio.sleep(0.7)  # more than one watch interval (0.5 s), real time
        healthy = rig.manager.active_model
        rig.engines[-1].crash()
        for _ in range(40):
            if rig.manager.active_model is None:
                break
            await asyncio.sleep(0.05)
        return healthy, rig.manager.active_model

    healthy, after = asyncio.run(run())
    assert healthy == FOUR_B
    assert after is None
    assert [r.outcome for r in rig.history.recent()] == ["crashed", "ready"]


def test_cancel_switches_ends_a_switch_in_flight(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.block[B8] = asyncio.Event()  # the load never finishes by itself

    async def run() -> None:
        task = asyncio.ensure_future(rig.manager.switch_to(B8))
        while not rig.engines:  # noqa: ASYNC110
            await asyncio.sleep(0)
        await asyncio.wait_for(rig.manager.cancel_switches(), 10)  # returns, does not raise
        assert task.done()
        assert task.cancelled()

    asyncio.run(run())
    assert rig.manager.active_model is None
    assert rig.engines[0].shut
    assert rig.history.recent()[0].outcome == "cancelled"


def test_enough_free_memory_ends_the_wait_before_all_of_it_is_back(tmp_path: Path) -> None:
    """8B -> a demo model while another process keeps 4 GiB of what the 8B released: the free
    memory already covers the small model and the buffer, so the switch goes on without
    waiting for the 8B's memory (which never all comes back)."""
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(B8))
    original = rig.engines[0].shutdown

    async def shutdown_and_hold() -> None:
        await original()
        rig.probe.other_process_bytes = 4 * GIB

    rig.engines[0].shutdown = shutdown_and_hold  # type: ignore[method-assign]
    result = asyncio.run(rig.manager.switch_to("demo-tiny-a"))
    assert (result.outcome, result.active) == ("ready", "demo-tiny-a")
    row = rig.history.recent()[0]
    assert row.phases["waiting_for_memory"] < 1.0  # not the 30 s timeout


def test_memory_that_never_comes_back_is_waited_for_the_configured_time(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    original = rig.engines[0].shutdown

    async def shutdown_and_grab() -> None:
        await original()
        rig.probe.other_process_bytes = 6 * GIB

    rig.engines[0].shutdown = shutdown_and_grab  # type: ignore[method-assign]
    asyncio.run(rig.manager.switch_to(B14))
    failed = next(r for r in rig.history.recent() if r.to_model == B14)
    # memory_return_timeout_seconds=30, polled every 0.25 s on the manager's clock.
    assert 30.0 <= failed.phases["waiting_for_memory"] <= 30.25


def test_first_fallback_keeps_a_private_task_local(tmp_path: Path) -> None:
    from core.models.catalog import load_catalog

    base = load_catalog(models_dir=tmp_path / "models")
    remote = base.get("remote").model_copy(update={
        "enabled": True, "base_url": "http://gpu-box:8000/v1", "remote_model": "big"})
    rig = make_rig(tmp_path, catalog=base.with_entry(remote))
    rig.probe.other_process_bytes = 15 * GIB  # no local model fits
    assert rig.manager.first_fallback(B14) == "remote"
    assert rig.manager.next_models(B14)[-1] == "remote"  # by default a task may go remote
    assert "remote" not in rig.manager.next_models(B14, private=True)
    assert rig.manager.first_fallback(B14, private=True) is None


def test_a_fallback_event_names_the_model_still_active(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    rig.probe.temperature_c = 95.0  # every switch refused by the gate, before any unload
    result = asyncio.run(rig.manager.switch_to(B14))
    assert (result.outcome, result.active) == ("fallback", FOUR_B)
    [fallback, *_] = events_of(rig, SwitchPhase.FALLBACK)
    assert fallback.from_model == FOUR_B


def test_close_leaves_no_task_of_the_manager_running(tmp_path: Path) -> None:
    """Each switch stops the last engine's watcher; close waits until every stopped one has
    ended, so the app's loop closes with nothing pending."""
    rig = make_rig(tmp_path)

    async def run() -> set[asyncio.Task[object]]:
        await rig.manager.switch_to(FOUR_B)
        await rig.manager.switch_to(B8)  # the 4B's watcher is stopped

        async def shutdown_at_once() -> None:  # an engine already gone: nothing to wait for
            RecordingEngine.loaded.discard(rig.engines[-1])

        rig.engines[-1].shutdown = shutdown_at_once  # type: ignore[method-assign]
        await rig.manager.close()  # the 8B's watcher is stopped too
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(run()) == set()


def test_cancel_returns_when_a_cancelled_switch_ends_with_an_error(tmp_path: Path) -> None:
    """The GUI's Cancel: a switch whose engine fails to shut down while it is cancelled ends
    with that error, and Cancel still returns."""
    rig = make_rig(tmp_path)
    rig.script.block[B8] = asyncio.Event()  # the load never finishes by itself

    async def run() -> asyncio.Task[object]:
        task = asyncio.ensure_future(rig.manager.switch_to(B8))
        while not rig.engines:  # noqa: ASYNC110
            await asyncio.sleep(0)

        async def broken_shutdown() -> None:
            raise RuntimeError("engine would not stop")

        rig.engines[0].shutdown = broken_shutdown  # type: ignore[method-assign]
        await asyncio.wait_for(rig.manager.cancel_switches(), 10)  # returns, does not raise
        return task

    task = asyncio.run(run())
    assert task.done()
    assert not task.cancelled()
    assert str(task.exception()) == "engine would not stop"


class SilentEngine(RecordingEngine):
    """An engine that says nothing about how it ended (no `died`, like RemoteEngine): only its
    health check fails."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        del self.died
        self.answering = True

    def is_healthy(self) -> bool:
        return not self.shut and self.answering


def test_an_engine_that_stops_answering_is_a_crash_that_says_so(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, engine_class=SilentEngine)

    async def run() -> bool:
        await rig.manager.switch_to(FOUR_B)
        rig.engines[-1].answering = False  # type: ignore[attr-defined]
        return await rig.manager.check_engine()

    assert asyncio.run(run()) is False
    assert rig.manager.active_model is None
    row = rig.history.recent()[0]
    assert (row.from_model, row.to_model, row.outcome, row.error) == (
        FOUR_B, NO_MODEL, "crashed", "the engine stopped responding")


def test_a_switch_during_the_watchers_clean_up_does_not_cancel_it(tmp_path: Path) -> None:
    """The watcher saw a death and is reaping the dead engine (slow) when a request loads the
    next model: the reaping still finishes."""
    rig = make_rig(tmp_path)

    async def run() -> list[str]:
        await rig.manager.switch_to(FOUR_B)
        dead = rig.engines[-1]
        release = asyncio.Event()
        reaped: list[str] = []

        async def slow_shutdown() -> None:
            await release.wait()
            reaped.append(dead.entry.id)

        dead.shutdown = slow_shutdown  # type: ignore[method-assign]
        dead.crash()
        for _ in range(40):  # the watcher polls every 0.5 s (real time)
            if rig.manager.active_model is None:
                break
            await asyncio.sleep(0.05)
        # (The dead engine's memory is not given back until it is reaped: a smaller model.)
        assert (await rig.manager.switch_to(B8)).ok  # watched from now on
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        await rig.manager.close()
        return reaped

    assert asyncio.run(run()) == [FOUR_B]
