"""VllmEngine against a real vLLM CPU engine and the tiny demo model (marked vllm: tens of seconds).

One engine is shared by the streaming tests; the crash and memory tests start their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from core.engine import forkserver
from core.engine.base import (
    ChatMessage,
    ContextTooLongError,
    Engine,
    EngineDiedError,
    GenerationDelta,
    GenerationRequest,
    InsufficientMemoryError,
    LoadSpec,
    ModelDirectoryError,
    PromptTooLongError,
    UnsupportedModelError,
)
from core.engine.processes import EngineProcessRegistry, alive, child_pids, end_engine_processes
from core.engine.vllm_engine import VllmEngine, expected_start

pytestmark = pytest.mark.vllm
T = TypeVar("T")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def make_engine(tmp: Path, **kw: Any) -> VllmEngine:
    return VllmEngine(registry=EngineProcessRegistry(tmp / "pids.json"), log_dir=tmp / "logs", **kw)


def spec_for(path: Path, **kw: Any) -> LoadSpec:
    return LoadSpec(model_id="demo", path=str(path), max_model_len=512, memory_utilization=0.1,
                    **kw)


def ask(text: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=(ChatMessage("user", text),), **kw)


async def collect(engine: VllmEngine, request: GenerationRequest) -> list[GenerationDelta]:
    return [d async for d in engine.generate(request)]


def assert_all_gone(pids: tuple[int, ...]) -> None:
    for pid in pids:
        assert not psutil.pid_exists(pid) or not alive(psutil.Process(pid)), pid


@pytest.fixture(scope="module")
def shared(loop: asyncio.AbstractEventLoop, demo_model_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmEngine]:
    tmp = tmp_path_factory.mktemp("vllm-shared")
    engine = make_engine(tmp)
    run(loop, engine.load(spec_for(demo_model_dir)))
    pids = engine.pids()
    yield engine
    run(loop, engine.shutdown())
    assert engine.pids() == ()
    assert_all_gone(pids)
    assert EngineProcessRegistry(tmp / "pids.json").records() == []


def test_load_records_engine_processes(shared: VllmEngine) -> None:
    assert isinstance(shared, Engine)
    assert shared.is_healthy()
    pids = shared.pids()
    assert pids, "the engine core runs in its own process"
    names = [psutil.Process(p).name() for p in pids]
    assert any("EngineCore" in n for n in names), names
    assert shared.info().pids == pids


def test_stream_counts_tokens_and_times(loop: asyncio.AbstractEventLoop,
                                        shared: VllmEngine) -> None:
    deltas = run(loop, collect(shared, ask("Hello there", max_tokens=24, ignore_eos=True,
                                           seed=1)))
    assert len(deltas) >= 2
    last = deltas[-1]
    assert last.finished
    assert last.finish_reason == "length"
    assert last.tokens == 24
    assert [d.tokens for d in deltas] == sorted(d.tokens for d in deltas)
    assert last.first_token_s is not None
    assert 0 < last.first_token_s <= last.elapsed_s
    assert last.tokens_per_s is not None
    assert last.tokens_per_s > 0
    assert "".join(d.text + d.thinking for d in deltas)
    assert not any(d.finished for d in deltas[:-1])


def test_same_seed_same_text(loop: asyncio.AbstractEventLoop, shared: VllmEngine) -> None:
    req = ask("repeat", max_tokens=12, ignore_eos=True, seed=7, temperature=1.0)
    a = run(loop, collect(shared, req))
    b = run(loop, collect(shared, req))
    assert "".join(d.text + d.thinking for d in a) == "".join(d.text + d.thinking for d in b)


def test_abort_mid_stream(loop: asyncio.AbstractEventLoop, shared: VllmEngine) -> None:
    async def scenario() -> list[GenerationDelta]:
        got = []
        async for delta in shared.generate(ask("go", max_tokens=400, ignore_eos=True,
                                               request_id="to-abort")):
            got.append(delta)
            if len(got) == 3:
                await shared.abort("to-abort")
        return got

    deltas = run(loop, scenario(), timeout=30)
    assert deltas[-1].finished
    assert deltas[-1].finish_reason == "abort"
    assert deltas[-1].tokens < 400
    assert shared.is_healthy()
    after = run(loop, collect(shared, ask("again", max_tokens=4, ignore_eos=True)))
    assert after[-1].tokens == 4


def test_breaking_out_of_a_stream_frees_it(loop: asyncio.AbstractEventLoop,
                                           shared: VllmEngine) -> None:
    async def scenario() -> None:
        stream = shared.generate(ask("x", max_tokens=400, ignore_eos=True))
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]

    run(loop, scenario(), timeout=30)
    assert shared._llm.get_num_unfinished_requests() == 0
    assert shared.is_healthy()


def test_prompt_longer_than_context(loop: asyncio.AbstractEventLoop, shared: VllmEngine) -> None:
    with pytest.raises(PromptTooLongError) as info:
        run(loop, collect(shared, ask("word " * 2000)))
    assert info.value.max_model_len == 512
    assert info.value.prompt_tokens > 512
    assert shared.is_healthy()


def test_missing_model_dir_fails_before_vllm(loop: asyncio.AbstractEventLoop,
                                             tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    before = child_pids()
    with pytest.raises(ModelDirectoryError, match="does not exist"):
        run(loop, engine.load(spec_for(tmp_path / "nope")))
    assert child_pids() == before


def test_engine_killed_mid_generation(loop: asyncio.AbstractEventLoop, demo_model_dir: Path,
                                      tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    run(loop, engine.load(spec_for(demo_model_dir)))
    pids = engine.pids()
    core = next(p for p in pids if "EngineCore" in psutil.Process(p).name())

    async def scenario() -> tuple[EngineDiedError, float]:
        killed_at = 0.0
        try:
            async for delta in engine.generate(ask("go", max_tokens=500, ignore_eos=True)):
                if not killed_at and delta.tokens >= 2:
                    os.kill(core, signal.SIGKILL)
                    killed_at = time.monotonic()
        except EngineDiedError as exc:
            return exc, time.monotonic() - killed_at
        raise AssertionError("the stream ended normally after its engine was killed")

    error, detected_after_s = run(loop, scenario(), timeout=30)
    assert detected_after_s < 2.0
    assert "stopped" in str(error)
    assert not engine.is_healthy()
    assert engine.died is error
    run(loop, engine.shutdown(), timeout=60)
    assert not engine.loaded
    assert engine.pids() == ()
    assert_all_gone(pids)
    assert EngineProcessRegistry(tmp_path / "pids.json").records() == []


def test_two_sequential_loads(loop: asyncio.AbstractEventLoop, demo_model_dir: Path,
                              tmp_path: Path) -> None:
    from core.engine.demo_model import build_demo_model

    other = build_demo_model(tmp_path / "demo-b", seed=1, name="demo-tiny-b")
    engine = make_engine(tmp_path)
    seen: list[tuple[int, ...]] = []
    for model in (demo_model_dir, other):
        run(loop, engine.load(spec_for(model)))
        assert engine.is_healthy()
        seen.append(engine.pids())
        out = run(loop, collect(engine, ask("hi", max_tokens=3, ignore_eos=True)))
        assert out[-1].tokens == 3
        run(loop, engine.shutdown(), timeout=60)
        assert engine.pids() == ()
        assert not engine.is_healthy()
        assert_all_gone(seen[-1])
    assert set(seen[0]).isdisjoint(seen[1])
    assert EngineProcessRegistry(tmp_path / "pids.json").records() == []


def test_engines_forked_from_the_forkserver(loop: asyncio.AbstractEventLoop,
                                            demo_model_dir: Path, tmp_path: Path) -> None:
    """A load forks vLLM's engine core and its worker from the forkserver (torch and vLLM
    imported once) instead of spawning them: they run as the spawned ones do (vLLM's OpenMP
    CPU list for the worker, the same text for the same seed), a killed worker is seen
    mid-stream, and the app's close ends the server too."""
    request = ask("same", max_tokens=12, ignore_eos=True, seed=3, temperature=1.0)

    async def text(engine: VllmEngine) -> str:
        return "".join(d.text + d.thinking for d in await collect(engine, request))

    spawned = make_engine(tmp_path, preforked=False)
    run(loop, spawned.load(spec_for(demo_model_dir)))
    assert spawned.engine_start == "spawned"
    me = os.getpid()
    assert me in {psutil.Process(p).ppid() for p in spawned.pids()}  # spawned by vLLM from here
    spawned_affinity = sorted(psutil.Process(p).cpu_affinity() for p in spawned.pids())
    spawned_text = run(loop, text(spawned))
    run(loop, spawned.shutdown(), timeout=60)

    assert forkserver.start()
    assert expected_start() in ("forked", "forked_after_wait")  # the ETA's guess meanwhile
    assert forkserver.wait_ready()
    assert expected_start() == "forked"
    server = forkserver.pid()
    # The preload runs in the server only (here it would rename this process, freeze its heap).
    assert "core.engine.forkserver_preload" not in sys.modules
    engine = make_engine(tmp_path)
    run(loop, engine.load(spec_for(demo_model_dir)))
    procs = [psutil.Process(p) for p in engine.pids()]
    assert len(procs) == 2  # the engine core and its worker (the CPU build's executor)
    assert all(p.ppid() == server for p in procs), [(p.pid, p.ppid()) for p in procs]
    assert sorted(p.cpu_affinity() for p in procs) == spawned_affinity
    assert set(engine.load_phases) >= {"spawn", "imports", "handshake"}
    assert engine.engine_start == "forked"  # what the switch history records for its ETA
    assert run(loop, text(engine)) == spawned_text

    worker = next(p for p in procs if "EngineCore" not in p.name())

    async def kill_worker_mid_stream() -> EngineDiedError:
        async for delta in engine.generate(ask("go", max_tokens=2000, ignore_eos=True)):
            if delta.tokens >= 2 and worker.is_running():
                worker.kill()
        raise AssertionError("the stream ended normally after its worker was killed")

    with pytest.raises(EngineDiedError):
        run(loop, kill_worker_mid_stream(), timeout=60)
    run(loop, engine.shutdown(), timeout=60)
    assert_all_gone(tuple(p.pid for p in procs))
    assert forkserver.running()  # engines come and go, the server stays for the next load

    end_engine_processes(child_pids())  # the app's close: spares nothing it started before
    assert not forkserver.running()
    assert expected_start() == "spawned"
    assert not psutil.pid_exists(server) or not alive(psutil.Process(server))


def test_cancelled_load_leaves_no_engine_behind(loop: asyncio.AbstractEventLoop,
                                                demo_model_dir: Path, tmp_path: Path) -> None:
    """Cancelling a load (a switch timeout, the Cancel button, closing the app) while vLLM is
    starting must not let that engine come up later behind the manager's back."""
    engine = make_engine(tmp_path)
    before = child_pids()

    async def scenario() -> None:
        task = asyncio.ensure_future(engine.load(spec_for(demo_model_dir)))
        # Wait until vLLM has spawned its engine process: the start is then well under way.
        while not (child_pids() - before - _trackers()):
            assert not task.done(), "the load ended before it could be cancelled"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, scenario(), timeout=180)
    assert not engine.loaded
    assert engine.pids() == ()
    time.sleep(1.0)  # a process the start thread might still spawn would show up by now
    leftovers = []
    for pid in child_pids() - before - _trackers():
        try:
            if alive(psutil.Process(pid)):
                leftovers.append(pid)
        except psutil.NoSuchProcess:
            continue
    assert leftovers == []
    # The engine is still usable for a later load.
    run(loop, engine.load(spec_for(demo_model_dir)))
    assert engine.is_healthy()
    run(loop, engine.shutdown(), timeout=60)


def test_load_asking_for_too_much_memory(loop: asyncio.AbstractEventLoop, demo_model_dir: Path,
                                         tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    before = child_pids()
    with pytest.raises(InsufficientMemoryError) as info:
        run(loop, engine.load(spec_for(demo_model_dir).__class__(
            model_id="demo", path=str(demo_model_dir), max_model_len=512,
            memory_utilization=0.99)))
    err = info.value
    assert err.requested == pytest.approx(0.99)
    assert err.free_gib is not None
    assert err.total_gib is not None
    assert 0 < err.free_gib < err.total_gib
    assert not engine.loaded
    assert {p for p in child_pids() - before if alive(psutil.Process(p))} <= _trackers()


def test_context_that_does_not_fit(loop: asyncio.AbstractEventLoop, demo_model_dir: Path,
                                   tmp_path: Path) -> None:
    # 1 MiB of KV cache holds 1024 float32 tokens of this model (minus vLLM's block rounding).
    engine = make_engine(tmp_path, extra_engine_args={"kv_cache_memory_bytes": 1 << 20})
    with pytest.raises(ContextTooLongError) as info:
        run(loop, engine.load(LoadSpec(model_id="demo", path=str(demo_model_dir),
                                       max_model_len=4096, memory_utilization=0.1)))
    assert info.value.requested == 4096
    assert info.value.max_fitting is not None
    assert 0 < info.value.max_fitting < 4096


def _trackers() -> set[int]:
    out = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" in " ".join(proc.cmdline()):
                out.add(proc.pid)
        except psutil.Error:
            pass
    return out


def test_unsupported_architecture_and_quantization(loop: asyncio.AbstractEventLoop,
                                                   demo_model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(demo_model_dir, odd)
    config = json.loads((odd / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (odd / "config.json").write_text(json.dumps(config))
    engine = make_engine(tmp_path)
    with pytest.raises(UnsupportedModelError, match="FancyNewForCausalLM") as info:
        run(loop, engine.load(spec_for(odd)))
    assert "\n" not in str(info.value)
    with pytest.raises(UnsupportedModelError, match="quantization"):
        run(loop, engine.load(spec_for(demo_model_dir, quantization="awq-nonsense")))
    assert not engine.loaded


def test_enforce_eager_defaults_to_eager_on_the_cpu_build(demo_model_dir: Path) -> None:
    """vLLM's CPU build here: eager unless the model says otherwise (compiled loads measured
    7-9 s slower); a model's own choice always stands."""
    from vllm.platforms import current_platform

    from core.engine.vllm_engine import engine_enforce_eager

    assert current_platform.is_cpu()
    assert engine_enforce_eager(spec_for(demo_model_dir)) is True
    assert engine_enforce_eager(spec_for(demo_model_dir, enforce_eager=False)) is False
    assert engine_enforce_eager(spec_for(demo_model_dir, enforce_eager=True)) is True
