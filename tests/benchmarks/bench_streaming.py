"""Streaming benchmark: VllmEngine against vLLM's own AsyncLLM.generate on the same loaded model.

Measures load and shutdown times, first-token latency and tokens/s through the adapter and
directly, the adapter's added latency per delta, and the event loop's worst stall while a model
loads (a 5 ms ticker measuring lateness) against a load run on the loop itself.

``run() -> dict`` returns {name: {"min", "median", "max", "unit"}}; ``python -m
tests.benchmarks.bench_streaming`` prints it as JSON. About 2.5 minutes on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.engine.base import ChatMessage, GenerationRequest, LoadSpec
from core.engine.demo_model import build_demo_model
from core.engine.processes import EngineProcessRegistry
from core.engine.vllm_engine import VllmEngine, engine_dtype, engine_enforce_eager
from core.engine.vllm_process import import_vllm

ROUNDS = 5
MAX_TOKENS = 64


def _stats(values: list[float], unit: str) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "unit": unit, "n": len(values)}


class Ticker:
    """A 5 ms periodic task recording how late each tick fires: the loop's stalls."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + self.period_s
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            self.worst_s = max(self.worst_s, now - expected)
            expected = now + self.period_s

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="bench-ticker")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _python_work(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        {i: str(i) for i in range(1000)}


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    await fn()
    return time.monotonic() - started


async def _bench(model_dir: Path, work: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    # Importing vLLM in a worker thread can still stall the loop (imports hold the GIL; what
    # import_vllm does about it is in its docstring): measured on its own, as the first load
    # does it.
    loop = asyncio.get_running_loop()
    with Ticker() as ticker:
        import_s = await _timed(lambda: loop.run_in_executor(None, import_vllm))
    results["vllm_import_in_thread"] = _stats([import_s], "s")
    results["loop_worst_stall_during_vllm_import"] = _stats([ticker.worst_s * 1000], "ms")
    # The floor on this machine: a thread running Python as long, which lets the loop in at
    # every switch interval (what is left is the OS scheduling the loop's thread late).
    with Ticker() as ticker:
        await loop.run_in_executor(None, _python_work, import_s)
    results["baseline_loop_worst_stall_python_thread"] = _stats([ticker.worst_s * 1000], "ms")

    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    spec = LoadSpec(model_id="demo", path=str(model_dir), max_model_len=512,
                    memory_utilization=0.1)
    engine = VllmEngine(registry=EngineProcessRegistry(work / "pids.json"), log_dir=work / "logs")

    # Load through the adapter (executor) with the ticker running: the loop must keep ticking.
    stalls = []
    with Ticker() as ticker:
        loads = [await _timed(lambda: engine.load(spec))]
    stalls.append(ticker.worst_s * 1000)

    request = GenerationRequest(messages=(ChatMessage("user", "Tell me a story"),),
                                max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    ids, _ = engine._render_prompt(request)
    llm = engine._llm

    adapter_ttft, adapter_tps, direct_ttft, direct_tps, per_delta = [], [], [], [], []
    for i in range(ROUNDS + 1):
        # Adapter.
        started = time.monotonic()
        first = None
        n_deltas = 0
        tokens = 0
        async for delta in engine.generate(request):
            n_deltas += 1
            tokens = delta.tokens
            if first is None and delta.tokens:
                first = time.monotonic() - started
        a_total = time.monotonic() - started
        # vLLM directly, same prompt ids and sampling.
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True,
                                output_kind=RequestOutputKind.DELTA)
        started = time.monotonic()
        d_first = None
        d_tokens = 0
        d_deltas = 0
        async for out in llm.generate(TokensPrompt(prompt_token_ids=ids), params, f"direct-{i}"):
            d_deltas += 1
            d_tokens += len(out.outputs[0].token_ids)
            if d_first is None and d_tokens:
                d_first = time.monotonic() - started
        d_total = time.monotonic() - started
        if i == 0:
            continue  # warm-up round
        assert first is not None
        assert d_first is not None
        assert tokens == d_tokens == MAX_TOKENS
        adapter_ttft.append(first * 1000)
        direct_ttft.append(d_first * 1000)
        adapter_tps.append((tokens - 1) / (a_total - first))
        direct_tps.append((d_tokens - 1) / (d_total - d_first))
        per_delta.append((a_total - d_total) / max(n_deltas, d_deltas) * 1000)

    results["adapter_first_token"] = _stats(adapter_ttft, "ms")
    results["baseline_vllm_direct_first_token"] = _stats(direct_ttft, "ms")
    results["adapter_tokens_per_s"] = _stats(adapter_tps, "tok/s")
    results["baseline_vllm_direct_tokens_per_s"] = _stats(direct_tps, "tok/s")
    results["adapter_added_latency_per_delta"] = _stats(per_delta, "ms")

    del llm
    shutdowns = [await _timed(engine.shutdown)]
    with Ticker() as ticker:
        loads.append(await _timed(lambda: engine.load(spec)))
    stalls.append(ticker.worst_s * 1000)
    results["adapter_load"] = _stats(loads, "s")
    results["loop_worst_stall_during_adapter_load"] = _stats(stalls, "ms")
    shutdowns.append(await _timed(engine.shutdown))
    results["adapter_shutdown"] = _stats(shutdowns, "s")

    # vLLM's own figures: constructing AsyncLLM on the loop (blocking, as the decision record's
    # sketch did) with the same ticker, and its own shutdown.
    args = AsyncEngineArgs(model=str(model_dir), max_model_len=512, gpu_memory_utilization=0.1,
                           dtype=engine_dtype(spec), enforce_eager=engine_enforce_eager(spec),
                           disable_log_stats=True)
    with Ticker() as ticker:
        await asyncio.sleep(0.01)
        started = time.monotonic()
        direct = AsyncLLM.from_engine_args(args)  # blocks the loop on purpose
        direct_load = time.monotonic() - started
        await asyncio.sleep(0.02)  # let the ticker observe the stall
    results["baseline_vllm_direct_load_blocking"] = _stats([direct_load], "s")
    stall_ms = ticker.worst_s * 1000
    results["baseline_loop_worst_stall_during_blocking_load"] = _stats([stall_ms], "ms")
    started = time.monotonic()
    direct.shutdown()
    del direct
    results["baseline_vllm_direct_shutdown"] = _stats([time.monotonic() - started], "s")
    return results


def run() -> dict[str, dict[str, Any]]:
    """Build the demo model in a temp dir and run the benchmark (~2.5 min on a 2-core machine)."""
    with tempfile.TemporaryDirectory(prefix="vrampilot-bench-") as tmp:
        work = Path(tmp)
        model = build_demo_model(work / "demo", seed=0)
        return asyncio.run(_bench(model, work))


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
