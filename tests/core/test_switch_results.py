"""Every field of what a switch returns and announces: the SwitchResult of a fallback and of a
failed cascade (its first plan, duration, forced flag), the events of a failed attempt, of a
cancelled switch and of the end of every switch (settled), with their elapsed time and ETA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.base import ModelDirectoryError
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.manager.manager import SwitchResult
from tests.core.manager_fakes import Rig, make_rig, until

FOUR_B, B8, B14 = "qwen3-4b-instruct-2507", "qwen3-8b", "qwen3-14b"


def switch_events(rig: Rig, phase: SwitchPhase | StateChange) -> list[SwitchEvent]:
    return [e for e in rig.events if isinstance(e, SwitchEvent) and e.phase is phase]


def broken(model: str) -> ModelDirectoryError:
    return ModelDirectoryError(f"/models/{model}", "config.json")


def timed_switch(rig: Rig, target: str, **how: bool | str) -> tuple[SwitchResult, float]:
    """The switch's result and how far the driven clock moved while it ran."""

    async def run() -> tuple[SwitchResult, float]:
        started = rig.clock.now
        result = await rig.manager.switch_to(target, **how)  # type: ignore[arg-type]
        return result, rig.clock.now - started

    return asyncio.run(run())


def test_a_fallback_result_keeps_the_first_plan_the_duration_and_the_forced_flag(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.probe.temperature_c = 95.0  # over the gate: only a forced plan passes
    rig.script.fail_next(B14, broken(B14))

    result, took = timed_switch(rig, B14, reason="alert", force=True)
    assert (result.requested, result.active, result.outcome, result.reason, result.forced) == (
        B14, B8, "fallback", "alert", True)
    assert result.plan is not None
    assert (result.plan.target, result.plan.ok) == (B14, True)  # planned forced, not private
    assert "(gate skipped: forced)" in next(
        c.detail for c in result.plan.checks if c.name == "temperature")
    assert result.total_s == pytest.approx(took)
    assert took > 0
    assert len(result.history_ids) == 2


def test_a_failed_cascade_says_every_error_once_in_its_result_and_event(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    for model in (B8, FOUR_B, "demo-tiny-a", "demo-tiny-b"):
        rig.script.fail_next(model, broken(model))

    result, took = timed_switch(rig, B8, reason="router", force=True)
    assert (result.outcome, result.active, result.reason, result.forced) == (
        "failed", None, "router", True)
    assert result.plan is not None
    assert result.plan.target == B8
    assert result.total_s == pytest.approx(took)
    assert took > 0
    joined = "; ".join(result.errors)
    [whole] = [e for e in switch_events(rig, SwitchPhase.FAILED) if e.switch_id == 0]
    assert (whole.target, whole.reason, whole.message, whole.error) == (
        B8, "router", joined, joined)
    # Each attempt's own FAILED event carries its error as message and error.
    attempts = [e for e in switch_events(rig, SwitchPhase.FAILED) if e.switch_id != 0]
    assert [e.target for e in attempts] == [B8, FOUR_B, "demo-tiny-a", "demo-tiny-b"]
    for event in attempts:
        assert event.error == event.message
        assert event.message.startswith(f"Model directory /models/{event.target}")


def test_every_switch_event_counts_elapsed_time_from_the_switchs_start(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.load_seconds = 2.0

    async def run() -> float:
        await rig.manager.switch_to(FOUR_B)
        rig.events.clear()
        started = rig.clock.now
        await rig.manager.switch_to(B8)
        return started

    started = asyncio.run(run())
    events = [e for e in rig.events if isinstance(e, SwitchEvent) and e.switch_id != 0]
    assert events, "no switch events"
    assert all(0 <= e.elapsed_s <= rig.clock.now - started for e in events)
    ready = switch_events(rig, SwitchPhase.READY)[-1]
    assert ready.elapsed_s == pytest.approx(rig.clock.now - started)
    assert ready.eta_s == 0.0  # the end says nothing is left
    assert ready.error is None


def test_a_retry_while_loading_predicts_what_is_left_of_the_load(tmp_path: Path) -> None:
    """A retried attempt's LOADING event carries the ETA of the load phase it is in."""
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        await rig.manager.switch_to(B8)
        await rig.manager.switch_to(FOUR_B)  # history of FOUR_B -> B8 exists now
        rig.script.fail_next(B8, TimeoutError("slow"))
        rig.events.clear()
        await rig.manager.switch_to(B8)

    asyncio.run(run())
    retry = next(e for e in switch_events(rig, SwitchPhase.LOADING) if e.attempt == 2)
    assert retry.message.startswith(f"loading {B8} (attempt 2: ")
    assert retry.eta_s is not None
    assert retry.eta_s >= 0
    assert retry.predicted_total_s is not None
    assert retry.eta_s <= retry.predicted_total_s


def test_settled_names_the_model_active_after_the_switch(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next(B14, broken(B14))

    async def run() -> float:
        await rig.manager.switch_to(FOUR_B)
        rig.events.clear()
        started = rig.clock.now
        await rig.manager.switch_to(B14, reason="router")  # falls back to the 8B
        return started

    started = asyncio.run(run())
    [settled] = switch_events(rig, StateChange.SETTLED)
    assert (settled.switch_id, settled.target, settled.from_model, settled.reason) == (
        0, B8, B8, "router")
    assert settled.elapsed_s == pytest.approx(rig.clock.now - started)


def test_a_cancelled_switch_says_so(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.block[B8] = asyncio.Event()

    async def run() -> None:
        loading = asyncio.Event()
        rig.manager.subscribe(lambda e: loading.set() if isinstance(e, SwitchEvent)
                              and e.phase is SwitchPhase.LOADING else None)
        task = asyncio.ensure_future(rig.manager.switch_to(B8))
        await loading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    [cancelled] = switch_events(rig, SwitchPhase.CANCELLED)
    assert (cancelled.target, cancelled.message, cancelled.eta_s) == (
        B8, "switch cancelled", 0.0)


@pytest.mark.parametrize("force", [False, True])
def test_falling_back_to_the_model_already_active_keeps_it_and_the_first_plan(
        tmp_path: Path, force: bool) -> None:
    """The 14B is refused before anything is unloaded (not on disk); the cascade's next model
    is the 8B, loaded already: nothing is reloaded, and the result still says what was asked
    and planned."""
    rig = make_rig(tmp_path, on_disk=lambda entry: entry.id != B14)
    asyncio.run(rig.manager.switch_to(B8))

    result, took = timed_switch(rig, B14, reason="router", force=force)
    assert (result.requested, result.active, result.outcome, result.forced) == (
        B14, B8, "fallback", force)
    assert result.total_s == pytest.approx(took)
    assert result.plan is not None
    assert (result.plan.target, result.plan.ok) == (B14, False)
    assert len(rig.engines) == 1  # the 8B's first load only
    assert [(r.to_model, r.outcome) for r in rig.history.recent(5)] == [
        (B14, "refused"), (B8, "ready")]  # no second row for the 8B kept as it was
    assert switch_events(rig, SwitchPhase.FALLBACK) == []


def test_a_plan_names_the_active_model_and_the_pairs_own_prediction(tmp_path: Path) -> None:
    from core.manager.plan import DeviceReading

    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(B8))
    # A history where the pair (8B -> 4B) took 7 s and other switches to the 4B took 100 s.
    for source, seconds in ((B8, 7.0), (B14, 100.0), (None, 100.0)):
        rig.history.record_switch(from_model=source, to_model=FOUR_B, reason="manual",
                                  outcome="ready", total_s=seconds, phases={})
    plan = rig.manager.plan_switch(FOUR_B)
    assert (plan.target, plan.from_model, plan.ok, plan.noop) == (FOUR_B, B8, True, False)
    assert plan.predicted_s == pytest.approx(7.0)
    memory = next(c for c in plan.checks if c.name == "memory")
    free_now = rig.probe.read().free_bytes
    assert free_now is not None
    # The memory check counts what the active 8B frees when it is unloaded.
    assert plan.fit is not None
    assert memory.detail.startswith(
        f"{(free_now + rig.manager.state.loaded_bytes) / 1024**3:.2f} GiB free after unloading")
    # A reading the caller already took is planned against, not a fresh one.
    hot = DeviceReading(free_now, rig.probe.read().total_bytes, temperature_c=95.0)
    assert [c.name for c in rig.manager.plan_switch(FOUR_B, reading=hot).checks
            if not c.passed] == ["temperature"]


def test_a_plan_refuses_a_local_model_that_is_not_on_disk(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, on_disk=lambda entry: entry.id != B14)
    plan = rig.manager.plan_switch(B14)
    assert [(c.name, c.detail) for c in plan.checks if not c.passed] == [
        ("on_disk", f"{B14} is not on disk")]


def test_a_request_for_the_target_in_flight_joins_it(tmp_path: Path) -> None:
    """Two callers ask for the same model at once: one load, and both get its result (the
    second is not a later no-op)."""
    rig = make_rig(tmp_path)

    async def run() -> list[SwitchResult]:
        return list(await asyncio.gather(rig.manager.switch_to(B8),
                                         rig.manager.switch_to(B8, reason="router")))

    first, second = asyncio.run(run())
    assert first.outcome == second.outcome == "ready"
    assert second is first  # the same switch, shared
    assert len(rig.engines) == 1


def test_asking_for_the_active_model_while_idle_announces_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> SwitchResult:
        await rig.manager.switch_to(B8)
        rig.events.clear()
        return await rig.manager.switch_to(B8)

    assert asyncio.run(run()).outcome == "noop"
    assert rig.events == []  # no switch ran: no phase, no "settled"


def test_a_closed_manager_refuses_switches_and_says_why(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.close()
        with pytest.raises(RuntimeError, match=r"^the model manager is closed$"):
            await rig.manager.switch_to(B8)

    asyncio.run(run())


def test_a_switch_announces_each_phase_in_words(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        rig.events.clear()
        await rig.manager.switch_to(B8)

    asyncio.run(run())
    said = [(e.phase.value, e.message) for e in rig.events
            if isinstance(e, SwitchEvent) and e.switch_id != 0]
    assert said == [
        ("planning", f"planning the switch to {B8}"),
        ("unloading", f"unloading {FOUR_B}"),
        ("waiting_for_memory", "waiting for the device memory to come back"),
        ("checking", "checking free memory, temperature, power"),
        ("loading", f"loading {B8}"),
        ("warming_up", "warming up with one short request"),
        ("ready", f"{B8} ready"),
    ]


def test_a_local_load_uses_the_fitted_context_and_a_remote_one_its_defaults(
        tmp_path: Path) -> None:
    from tests.core.test_manager_safety import remote_rig

    rig = remote_rig(tmp_path)
    rig.probe.other_process_bytes = 6 * 1024**3  # another program holds 6 GiB: less context fits

    async def run() -> None:
        fitted = rig.manager.plan_switch(B8).fit
        assert fitted is not None
        assert fitted.context < rig.catalog.get(B8).default_context  # type: ignore[operator]
        await rig.manager.switch_to(B8)
        spec = rig.engines[-1].spec
        assert spec is not None
        assert (spec.max_model_len, spec.memory_utilization) == (
            fitted.context, fitted.memory_utilization)
        await rig.manager.switch_to("remote")

    asyncio.run(run())
    spec = rig.engines[-1].spec
    assert spec is not None
    # No default_context set; the remote engine reserves nothing here.
    assert (spec.model_id, spec.max_model_len, spec.memory_utilization) == ("remote", 2048, 0.1)


@pytest.mark.parametrize(("target", "next_model"), [("demo-tiny-a", "demo-tiny-b"),
                                                    (FOUR_B, "demo-tiny-a")])
def test_a_forced_step_down_stays_forced_for_models_no_larger_than_its_target(
        tmp_path: Path, target: str, next_model: str) -> None:
    """Too hot for the gate, the forced target fails to load: the next model down, the same
    size (the two tiny demo models) or smaller, is forced too and loads."""
    rig = make_rig(tmp_path)
    rig.probe.temperature_c = 95.0  # over the 85 C limit: only a forced switch passes
    rig.script.fail_next(target, broken(target))
    result = asyncio.run(rig.manager.switch_to(target, reason="alert", force=True))
    assert (result.outcome, result.active) == ("fallback", next_model)
    newest = rig.history.recent(1)[0]
    assert (newest.to_model, newest.outcome, newest.forced) == (next_model, "ready", True)


def test_a_forced_switch_is_not_forced_into_a_larger_model(tmp_path: Path) -> None:
    """The gate is skipped to get smaller, never to load something bigger while hot: with a
    cascade that goes up (the tiny demo model, then the 4B), the 4B is refused on temperature."""
    from tests.core.test_manager_safety import rig_with

    rig = rig_with(tmp_path, fallback_cascade=("demo-tiny-a", FOUR_B))
    rig.probe.temperature_c = 95.0
    rig.script.fail_next("demo-tiny-a", broken("demo-tiny-a"))
    result = asyncio.run(rig.manager.switch_to("demo-tiny-a", reason="alert", force=True))
    assert (result.outcome, result.active) == ("failed", None)
    newest = rig.history.recent(1)[0]
    assert (newest.to_model, newest.outcome, newest.forced) == (FOUR_B, "refused", False)
    assert "temperature: 95" in (newest.error or "")


def test_the_eta_of_a_switch_comes_from_its_own_pair(tmp_path: Path) -> None:
    """Switches 8B -> 4B took 7 s of loading, switches to the 4B from elsewhere 100 s: a switch
    8B -> 4B predicts from its pair, and each phase's start says what is left from there."""
    rig = make_rig(tmp_path)
    for source, seconds in ((B8, 7.0), (B8, 7.0), (B14, 100.0), (None, 100.0)):
        rig.history.record_switch(from_model=source, to_model=FOUR_B, reason="manual",
                                  outcome="ready", total_s=seconds + 1,
                                  phases={"loading": seconds, "warming_up": 1.0})

    async def run() -> None:
        await rig.manager.switch_to(B8)
        rig.events.clear()
        await rig.manager.switch_to(FOUR_B)

    asyncio.run(run())
    planning = switch_events(rig, SwitchPhase.PLANNING)[0]
    assert planning.predicted_total_s == pytest.approx(8.0)
    loading = switch_events(rig, SwitchPhase.LOADING)[0]
    assert loading.eta_s == pytest.approx(8.0)  # the whole load and warm-up are still ahead


def test_a_remote_endpoint_is_configured_only_when_enabled_with_an_address(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    remote = rig.catalog.get("remote")
    for enabled, url, configured in ((True, "http://127.0.0.1:9/v1", True),
                                     (False, "http://127.0.0.1:9/v1", False),
                                     (True, None, False)):
        entry = remote.model_copy(update={"enabled": enabled, "base_url": url})
        assert rig.manager.remote_configured(entry) is configured
        assert rig.manager.is_usable(entry) is configured
    assert rig.manager.remote_configured(rig.catalog.get(B8)) is False  # a local model


def test_an_unsubscribed_callback_hears_nothing_more(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    heard: list[object] = []
    unsubscribe = rig.manager.subscribe(heard.append)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    assert heard
    unsubscribe()
    heard.clear()
    asyncio.run(rig.manager.switch_to(B8))
    assert heard == []
    assert switch_events(rig, SwitchPhase.READY)[-1].target == B8  # others still hear


def test_a_plan_is_not_private_unless_asked(tmp_path: Path) -> None:
    from tests.core.test_manager_safety import remote_rig

    rig = remote_rig(tmp_path)
    assert rig.manager.plan_switch("remote").ok
    private = rig.manager.plan_switch("remote", private=True)
    assert [c.name for c in private.checks if not c.passed] == ["private"]


def test_asking_for_the_active_model_during_a_switch_elsewhere_switches_back(
        tmp_path: Path) -> None:
    """The 4B is active and a switch to the 8B has begun (nothing unloaded yet): a request for
    the 4B is not "already active", it is queued and loads the 4B again once the 8B is in."""
    rig = make_rig(tmp_path)

    async def run() -> tuple[SwitchResult, SwitchResult]:
        await rig.manager.switch_to(FOUR_B)
        to_8b = asyncio.ensure_future(rig.manager.switch_to(B8))
        await until(lambda: rig.manager.state.switching_to == B8)
        assert rig.manager.active_model == FOUR_B  # still loaded, the switch under way
        back = await rig.manager.switch_to(FOUR_B, reason="router")
        return await to_8b, back

    first, back = asyncio.run(run())
    assert (first.outcome, first.active) == ("ready", B8)
    assert (back.outcome, back.active, back.reason) == ("ready", FOUR_B, "router")
    assert [e.entry.id for e in rig.engines] == [FOUR_B, B8, FOUR_B]


def test_a_request_joins_the_newest_switch_to_its_target_after_an_older_one_ends(
        tmp_path: Path) -> None:
    """8B (running), 4B (queued), 8B again (queued after the 4B: a new switch). When the first
    8B switch ends, a fourth request for the 8B joins the queued one, not a switch of its own,
    and cancelling every switch reaches it."""
    rig = make_rig(tmp_path)

    async def run() -> list[SwitchResult | BaseException]:
        rig.script.block[B8] = gate = asyncio.Event()
        first = asyncio.ensure_future(rig.manager.switch_to(B8))
        await until(lambda: rig.manager.state.switching_to == B8)
        to_4b = asyncio.ensure_future(rig.manager.switch_to(FOUR_B))
        await asyncio.sleep(0)
        again = asyncio.ensure_future(rig.manager.switch_to(B8, reason="router"))
        await asyncio.sleep(0)
        gate.set()
        await first  # the first 8B switch is over; the 4B's and the second 8B's are queued
        rig.script.block[FOUR_B] = asyncio.Event()  # the 4B now hangs while loading
        fourth = asyncio.ensure_future(rig.manager.switch_to(B8))
        await until(lambda: rig.manager.state.switching_to == FOUR_B)
        await rig.manager.cancel_switches()
        return list(await asyncio.gather(to_4b, again, fourth, return_exceptions=True))

    to_4b, again, fourth = asyncio.run(run())
    assert isinstance(to_4b, asyncio.CancelledError)
    assert isinstance(again, asyncio.CancelledError)  # the queued 8B switch was cancelled
    assert isinstance(fourth, asyncio.CancelledError)  # it had joined that one
    assert [e.entry.id for e in rig.engines] == [B8, FOUR_B]
