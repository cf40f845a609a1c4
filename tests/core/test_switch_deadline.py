"""The one deadline of a switch (switch_timeout_seconds), in detail: what the result, the event
and the history say when it runs out, bringing the previous model back (and its own deadline),
and that the next switch cancelled by a user is recorded as cancelled, not timed out."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.engine.base import GenerationDelta, GenerationRequest
from core.manager.events import SwitchEvent, SwitchPhase
from core.manager.manager import SwitchResult
from core.telemetry.config import ModelSwitching
from tests.core.manager_fakes import CASCADE, RecordingEngine, Rig, make_rig
from tests.core.test_manager_safety import rig_with

HUNG = "demo-tiny-a"  # its loads never end unless a test releases them


def hung_rig(tmp_path: Path) -> Rig:
    rig = rig_with(tmp_path, switch_timeout_seconds=0.3)
    rig.script.block[HUNG] = asyncio.Event()
    return rig


def failed_events(rig: Rig) -> list[SwitchEvent]:
    return [e for e in rig.events if isinstance(e, SwitchEvent)
            and e.phase is SwitchPhase.FAILED and e.switch_id == 0]


def test_the_deadline_result_names_what_ran_out_and_what_was_restored(tmp_path: Path) -> None:
    rig = hung_rig(tmp_path)

    async def run() -> tuple[SwitchResult, float]:
        await rig.manager.switch_to("demo-tiny-b")
        rig.events.clear()
        before = rig.clock.now
        result = await rig.manager.switch_to(HUNG, reason="router")
        return result, rig.clock.now - before

    result, took = asyncio.run(run())
    rows = rig.history.recent(2)
    restored, hung = rows
    assert (hung.to_model, hung.outcome, hung.reason) == (HUNG, "timed_out", "router")
    assert (restored.to_model, restored.outcome, restored.reason, restored.forced) == (
        "demo-tiny-b", "ready", "fallback", False)  # bringing it back skips no gate
    note = result.errors[0]
    found = re.fullmatch(r"the switch deadline of 0 s ran out; tried demo-tiny-a; demo-tiny-a "
                         r"was loading \(attempt 1\) for (\d+\.\d) s", note)
    assert found, note
    assert 0.3 <= float(found.group(1)) < 30  # how long that attempt ran, in seconds
    assert result == SwitchResult(HUNG, "demo-tiny-b", "failed", "router", None,
                                  pytest.approx(took), (note, "demo-tiny-b restored"),
                                  (restored.id,), False)
    assert took > 0  # the driven clock moved during the switch: a duration, not a sum
    attempt_failed = [e for e in rig.events if isinstance(e, SwitchEvent)
                      and e.phase is SwitchPhase.FAILED and e.switch_id != 0]
    assert [(e.target, e.message, e.error) for e in attempt_failed] == [(HUNG, note, note)]
    [event] = failed_events(rig)
    assert (event.target, event.reason) == (HUNG, "router")
    assert event.message == event.error == f"{note}; demo-tiny-b restored"
    assert rig.manager.active_model == "demo-tiny-b"


def test_a_private_switch_past_its_deadline_restores_privately(tmp_path: Path) -> None:
    rig = hung_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-b", private=True)
        await rig.manager.switch_to(HUNG, private=True)

    asyncio.run(run())
    assert rig.manager.active_model == "demo-tiny-b"
    assert rig.manager.active_private  # the restored model was loaded for a private task


def test_with_nothing_loaded_before_there_is_nothing_to_restore(tmp_path: Path) -> None:
    rig = hung_rig(tmp_path)
    result = asyncio.run(rig.manager.switch_to(HUNG))
    assert (result.outcome, result.active, result.history_ids) == ("failed", None, ())
    [error] = result.errors
    assert error.startswith("the switch deadline of 0 s ran out; tried demo-tiny-a; ")
    assert [r.outcome for r in rig.history.recent(5)] == ["timed_out"]


def test_bringing_the_previous_model_back_has_a_deadline_of_its_own(tmp_path: Path) -> None:
    rig = hung_rig(tmp_path)
    rig.script.block["demo-tiny-b"] = asyncio.Event()

    async def run() -> SwitchResult:
        gate = rig.script.block.pop("demo-tiny-b")  # the first load of it goes through
        await rig.manager.switch_to("demo-tiny-b")
        rig.script.block["demo-tiny-b"] = gate  # now it hangs too: the restore hangs
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await rig.manager.switch_to(HUNG)
        assert loop.time() - t0 < 3.0  # two deadlines of 0.3 s, not forever
        return result

    result = asyncio.run(run())
    assert (result.outcome, result.active, result.history_ids) == ("failed", None, ())
    assert result.errors[-1] == "demo-tiny-b: not restored within 0 s"
    outcomes = [(r.to_model, r.outcome) for r in rig.history.recent(3)]
    assert outcomes[:2] == [("demo-tiny-b", "cancelled"), (HUNG, "timed_out")]


def test_a_switch_cancelled_after_a_deadline_is_recorded_as_cancelled(tmp_path: Path) -> None:
    """The deadline's mark is cleared once its switch is over: a later switch the user cancels
    is a cancelled row, not a second timed_out one."""
    rig = hung_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-b")
        await rig.manager.switch_to(HUNG)  # times out, demo-tiny-b restored
        rig.script.block["demo-small"] = asyncio.Event()
        loading = asyncio.Event()
        rig.manager.subscribe(lambda e: loading.set() if isinstance(e, SwitchEvent) and
                              e.phase is SwitchPhase.LOADING and e.target == "demo-small"
                              else None)
        task = asyncio.ensure_future(rig.manager.switch_to("demo-small"))
        await loading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    newest = rig.history.recent(1)[0]
    assert (newest.to_model, newest.outcome, newest.error) == (
        "demo-small", "cancelled", "cancelled")


def test_a_switch_within_its_deadline_returns_its_own_result(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    result = asyncio.run(rig.manager.switch_to("demo-tiny-b"))
    assert (result.outcome, result.active, result.errors) == ("ready", "demo-tiny-b", ())
    assert failed_events(rig) == []


class HangingWarmUp(RecordingEngine):
    """Loads, then its first generation (the warm-up) never answers."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        await asyncio.Event().wait()
        yield GenerationDelta(text="", tokens=0, elapsed_s=0.0)  # pragma: no cover


def test_a_deadline_during_the_warm_up_says_so_and_keeps_the_forced_flag(
        tmp_path: Path) -> None:
    settings = ModelSwitching(switch_timeout_seconds=0.3, fallback_cascade=CASCADE)
    rig = make_rig(tmp_path, switching=settings, engine_class=HangingWarmUp)
    result = asyncio.run(rig.manager.switch_to(HUNG, reason="alert", force=True))
    assert (result.outcome, result.active, result.forced) == ("failed", None, True)
    assert re.search(r"; demo-tiny-a was warming up \(attempt 1\) for \d+\.\d s$",
                     result.errors[0]), result.errors[0]
    assert RecordingEngine.loaded == set()  # the loaded engine was shut down
    assert rig.history.recent(1)[0].outcome == "timed_out"
