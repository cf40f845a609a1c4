"""ModelManager against the simulated 16 GB GPU with the in-test engine (see manager_fakes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.base import (
    ContextTooLongError,
    EngineTimeoutError,
    ModelDirectoryError,
)
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.manager.memory_wait import MemoryNotReturnedError, wait_for_memory
from core.manager.plan import DeviceReading, effective_cascade, next_models
from core.models.catalog import UnknownModelError
from tests.core.manager_fakes import GIB, DrivenClock, RecordingEngine, make_rig

FOUR_B = "qwen3-4b-instruct-2507"


def phases(events: list[object], switch_id: int | None = None) -> list[str]:
    return [e.phase.value for e in events
            if isinstance(e, SwitchEvent) and (switch_id is None or e.switch_id == switch_id)]


def test_switch_loads_reports_memory_and_records_history(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.outcome == "ready"
    assert rig.manager.active_model == FOUR_B
    assert phases(rig.events) == ["planning", "checking", "loading", "warming_up", "ready",
                                  "settled"]
    assert rig.manager.state.switching_to is None
    # The simulated device's VRAM follows what the manager reported, and stays within the card.
    snap = rig.gpu.sample()
    loaded = rig.activity.state().loaded_bytes
    assert loaded == rig.manager.state.loaded_bytes > 8 * GIB
    assert snap.vram_used_bytes == rig.vram_in_use() <= snap.vram_total_bytes
    spec = rig.engines[0].spec
    assert spec is not None
    assert 0 < spec.memory_utilization <= 1
    assert spec.max_model_len <= 32768
    assert not spec.trust_remote_code
    [row] = rig.history.recent()
    assert (row.from_model, row.to_model, row.reason, row.outcome) == (None, FOUR_B, "manual",
                                                                     "ready")
    assert set(row.phases) == {"planning", "checking", "loading", "warming_up"}
    assert row.phases["loading"] == pytest.approx(2.0)  # the engine's (driven) load time


def test_switching_to_the_active_model_is_a_noop(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> str:
        await rig.manager.switch_to(FOUR_B)
        return (await rig.manager.switch_to(FOUR_B)).outcome

    assert asyncio.run(run()) == "noop"
    assert len(rig.engines) == 1
    assert rig.history.count() == 1


def test_switch_unloads_waits_for_memory_then_loads(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        await rig.manager.switch_to("qwen3-8b", reason="router")

    asyncio.run(run())
    assert rig.engines[0].shut
    assert not rig.engines[1].shut
    assert not RecordingEngine.overlap_seen
    row = rig.history.recent()[0]
    assert (row.from_model, row.to_model, row.reason) == (FOUR_B, "qwen3-8b", "router")
    assert "unloading" in row.phases
    assert "waiting_for_memory" in row.phases
    # The simulated device frees memory as soon as the engine is gone: no poll interval is spent.
    assert row.phases["waiting_for_memory"] == 0.0


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    with pytest.raises(UnknownModelError, match="known models"):
        asyncio.run(rig.manager.switch_to("qwen3-8b-base"))


def test_model_that_cannot_fit_is_refused_and_falls_back(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    result = asyncio.run(rig.manager.switch_to("qwen3-30b-a3b-instruct-2507"))
    assert result.outcome == "fallback"
    assert result.active == "qwen3-14b"
    refused, ready = reversed(rig.history.recent())
    assert refused.outcome == "refused"
    assert "memory" in (refused.error or "")
    assert "GiB" in (refused.error or "")  # the refusal carries the numbers
    assert (ready.reason, ready.outcome) == ("fallback", "ready")
    assert "fallback" in phases(rig.events)


def test_failed_load_moves_down_the_cascade_and_records_the_error(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next("qwen3-8b", ModelDirectoryError("/m/qwen3-8b", "no config.json"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert result.outcome == "fallback"
    assert result.active == FOUR_B
    failed = rig.history.recent()[1]
    assert failed.outcome == "failed"
    assert "no config.json" in (failed.error or "")
    assert len(RecordingEngine.loaded) == 1
    assert rig.engines[0].shut


def test_transient_failures_are_retried(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next(FOUR_B, EngineTimeoutError("slow"), EngineTimeoutError("slow"))
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.outcome == "ready"
    assert rig.history.recent()[0].attempts == 3
    assert [e.shut for e in rig.engines] == [True, True, False]


def test_retries_are_bounded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next("demo-tiny-b", *[EngineTimeoutError("slow")] * 3)
    result = asyncio.run(rig.manager.switch_to("demo-tiny-b"))
    # demo-tiny-b is last of the local tier; its peer demo-tiny-a (same size) is tried next.
    assert result.outcome == "fallback"
    assert result.active == "demo-tiny-a"
    assert "gave up after 3 attempts" in result.errors[0]


def test_context_too_long_retries_with_what_fits(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next(FOUR_B, ContextTooLongError(32768, 4096))
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.outcome == "ready"
    assert [e.spec.max_model_len for e in rig.engines if e.spec] == [32768, 4096]
    assert rig.manager.state.max_model_len == 4096


def test_memory_not_coming_back_falls_back_instead_of_leaving_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    # Another process grabs memory as the 4B goes: its memory never comes back.
    original = rig.engines[0].shutdown

    async def shutdown_and_grab() -> None:
        await original()
        rig.probe.other_process_bytes = 6 * GIB

    rig.engines[0].shutdown = shutdown_and_grab  # type: ignore[method-assign]
    result = asyncio.run(rig.manager.switch_to("qwen3-14b"))
    assert result.outcome == "fallback"
    assert rig.manager.active_model is not None
    assert "did not come back after unloading" in result.errors[0]
    assert rig.clock.now >= 30  # it waited the configured timeout, polling


def test_refusal_after_unloading_falls_back_instead_of_leaving_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    inner_read = rig.probe.read
    unloaded = [False]

    def read() -> DeviceReading:
        r = inner_read()
        if unloaded[0] and r.free_bytes is not None and r.free_bytes > 12 * GIB:
            # The memory came back, then another process took 6 GiB before the safety check.
            unloaded[0] = False
            rig.probe.other_process_bytes = 6 * GIB
        return r

    original = rig.engines[0].shutdown

    async def shutdown() -> None:
        await original()
        unloaded[0] = True

    rig.probe.read = read  # type: ignore[method-assign]
    rig.engines[0].shutdown = shutdown  # type: ignore[method-assign]
    result = asyncio.run(rig.manager.switch_to("qwen3-14b"))
    assert "refused after unloading" in result.errors[0]
    assert "memory" in result.errors[0]
    assert result.outcome == "fallback"
    assert rig.manager.active_model is not None
    assert rig.history.recent()[-2].outcome == "refused"


def test_too_hot_refuses_before_unloading_and_keeps_the_model(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    rig.probe.temperature_c = 90.0
    result = asyncio.run(rig.manager.switch_to("qwen3-8b"))
    assert result.outcome == "fallback"
    assert result.active == FOUR_B
    assert not rig.engines[0].shut
    assert "90 °C, limit 85 °C" in result.errors[0]


def test_concurrent_requests_are_serialised_and_same_target_joins(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> list[str]:
        results = await asyncio.gather(rig.manager.switch_to(FOUR_B),
                                       rig.manager.switch_to("qwen3-8b"),
                                       rig.manager.switch_to("qwen3-8b"),
                                       rig.manager.switch_to(FOUR_B))
        return [r.active or "" for r in results]

    actives = asyncio.run(run())
    assert not RecordingEngine.overlap_seen
    # Two 8B requests joined one switch; the second 4B request was queued behind it.
    assert [e.entry.id for e in rig.engines] == [FOUR_B, "qwen3-8b", FOUR_B]
    assert actives == [FOUR_B, "qwen3-8b", "qwen3-8b", FOUR_B]


def test_cancelling_a_switch_leaves_nothing_half_loaded(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.block["qwen3-8b"] = asyncio.Event()  # never set: the load hangs until cancelled

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        task = asyncio.ensure_future(rig.manager.switch_to("qwen3-8b"))
        while not any(e.entry.id == "qwen3-8b" for e in rig.engines):  # noqa: ASYNC110
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert rig.engines[1].shut
    assert RecordingEngine.loaded == set()
    assert rig.activity.state().loaded_bytes == 0
    assert rig.manager.active_model is None
    assert rig.history.recent()[0].outcome == "cancelled"
    assert phases(rig.events)[-2:] == ["cancelled", "settled"]


def test_events_carry_an_eta_from_history(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        for target in (FOUR_B, "qwen3-8b", FOUR_B):
            await rig.manager.switch_to(target)

    asyncio.run(run())
    last = [e for e in rig.events if isinstance(e, SwitchEvent) and e.target == FOUR_B
            and e.phase is not StateChange.SETTLED][-5:]
    assert last[0].predicted_total_s is not None
    assert last[0].eta_s is not None
    assert last[0].eta_s == pytest.approx(last[0].predicted_total_s)
    assert last[-1].phase is SwitchPhase.READY
    assert last[-1].progress == 1.0
    assert rig.history.predicted_duration(FOUR_B, "qwen3-8b") is not None


def test_close_shuts_the_engine_down(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        await rig.manager.close()

    asyncio.run(run())
    assert rig.engines[0].shut
    assert rig.activity.state().loaded_bytes == 0
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(rig.manager.switch_to(FOUR_B))


def test_private_task_never_falls_back_to_remote(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, on_disk=lambda e: e.id == "qwen3-8b")
    rig.script.fail_next("qwen3-8b", ModelDirectoryError("/m", "broken"))
    result = asyncio.run(rig.manager.switch_to("qwen3-8b", private=True))
    assert result.outcome == "failed"
    assert result.active is None
    assert all(e.entry.id != "remote" for e in rig.engines)


# -- memory wait -------------------------------------------------------------------------------
class ReturningProbe:
    """Free memory comes back at a given (driven) time."""

    def __init__(self, clock: DrivenClock, back_at: float, before: int, after: int) -> None:
        self.clock, self.back_at, self.before, self.after = clock, back_at, before, after

    def read(self) -> DeviceReading:
        free = self.after if self.clock() >= self.back_at else self.before
        return DeviceReading(free, 16 * GIB)


def test_memory_wait_ends_within_one_poll_of_the_memory_returning() -> None:
    clock = DrivenClock(0.0)
    probe = ReturningProbe(clock, back_at=0.9, before=2 * GIB, after=10 * GIB)
    result = asyncio.run(wait_for_memory(probe, free_before_unload=2 * GIB,
                                         released_bytes=8 * GIB, poll_interval_s=0.25,
                                         timeout_s=30, clock=clock, sleep=clock.sleep))
    assert 0.9 <= result.waited_s < 0.9 + 0.25
    assert result.polls == 5


def test_memory_wait_times_out_with_a_clear_error() -> None:
    clock = DrivenClock(0.0)
    probe = ReturningProbe(clock, back_at=1e9, before=2 * GIB, after=10 * GIB)
    with pytest.raises(MemoryNotReturnedError, match=r"2\.00 GiB free after 5\.0 s"):
        asyncio.run(wait_for_memory(probe, free_before_unload=2 * GIB, released_bytes=8 * GIB,
                                    poll_interval_s=0.25, timeout_s=5, clock=clock,
                                    sleep=clock.sleep))


def test_memory_wait_stops_once_free_memory_covers_the_next_model() -> None:
    """Host RAM (and a GPU shared with other programs) never gives back exactly what the old
    model took; enough free memory for the next load ends the wait."""
    clock = DrivenClock(0.0)
    # 150 MiB short of the 75 % of the old model's memory the wait asks for, for ever.
    probe = ReturningProbe(clock, back_at=0.5, before=2 * GIB, after=8 * GIB - 150 * 1024**2)
    kwargs = dict(free_before_unload=2 * GIB, released_bytes=8 * GIB, poll_interval_s=0.25,
                  timeout_s=5, clock=clock, sleep=clock.sleep)
    with pytest.raises(MemoryNotReturnedError):
        asyncio.run(wait_for_memory(probe, **kwargs))  # type: ignore[arg-type]
    clock = DrivenClock(0.0)
    probe = ReturningProbe(clock, back_at=0.5, before=2 * GIB, after=8 * GIB - 150 * 1024**2)
    kwargs.update(clock=clock, sleep=clock.sleep)
    result = asyncio.run(wait_for_memory(probe, sufficient_free_bytes=3 * GIB,
                                         **kwargs))  # type: ignore[arg-type]
    assert 0.5 <= result.waited_s < 0.5 + 0.25  # still waits for the unload to show


# -- cascade -----------------------------------------------------------------------------------
def test_fallback_order_goes_down_then_to_equal_sized_peers() -> None:
    cascade = ("30b", "14b", "8b", "4b", "demo-a", "demo-b", "remote")
    size = {"30b": 16, "14b": 9, "8b": 6, "4b": 8, "demo-a": 1, "demo-b": 1}
    order = next_models("demo-b", cascade, lambda m: size.get(m))
    assert order == ["remote", "demo-a"]
    assert next_models("14b", cascade, lambda m: size.get(m))[:3] == ["8b", "4b", "demo-a"]
    assert next_models("elsewhere", cascade, lambda m: size.get(m)) == list(cascade)


def test_step_down_takes_only_strictly_smaller_local_models() -> None:
    cascade = ("30b", "14b", "8b", "4b", "demo-big", "demo-a", "demo-b", "remote")
    size = {"30b": 16, "14b": 9, "8b": 6, "4b": 8, "demo-big": 2, "demo-a": 1, "demo-b": 1}
    # The 4B in FP16 needs more than the 8B in AWQ: it is not a step down from the 8B.
    assert next_models("8b", cascade, lambda m: size.get(m), smaller_only=True) == [
        "demo-big", "demo-a", "demo-b"]
    assert next_models("demo-big", cascade, lambda m: size.get(m), smaller_only=True) == [
        "demo-a", "demo-b"]
    # Equal-sized peers and the remote endpoint are no step down.
    assert next_models("demo-a", cascade, lambda m: size.get(m), smaller_only=True) == []


def test_effective_cascade_puts_the_local_tier_before_remote() -> None:
    assert effective_cascade(("14b", "4b", "remote"), ("demo-a", "demo-b")) == (
        "14b", "4b", "demo-a", "demo-b", "remote")


def test_every_switch_ends_with_settled_seen_with_no_switch_in_flight(tmp_path: Path) -> None:
    """A view refreshed on the last event of a switch (begun anywhere: a click, the API, the
    router) must not show it as still running: the header once said "switching to" for ever."""
    rig = make_rig(tmp_path)
    seen: list[tuple[str, str | None, str | None]] = []
    rig.manager.subscribe(lambda e: seen.append(
        (e.phase.value, rig.manager.state.switching_to, rig.manager.active_model)))
    rig.script.fail_next("qwen3-8b", ModelDirectoryError("/m/qwen3-8b", "no config.json"))

    async def run() -> list[str]:
        return [(await rig.manager.switch_to(target)).outcome
                for target in (FOUR_B, "qwen3-8b", "qwen3-4b-thinking-2507", FOUR_B)]

    outcomes = asyncio.run(run())
    assert "noop" not in outcomes
    settled = [s for s in seen if s[0] == "settled"]
    assert len(settled) == 4
    assert all(switching is None for _, switching, _ in settled)
    assert settled[0][2] == FOUR_B
    assert seen[-1] == ("settled", None, rig.manager.active_model)
    assert all(s[1] is not None for s in seen if s[0] in ("planning", "loading", "ready"))
