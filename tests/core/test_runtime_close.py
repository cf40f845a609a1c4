"""Runtime.close(deadline): bounded whatever the engine does, no engine process left, history
committed. The engine here is a stand-in whose process is a real child process and whose
shutdown (or load) really hangs, the way a vLLM start that cannot be interrupted does; the
subprocess tests in tests/test_quit_vllm.py close the real app on real vLLM."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from core.engine.base import GenerationDelta, GenerationRequest, LoadSpec
from core.history_store import HistoryStore
from core.models.catalog import ModelEntry
from core.runtime import Runtime

MODEL = "demo-tiny-a"


class StuckEngine:
    """Starts a real process on load; its shutdown (or its load) blocks a thread until
    released, like vLLM's constructor or teardown can."""

    started = asyncio.Event()

    def __init__(self, release: threading.Event, *, hang_in: str) -> None:
        self.release = release
        self.hang_in = hang_in
        self.proc: subprocess.Popen[bytes] | None = None

    async def load(self, spec: LoadSpec) -> None:
        # Like vLLM spawning its engine core (a millisecond's block is fine here).
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", "import time; time.sleep(600)"])
        StuckEngine.started.set()
        if self.hang_in == "load":
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        yield GenerationDelta("x", "", 1, 0.01, 0.01, True, "length")

    async def abort(self, request_id: str) -> None:
        return None

    async def shutdown(self) -> None:
        if self.hang_in == "shutdown":
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)

    def is_healthy(self) -> bool:
        return True

    def pids(self) -> tuple[int, ...]:
        return (self.proc.pid,) if self.proc else ()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # lets the stuck thread end after the test


def make_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: threading.Event,
                 hang_in: str, model_dir: Path) -> tuple[Runtime, list[StuckEngine]]:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "models" / MODEL).symlink_to(model_dir, target_is_directory=True)
    engines: list[StuckEngine] = []

    def factory(_entry: ModelEntry) -> StuckEngine:
        engines.append(StuckEngine(release, hang_in=hang_in))
        return engines[-1]

    rt = Runtime.create(simulate="rtx4090-laptop", history_path=tmp_path / "h.sqlite3",
                        engine_factory=factory)
    return rt, engines


def gone(pid: int) -> bool:
    """Ended and reaped: a zombie still counts as left behind."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False


def outcomes(path: Path) -> list[str]:
    store = HistoryStore(path)
    try:
        return [r.outcome for r in store.recent()]
    finally:
        store.close()


def test_close_ends_an_engine_whose_shutdown_hangs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: threading.Event,
        demo_model_dir: Path) -> None:
    rt, engines = make_runtime(tmp_path, monkeypatch, release, "shutdown", demo_model_dir)

    async def body() -> float:
        result = await rt.manager.switch_to(MODEL)
        assert result.ok, result.errors
        started = time.monotonic()
        await rt.close(deadline_s=1.5)
        took = time.monotonic() - started
        release.set()  # the thread may end now; asyncio.run waits for it
        return took

    took = asyncio.run(body())
    assert 1.0 <= took < 2.0  # it waited for the clean shutdown until the force point, no more
    proc = engines[0].proc
    assert proc is not None
    assert gone(proc.pid), "the engine's process outlived close() (or is an unreaped zombie)"
    assert outcomes(tmp_path / "h.sqlite3") == ["ready"]


def test_close_cancels_a_load_stuck_in_a_thread_and_records_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, release: threading.Event,
        demo_model_dir: Path) -> None:
    rt, engines = make_runtime(tmp_path, monkeypatch, release, "load", demo_model_dir)

    async def body() -> float:
        StuckEngine.started = asyncio.Event()
        switch = asyncio.ensure_future(rt.manager.switch_to(MODEL))
        await StuckEngine.started.wait()
        started = time.monotonic()
        await rt.close(deadline_s=1.5)
        took = time.monotonic() - started
        with pytest.raises(asyncio.CancelledError):
            await switch
        release.set()  # the thread may end now; asyncio.run waits for it
        return took

    took = asyncio.run(body())
    assert took < 1.5
    proc = engines[0].proc
    assert proc is not None
    assert gone(proc.pid)
    assert outcomes(tmp_path / "h.sqlite3") == ["cancelled"]
