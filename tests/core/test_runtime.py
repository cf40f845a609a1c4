"""The composition root: what it wires, checked on the simulated GPU (no engine is started)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.engine.base import EngineError
from core.runtime import CUSTOM_MODEL_ID, Runtime, make_engine


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    rt = Runtime.create(simulate="rtx4090-laptop", history_path=tmp_path / "h.sqlite3")
    yield rt
    asyncio.run(rt.close())


def test_cascade_reaches_the_local_demo_models_before_remote(runtime: Runtime) -> None:
    cascade = runtime.manager.cascade
    # The record's fallback order: 30B, 14B, 8B, then the 4B thinking model and the 4B instruct.
    assert cascade[:5] == ("qwen3-30b-a3b-instruct-2507", "qwen3-14b", "qwen3-8b",
                           "qwen3-4b-thinking-2507", "qwen3-4b-instruct-2507")
    assert cascade.index("demo-small") < cascade.index("demo-tiny-a")
    assert cascade.index("demo-tiny-a") < cascade.index("remote")
    assert cascade.index("demo-tiny-b") < cascade.index("remote")


def test_simulated_gpu_is_the_memory_the_manager_checks(runtime: Runtime) -> None:
    reading = runtime.probe.read()
    assert reading.total_bytes == runtime.gpu_snapshots()[0].vram_total_bytes
    assert runtime.gpu_snapshots()[0].simulated


def test_model_directory_from_the_command_line_becomes_loadable(runtime: Runtime,
                                                                demo_model_dir: Path) -> None:
    before = runtime.manager.plan_switch("demo-tiny-a")
    assert not before.ok  # nothing built in this data dir yet
    assert runtime._register_custom(demo_model_dir) == CUSTOM_MODEL_ID
    plan = runtime.manager.plan_switch(CUSTOM_MODEL_ID)
    assert plan.ok, plan.refusal
    entry = runtime.manager.catalog.get(CUSTOM_MODEL_ID)
    assert entry.priority != "DEMO"  # a user's model is not labelled as noise
    assert entry.vllm_dtype == "auto"  # the checkpoint's own dtype, not the demo's float32
    assert entry.default_context == 4096  # the directory's max_position_embeddings
    assert runtime.manager.catalog.local_path(
        runtime.manager.catalog.get(CUSTOM_MODEL_ID)) == demo_model_dir.resolve()


def test_remote_engine_needs_a_configured_endpoint(runtime: Runtime) -> None:
    entry = runtime.config.catalog.get("remote")
    with pytest.raises(EngineError, match="remote"):
        make_engine(entry, runtime.activity, runtime.config)


# -- one reader of the device: the sampler --------------------------------------------------------
class ReadsOf:
    """The runtime's device, recording the thread of every read (the hardware seam)."""

    def __init__(self, device: Any) -> None:
        self._device = device
        self.threads: list[str] = []

    def sample(self) -> Any:
        self.threads.append(threading.current_thread().name)
        return self._device.sample()

    def close(self) -> None:
        self._device.close()


def test_the_manager_reads_a_fresh_sample_taken_by_the_sampler_thread(runtime: Runtime) -> None:
    device = ReadsOf(runtime.sampler.devices[0])
    runtime.sampler.devices = (device,)
    runtime.sampler.interval_seconds = 30.0  # its own pace would never answer in time
    runtime.sampler.start()
    try:
        deadline = time.monotonic() + 10
        while runtime.sampler.latest is None or not device.threads:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = runtime.sampler.latest
        runtime.activity.set_loaded("demo-tiny-a", 4 * 1024**3)  # the engine takes memory
        started = time.monotonic()
        reading = runtime.probe.read()  # what the manager and the memory-return wait read
        assert time.monotonic() - started < 5  # fresh at once, not at the next 30 s tick
        latest = runtime.sampler.latest
        assert latest is not first
        assert latest.gpus[0].timestamp > first.gpus[0].timestamp
        assert reading.free_bytes == latest.gpus[0].vram_free_bytes
        assert reading.free_bytes is not None
        assert first.gpus[0].vram_free_bytes is not None
        assert reading.free_bytes < first.gpus[0].vram_free_bytes  # the 4 GiB are seen
        assert set(device.threads) == {"vrampilot-sampler"}
    finally:
        runtime.sampler.stop()


def test_the_latest_reading_reads_no_device(runtime: Runtime) -> None:
    runtime.sampler.sample_once()
    device = ReadsOf(runtime.sampler.devices[0])
    runtime.sampler.devices = (device,)
    for _ in range(20):  # e.g. one per catalog row
        plan = runtime.manager.plan_switch("qwen3-8b", reading=runtime.latest_reading())
        assert plan.fit is not None
    assert device.threads == []
