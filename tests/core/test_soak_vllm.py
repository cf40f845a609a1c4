"""A real soak: the vLLM demo model streams on the CPU build while the simulated RTX 4090 Laptop
(fast thermal profile: tau 3 s, throttling at 66 C) heats with the engine's real activity.

One engine load for the module. The device is wrapped to record its own state at every sample
(when it began to throttle, the power it held), which the report must match.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.runtime import Runtime
from core.soak.report import load_run, save_run
from core.soak.runner import SoakRunner, SoakSettings
from core.telemetry.simulated_device import SimulatedGpu
from core.telemetry.snapshot import GpuSnapshot

DATA = Path(__file__).resolve().parent.parent / "data"
PROFILE = DATA / "soak_fast_thermal.yaml"
CONFIG = DATA / "soak_config.yaml"

pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class DeviceState:
    t: float
    throttling: bool
    held_power_w: float
    temperature_c: float


class RecordingGpu:
    """The simulated GPU, remembering its own state after every sample."""

    def __init__(self, gpu: SimulatedGpu) -> None:
        self.gpu = gpu
        self.states: list[DeviceState] = []

    def sample(self) -> GpuSnapshot:
        snap = self.gpu.sample()
        self.states.append(DeviceState(snap.timestamp, self.gpu.throttling,
                                       self.gpu.held_power_w, self.gpu.temperature_c))
        return snap

    def close(self) -> None:
        self.gpu.close()


@dataclass
class Rig:
    runtime: Runtime
    loop: asyncio.AbstractEventLoop
    device: RecordingGpu


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Rig]:
    data = tmp_path_factory.mktemp("soak-data")
    (data / "models").mkdir()
    (data / "models" / "demo-tiny-a").symlink_to(demo_model_dir, target_is_directory=True)
    old = os.environ.get("VRAMPILOT_DATA_DIR")
    os.environ["VRAMPILOT_DATA_DIR"] = str(data)
    loop = asyncio.new_event_loop()
    runtime = Runtime.create(config_file=CONFIG, simulate=str(PROFILE),
                             history_path=data / "history.sqlite3")
    serialized = runtime.devices[0]
    gpu = serialized._device
    assert isinstance(gpu, SimulatedGpu)
    device = RecordingGpu(gpu)
    serialized._device = device  # the sampler and the memory probe both read through it

    async def start() -> None:
        runtime.start()
        result = await runtime.manager.switch_to("demo-tiny-a")
        assert result.ok, result.errors

    try:
        loop.run_until_complete(start())
        yield Rig(runtime, loop, device)
    finally:
        loop.run_until_complete(runtime.close())
        loop.close()
        if old is None:
            os.environ.pop("VRAMPILOT_DATA_DIR", None)
        else:
            os.environ["VRAMPILOT_DATA_DIR"] = old


def soak(rig: Rig, settings: SoakSettings, stop_after: float | None = None) -> tuple[
        SoakRunner, dict[str, Any]]:
    rt = rig.runtime
    runner = SoakRunner(rt.chat, rt.sampler, settings, device_label=rt.gpu_snapshots()[0].name,
                        simulated=True)
    rt.add_event_listener(runner.note)

    async def go() -> dict[str, Any]:
        if stop_after is not None:
            rig.loop.call_later(stop_after, runner.stop)
        return await runner.run()

    return runner, rig.loop.run_until_complete(go())


def test_short_soak_throttles_when_the_device_does_and_integrates_its_power(rig: Rig,
                                                                            tmp_path: Path) -> None:
    runner, report = soak(rig, SoakSettings(minutes=0.3, concurrency=2, prompt_tokens=64,
                                            max_tokens=32))
    recording = runner.recording
    assert recording is not None
    assert recording.ended is not None
    t0, t1 = recording.started, recording.ended
    assert report["ended_by"] == "time"
    assert 17.5 <= report["duration_s"] <= 19.0

    # The device's own first throttling sample during the run is the report's first throttle.
    states = [s for s in rig.device.states if t0 <= s.t <= t1]
    own = next(s for s in states if s.throttling)
    throttle = report["first_throttle"]
    assert isinstance(throttle, dict)
    assert throttle["at"] == pytest.approx(own.t, abs=1e-6)
    assert throttle["reason"] == "SwThermal"
    assert throttle["after_s"] == pytest.approx(own.t - t0, abs=1e-3)
    assert own.temperature_c >= 66 - 0.5  # the profile's throttle temperature, less the margin

    # Energy: the integral of the power the device held between the first and last sample
    # (the report integrates the reported, noisy power).
    exact = sum(a.held_power_w * (b.t - a.t) for a, b in itertools.pairwise(states))
    energy = report["energy"]
    assert isinstance(energy, dict)
    assert energy["source"] == "GPU power integrated over time"
    assert energy["joules"] == pytest.approx(exact, rel=0.01)
    assert energy["joules_per_token"] == pytest.approx(exact / report["tokens"], rel=0.01)

    # Tokens per interval come from the real stream: every request streamed max_tokens tokens
    # (ignore_eos), except those cut off at the end; the intervals add up to the total.
    done = [r for r in recording.requests if r.tokens == 32]
    assert len(done) >= 4
    assert all(r.first_token_s is not None and r.first_token_s > 0 for r in recording.requests)
    intervals = report["intervals"]
    assert isinstance(intervals, list)
    assert len(intervals) == 5
    assert sum(iv["tokens"] for iv in intervals) == report["tokens"]
    assert report["tokens"] == sum(r.tokens for r in recording.requests)
    for iv in intervals:
        assert iv["tokens"] > 0
        assert iv["tokens_per_s"] == pytest.approx(iv["tokens"] / (iv["end_s"] - iv["start_s"]),
                                                   rel=1e-3)
    rates = report["tokens_per_s"]
    assert isinstance(rates, dict)
    assert rates["first"] > 0
    assert rates["last"] > 0
    steady = report["steady_state"]
    assert isinstance(steady, dict)
    assert steady["basis"].startswith("last 20 %")
    assert 60 <= steady["temperature_c"] <= 66.5  # held at the throttle temperature

    # The "act" policy's first thermal step (one request at a time) is in the report's events.
    texts = [e["text"] for e in report["events"]]
    assert any("temperature" in t and "at most 1 request" in t for t in texts), texts
    assert report["host_energy"]["text"] == "not reported" or report["host_energy"]["joules"] > 0

    # Saved and reopened: the same samples.
    run = save_run(report, recording, tmp_path / "run")
    again = load_run(tmp_path / "run")
    assert again.report == report
    assert len(again.series) == len(run.series) == report["samples"]
    assert again.series.throttled_spans()[0][0] == pytest.approx(throttle["after_s"], abs=1e-3)


def test_stop_ends_the_run_early_and_says_so(rig: Rig) -> None:
    _, report = soak(rig, SoakSettings(minutes=5, concurrency=1, prompt_tokens=16,
                                       max_tokens=16), stop_after=3.0)
    assert report["ended_by"] == "stopped"
    assert report["end_reason"] == "stopped by the user"
    assert report["duration_s"] < 10
    assert report["tokens"] > 0
    assert rig.runtime.manager.active_model == "demo-tiny-a"
