"""The safety policy end to end: real vLLM demo models, the simulated RTX 4090 Laptop driven by the
engine's real activity, the runtime's own sampler -> alerts -> reactor path. Nothing hands the
reactor an alert: each test produces the condition (heat and power from real streams, VRAM from
the loaded model, a SIGKILL of the engine, a SIGSTOP of a spawned engine) and checks what the app
did about it. Test configs lower the thresholds so each runs in seconds after its loads.

Each real load is ~20 s or more on a 2-core machine: every test keeps its loads to the few the
scenario needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from core.engine.base import ChatMessage, EngineDiedError, EngineError, GenerationRequest
from core.history_store import NO_MODEL
from core.manager.events import StateChange, SwitchEvent, SwitchPhase
from core.runtime import Runtime

pytestmark = pytest.mark.vllm

LOAD_S = 240.0  # one real load on a busy 2-core machine, generously


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.engine.demo_model import ensure_demo_models

    root = tmp_path_factory.mktemp("safety-demo-models")
    ensure_demo_models(root)
    return root


@pytest.fixture
def make_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_root: Path
                 ) -> Iterator[Callable[[dict[str, Any]], Runtime]]:
    made: list[Runtime] = []

    def make(config: dict[str, Any]) -> Runtime:
        data = tmp_path / "data"
        data.mkdir()
        (data / "models").symlink_to(demo_root, target_is_directory=True)
        monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(data))
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        rt = Runtime.create(config_file=config_file, simulate="rtx4090-laptop",
                            history_path=tmp_path / "history.sqlite3")
        made.append(rt)
        return rt

    yield make
    for rt in made:  # a failed test must not leave engines behind
        with contextlib.suppress(Exception):
            asyncio.run(rt.close())


class Recorder:
    """Everything the app said: switch events and log lines."""

    def __init__(self, rt: Runtime) -> None:
        self.events: list[SwitchEvent] = []
        self.logs: list[tuple[str, str]] = []
        rt.manager.subscribe(self.events.append)
        rt.add_event_listener(lambda level, text: self.logs.append((level, text)))

    def phase(self, phase: SwitchPhase) -> list[SwitchEvent]:
        return [e for e in self.events if e.phase is phase]

    def ready(self, target: str, reason: str) -> list[SwitchEvent]:
        return [e for e in self.phase(SwitchPhase.READY) if e.target == target
                and e.reason == reason]

    def step_down_ended(self, target: str) -> bool:
        """The alert's switch to target ended, either way (a refusal ends the wait at once)."""
        return bool(self.ready(target, "alert")) or any(
            e.reason == "alert" for e in self.phase(SwitchPhase.FAILED))


async def wait_for(predicate: Callable[[], object], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def request(max_tokens: int = 900) -> GenerationRequest:
    return GenerationRequest((ChatMessage("user", "Tell me about GPUs."),), max_tokens=max_tokens,
                             temperature=1.0, ignore_eos=True, request_id=uuid.uuid4().hex)


class Load:
    """Clients sending requests to whatever model is active, like several API clients: each
    holds the manager's generation slot (the concurrency limit) while its stream runs."""

    def __init__(self, rt: Runtime, clients: int, max_tokens: int = 900) -> None:
        self.rt = rt
        self.max_tokens = max_tokens
        self.stop = asyncio.Event()
        self.running: list[float] = []  # start times of the streams running now
        self.limited_at: float | None = None
        self.overlaps_after_limit = 0  # streams started after the limit while another ran
        self.streams = 0
        self.tasks = [asyncio.ensure_future(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        while not self.stop.is_set():
            engine = self.rt.manager.active_engine
            if engine is None or self.rt.manager.state.switching_to is not None:
                await asyncio.sleep(0.05)
                continue
            try:
                async with self.rt.manager.generation_slot():
                    now = time.monotonic()
                    # A stream starting while another runs, once the limit holds (it is lifted
                    # when the alert ends): the engine got more than one request at once.
                    limited = self.rt.manager.max_concurrent is not None
                    if limited and self.limited_at is not None and self.running:
                        self.overlaps_after_limit += 1
                    self.running.append(now)
                    self.streams += 1
                    try:
                        async for _delta in engine.generate(request(self.max_tokens)):
                            if self.stop.is_set():
                                break
                    finally:
                        self.running.remove(now)
            except EngineError:
                await asyncio.sleep(0.05)  # the model was switched away under the stream

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def started(rt: Runtime, first_model: str) -> AsyncIterator[Recorder]:
    """The runtime sampling and reacting (as in the app), with first_model loaded."""
    rec = Recorder(rt)
    rt.start()
    try:
        result = await asyncio.wait_for(rt.manager.switch_to(first_model), LOAD_S)
        assert result.outcome == "ready", result.errors
        yield rec
    finally:
        await rt.close()


def fast_alerts(**thresholds: dict[str, float]) -> dict[str, Any]:
    return {"interval_seconds": 0.25, "thresholds": thresholds}


# -- heat under real load: gradual (fewer requests at once, then a smaller model) ----------------
def test_heat_under_load_lowers_concurrency_then_steps_down(
        make_runtime: Callable[[dict[str, Any]], Runtime]) -> None:
    # Loading draws 60 W (steady state 55 C); streams draw 125-149 W (74.5-81.7 C): only real
    # generation crosses 60 C. The switch gate is the same 60 C, so a step-down that did not
    # skip it would be refused.
    rt = make_runtime({
        "hardware_monitoring": fast_alerts(
            temperature={"warning": 58, "critical": 60, "hysteresis": 0.5,
                         "min_duration_seconds": 0.5},
            power={"warning": 190, "critical": 200, "hysteresis": 5,
                   "min_duration_seconds": 1}),
        "model_switching": {"max_temperature_c": 60, "max_power_w": 250,
                            "thermal_persist_seconds": 6, "cooldown_seconds": 600,
                            "switch_timeout_seconds": LOAD_S}})

    async def run() -> None:
        async with started(rt, "demo-small") as rec:
            # Short requests: clients come back often, so a limit that did not hold would show.
            load = Load(rt, clients=3, max_tokens=200)
            try:
                await wait_for(lambda: rec.phase(StateChange.CONCURRENCY), 120,
                               "step 1 (fewer requests at once)")
                load.limited_at = time.monotonic()
                assert rt.manager.max_concurrent == 1
                temperature = rt.probe.read().temperature_c
                assert temperature is not None
                assert temperature >= 59.5, temperature
                await wait_for(lambda: rec.step_down_ended("demo-tiny-a"), LOAD_S,
                               "step 2 (the step-down)")
                assert rec.ready("demo-tiny-a", "alert"), rec.phase(SwitchPhase.FAILED)
            finally:
                await load.close()
            assert load.overlaps_after_limit == 0, "the concurrency limit did not hold"
            assert load.streams > 3
            assert rt.manager.active_model == "demo-tiny-a"
            # Each step is a log line too (the Events tab shows the runtime's log).
            assert any("step 1" in text for _level, text in rec.logs), rec.logs
            assert any("step 2" in text for _level, text in rec.logs), rec.logs
            step_down = rt.history_store.recent(5)[0]
            assert (step_down.from_model, step_down.to_model, step_down.reason,
                    step_down.outcome, step_down.forced) == (
                "demo-small", "demo-tiny-a", "alert", "ready", True)

    asyncio.run(run())


# -- a power spike: several requests at once ---------------------------------------------------
def test_power_spike_steps_down_past_the_power_gate(
        make_runtime: Callable[[dict[str, Any]], Runtime]) -> None:
    # One stream draws 125 W, three 149 W: the spike is three clients at once. The default
    # gate (120 W) would refuse any switch while the card draws that.
    rt = make_runtime({
        "hardware_monitoring": fast_alerts(
            power={"warning": 135, "critical": 140, "hysteresis": 5,
                   "min_duration_seconds": 0.5}),
        "model_switching": {"cooldown_seconds": 600, "switch_timeout_seconds": LOAD_S}})

    async def run() -> None:
        async with started(rt, "demo-small") as rec:
            load = Load(rt, clients=3)
            try:
                await wait_for(lambda: rec.step_down_ended("demo-tiny-a"), LOAD_S,
                               "the power step-down")
                assert rec.ready("demo-tiny-a", "alert"), rec.phase(SwitchPhase.FAILED)
            finally:
                await load.close()
            assert rt.manager.active_model == "demo-tiny-a"
            row = rt.history_store.recent(5)[0]
            assert (row.from_model, row.to_model, row.reason, row.outcome, row.forced) == (
                "demo-small", "demo-tiny-a", "alert", "ready", True)

    asyncio.run(run())


# -- VRAM critical: step down, then, with nothing smaller, unload ---------------------------------
def test_vram_critical_steps_down_then_unloads(
        make_runtime: Callable[[dict[str, Any]], Runtime]) -> None:
    # The desktop baseline is 600 MiB of 16 GiB (3.7 %); any loaded demo engine takes it past
    # 4.5 %: the loaded model itself is the condition.
    rt = make_runtime({
        "hardware_monitoring": fast_alerts(
            vram_usage={"warning": 0.04, "critical": 0.045, "hysteresis": 0.002,
                        "min_duration_seconds": 0.5}),
        "model_switching": {"cooldown_seconds": 2, "switch_timeout_seconds": LOAD_S}})
    unload_s: list[float] = []

    async def run() -> None:
        async with started(rt, "demo-small") as rec:
            await wait_for(lambda: rec.phase(StateChange.UNLOADED), 2 * LOAD_S,
                           "the step-down and the emergency unload")
            rows = rt.history_store.recent(8)
            described = [(r.from_model, r.to_model, r.reason, r.outcome, r.error) for r in rows]
            # Stepped down to a smaller model (demo-tiny-a, or its same-sized peer if the host
            # refused that load), then, with nothing smaller, unloaded.
            stepped = [r for r in rows if r.from_model == "demo-small"
                       and r.to_model in ("demo-tiny-a", "demo-tiny-b") and r.outcome == "ready"]
            assert stepped, described
            assert stepped[0].reason in ("alert", "fallback"), described
            assert rows[0].outcome == "unloaded", described
            assert rows[0].to_model == NO_MODEL
            assert rows[0].from_model in ("demo-tiny-a", "demo-tiny-b")
            step_down = [r for r in rows if r.reason == "alert" and r.outcome != "unloaded"]
            assert step_down[-1].forced, described
            assert rt.manager.active_model is None
            await wait_for(lambda: rt.activity.state().loaded_bytes == 0, 5, "memory released")
            # The engine processes are gone, not just forgotten.
            assert not [p for p in psutil.Process().children(recursive=True)
                        if "EngineCore" in " ".join(_cmd(p))]
            text = rec.phase(StateChange.UNLOADED)[0].message
            unload_s.append(float(text.rsplit(" in ", 1)[1].split(" s")[0]))

    asyncio.run(run())
    print(f"\nemergency unload took {unload_s[0]:.2f} s")


def _cmd(proc: psutil.Process) -> list[str]:
    try:
        return [proc.name(), *proc.cmdline()]
    except psutil.Error:
        return []


def engine_core_pid(rt: Runtime) -> int:
    engine = rt.manager.active_engine
    assert engine is not None
    pids = list(engine.pids())
    assert pids
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if "EngineCore" in " ".join(_cmd(psutil.Process(pid))):
                return pid
    return pids[0]


# -- SIGKILL of EngineCore mid-stream; the crash-loop guard ----------------------------------
def test_engine_killed_mid_stream_recovers_then_the_crash_loop_guard_trips(
        make_runtime: Callable[[dict[str, Any]], Runtime]) -> None:
    rt = make_runtime({"model_switching": {"switch_timeout_seconds": LOAD_S}})

    async def stream(model: str) -> int:
        tokens = 0
        async for delta in rt.chat.generate(request(64), model=model):
            tokens = delta.tokens
        return tokens

    async def kill_and_wait_seen(rec: Recorder, deaths: int) -> float:
        os.kill(engine_core_pid(rt), signal.SIGKILL)
        killed = time.monotonic()
        await wait_for(lambda: len(rec.phase(StateChange.CRASHED)) == deaths, 5,
                       f"death {deaths} to be seen")
        return time.monotonic() - killed

    async def run() -> None:
        async with started(rt, "demo-tiny-a") as rec:
            # 1. Killed mid-stream: the stream ends with a typed error, the manager sees it.
            killed = 0.0

            async def killed_mid_stream() -> None:
                nonlocal killed
                async for _delta in rt.chat.generate(request(900), model="demo-tiny-a"):
                    if not killed:
                        os.kill(engine_core_pid(rt), signal.SIGKILL)
                        killed = time.monotonic()

            with pytest.raises(EngineDiedError, match="SIGKILL"):
                await killed_mid_stream()
            await wait_for(lambda: rec.phase(StateChange.CRASHED), 5, "the crash to be seen")
            seen_s = time.monotonic() - killed
            assert seen_s < 2.0, seen_s
            print(f"\nengine death seen {seen_s:.2f} s after the SIGKILL")
            assert rt.manager.active_model is None
            # 2. The next request loads the model again by itself.
            assert await asyncio.wait_for(stream("demo-tiny-a"), LOAD_S) > 0
            assert rt.manager.active_model == "demo-tiny-a"
            # 3. Two more deaths: the third trips the guard.
            assert await kill_and_wait_seen(rec, 2) < 2.0
            assert "demo-tiny-a" not in rt.manager.state.crashing
            assert await asyncio.wait_for(stream("demo-tiny-a"), LOAD_S) > 0
            assert await kill_and_wait_seen(rec, 3) < 2.0
            assert "demo-tiny-a" in rt.manager.state.crashing
            # 4. Not reloaded: a request for it falls back down the cascade.
            assert await asyncio.wait_for(stream("demo-tiny-a"), LOAD_S) > 0
            assert rt.manager.active_model == "demo-tiny-b"
            rows.extend(rt.history_store.recent(20))

    rows: list[Any] = []
    asyncio.run(run())
    crashed = [r for r in rows if r.outcome == "crashed"]
    assert len(crashed) == 3
    assert {r.from_model for r in crashed} == {"demo-tiny-a"}
    assert all("SIGKILL" in (r.error or "") for r in crashed), [r.error for r in crashed]
    refused = [r for r in rows if r.outcome == "refused" and r.to_model == "demo-tiny-a"]
    assert refused
    assert "crash_loop" in (refused[0].error or "")
    assert (rows[0].to_model, rows[0].outcome) == ("demo-tiny-b", "ready")


# -- one deadline per switch: a hung load ends with the old model back -----------------------
def test_hung_switch_ends_at_the_deadline_with_the_old_model_back(
        make_runtime: Callable[[dict[str, Any]], Runtime]) -> None:
    rt = make_runtime({"model_switching": {"switch_timeout_seconds": LOAD_S}})
    deadline_s = 30.0

    async def stop_new_engines(before: set[int], stopped: list[int]) -> None:
        # SIGSTOP every engine process the hung switch spawns: its load never finishes.
        while True:
            for child in psutil.Process().children(recursive=True):
                if child.pid not in before and child.pid not in stopped:
                    with contextlib.suppress(psutil.Error):
                        child.send_signal(signal.SIGSTOP)
                        stopped.append(child.pid)
            await asyncio.sleep(0.05)

    async def run() -> None:
        async with started(rt, "demo-tiny-a"):
            # The switch under test gets the (lowered) deadline; the first load had plenty.
            rt.manager.switching = rt.manager.switching.model_copy(  # type: ignore[attr-defined]
                update={"switch_timeout_seconds": deadline_s})
            before = {p.pid for p in psutil.Process().children(recursive=True)}
            stopped: list[int] = []
            stopper = asyncio.ensure_future(stop_new_engines(before, stopped))
            t0 = time.monotonic()
            switch = asyncio.ensure_future(rt.manager.switch_to("demo-small"))
            # The deadline ends the hung load; stop stopping so the old model can come back.
            await asyncio.sleep(deadline_s - 1)
            stopper.cancel()
            # Bringing the old model back has a deadline of its own: a load's worth here.
            rt.manager.switching = rt.manager.switching.model_copy(  # type: ignore[attr-defined]
                update={"switch_timeout_seconds": LOAD_S})
            result = await asyncio.wait_for(switch, LOAD_S + deadline_s)
            took = time.monotonic() - t0
            assert stopped, "no engine process was spawned for the hung load"
            assert result.outcome == "failed"
            assert result.active == "demo-tiny-a"
            assert took < deadline_s + LOAD_S
            assert not [p for p in stopped if psutil.pid_exists(p)
                        and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            print(f"\nhung switch ended after {took:.1f} s (deadline {deadline_s:.0f} s, "
                  "then the old model's reload)")
            rows.extend(rt.history_store.recent(5))

    rows: list[Any] = []
    asyncio.run(run())
    assert (rows[0].to_model, rows[0].outcome) == ("demo-tiny-a", "ready")  # restored
    hung = rows[1]
    assert (hung.to_model, hung.outcome) == ("demo-small", "timed_out")
    assert "deadline of 30 s" in (hung.error or "")
    assert "tried demo-small" in (hung.error or "")
    assert "loading" in (hung.error or "")
