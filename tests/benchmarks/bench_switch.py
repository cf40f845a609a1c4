"""Switching between the two demo models on the real vLLM CPU engine: our manager against the
decision record's sequential recipe (shutdown, gc.collect, a fixed 2 s sleep, a blocking load ON
the event loop). Reports total switch time, phases, the manager's own overhead (everything but the
engine's load, shutdown and warm-up generation), the memory-return wait against the fixed 2 s, and
the event loop's worst stall (5 ms ticker) during each. `run()` takes ~3-5 min on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from core.engine.base import LoadSpec
from core.engine.demo_model import ensure_demo_models
from core.engine.vllm_engine import VllmEngine, engine_dtype
from core.history_store import HistoryStore
from core.manager.fit import CPU_MIN_UTILIZATION, estimator_fit
from core.manager.manager import ModelManager
from core.manager.memory_wait import HostMemoryProbe
from core.models.catalog import ModelEntry, load_catalog
from core.models.estimator import Estimator
from core.telemetry.activity import EngineActivity
from core.telemetry.config import ModelSwitching
from tests.benchmarks.bench_streaming import Ticker, _stats

REPETITIONS = 2
PAIR = ("demo-tiny-a", "demo-tiny-b")
RECORD_FIXED_WAIT_S = 2.0


async def _bench_manager(results: dict[str, list[float]]) -> None:
    catalog = load_catalog()
    activity = EngineActivity()
    history = HistoryStore()
    switching = ModelSwitching(fallback_cascade=PAIR, switch_timeout_seconds=300)

    def factory(entry: ModelEntry) -> VllmEngine:
        return VllmEngine(activity=activity)

    manager = ModelManager(catalog, switching, HostMemoryProbe(), factory, history, activity,
                           estimator_fit(Estimator(catalog), min_utilization=CPU_MIN_UTILIZATION))
    try:
        await manager.switch_to(PAIR[0])
        for i in range(REPETITIONS):
            target = PAIR[(i + 1) % 2]
            with Ticker() as ticker:
                result = await manager.switch_to(target)
            if result.outcome != "ready":
                raise RuntimeError(f"switch to {target} failed: {result.errors}")
            row = history.recent(1)[0]
            ph = row.phases
            engine_s = ph.get("unloading", 0) + ph.get("loading", 0) + ph.get("warming_up", 0)
            results["manager_switch_total"].append(row.total_s)
            results["manager_unloading"].append(ph.get("unloading", 0))
            results["manager_loading"].append(ph.get("loading", 0))
            results["manager_warming_up"].append(ph.get("warming_up", 0))
            results["manager_memory_return_wait"].append(ph.get("waiting_for_memory", 0) * 1000)
            results["manager_overhead"].append((row.total_s - engine_s) * 1000)
            results["manager_loop_worst_stall"].append(ticker.worst_s * 1000)
    finally:
        await manager.close()
        history.close()


async def _bench_record_recipe(results: dict[str, list[float]], models: Path) -> None:
    """The record's sketch: del, gc.collect, time.sleep(2), a blocking constructor on the loop."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    def args(model_id: str) -> AsyncEngineArgs:
        spec = LoadSpec(model_id=model_id, path=str(models / model_id), max_model_len=1024,
                        memory_utilization=CPU_MIN_UTILIZATION)
        return AsyncEngineArgs(model=spec.path, max_model_len=spec.max_model_len,
                               gpu_memory_utilization=spec.memory_utilization,
                               dtype=engine_dtype(spec), enforce_eager=True,
                               disable_log_stats=True)

    llm = AsyncLLM.from_engine_args(args(PAIR[0]))
    try:
        for i in range(REPETITIONS):
            target = PAIR[(i + 1) % 2]
            with Ticker() as ticker:
                await asyncio.sleep(0.01)
                started = time.monotonic()
                llm.shutdown()
                del llm
                gc.collect()
                time.sleep(RECORD_FIXED_WAIT_S)  # noqa: ASYNC251 - the record's blocking wait
                llm = AsyncLLM.from_engine_args(args(target))  # blocks the loop, as sketched
                total = time.monotonic() - started
                await asyncio.sleep(0.02)  # let the ticker see the stall
            results["record_switch_total"].append(total)
            results["record_fixed_wait"].append(RECORD_FIXED_WAIT_S * 1000)
            results["record_loop_worst_stall"].append(ticker.worst_s * 1000)
    finally:
        llm.shutdown()


UNITS = {"manager_switch_total": "s", "manager_unloading": "s", "manager_loading": "s",
         "manager_warming_up": "s", "manager_memory_return_wait": "ms", "manager_overhead": "ms",
         "manager_loop_worst_stall": "ms", "record_switch_total": "s", "record_fixed_wait": "ms",
         "record_loop_worst_stall": "ms"}


def run() -> dict[str, dict[str, Any]]:
    """Both ways, REPETITIONS switches each, in a temp data dir: {name: {min, median, max}}."""
    results: dict[str, list[float]] = {name: [] for name in UNITS}
    old = os.environ.get("VRAMPILOT_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="vrampilot-bench-switch-") as tmp:
        os.environ["VRAMPILOT_DATA_DIR"] = tmp
        try:
            ensure_demo_models()
            asyncio.run(_bench_manager(results))
            asyncio.run(_bench_record_recipe(results, Path(tmp) / "models"))
        finally:
            if old is None:
                os.environ.pop("VRAMPILOT_DATA_DIR", None)
            else:
                os.environ["VRAMPILOT_DATA_DIR"] = old
    return {name: _stats(values, UNITS[name]) for name, values in results.items() if values}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
