"""Switching between the two demo models on the real vLLM CPU engine, with where the time goes.

Same run, three parts, each against its baseline:
- switches: our manager, wired as the app wires it (KV cache sized to the fitted context, the
  next model read ahead, per-phase ETA, engines forked from the engine forkserver once it has
  started after the first load), against the decision record's sequential recipe (shutdown,
  gc.collect, a fixed 2 s sleep, a blocking load ON the event loop); "warm" switches are those
  that found the forkserver ready;
- loads: our engine's load against vLLM's AsyncLLM constructed directly (vLLM's defaults),
  interleaved so all see the same machine: ours cold (spawned, the app's first load) and warm
  (forked from the ready forkserver);
- the phase breakdown of each (the switch phases and each load's phases, from vLLM's log), the
  ETA's error against the real duration, and the machine's load average while each part ran.

The machine is shared: read the ratios and their spreads, not the absolute seconds.
VRAMPILOT_BENCH_SWITCHES (default 16: the ETA error after three switches of a pair needs
the later ones), VRAMPILOT_BENCH_RECIPE (3), VRAMPILOT_BENCH_LOADS (3)
set the repetitions. ~15 min on a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from core.engine import forkserver
from core.engine.base import LoadSpec
from core.engine.demo_model import ensure_demo_models
from core.engine.load_phases import LoadMarks, breakdown, parse_log, process_started_at
from core.engine.page_cache import prefetch_model_files
from core.engine.processes import child_pids, new_engine_processes
from core.engine.vllm_engine import (
    VllmEngine,
    engine_dtype,
    engine_enforce_eager,
    expected_start,
)
from core.engine.vllm_process import write_logging_config
from core.history_store import HistoryStore
from core.manager.events import SwitchEvent
from core.manager.fit import CPU_MIN_UTILIZATION, estimator_fit
from core.manager.manager import ModelManager
from core.manager.memory_wait import HostMemoryProbe
from core.models.catalog import ModelEntry, load_catalog
from core.models.estimator import Estimator
from core.telemetry.activity import EngineActivity
from core.telemetry.config import ModelSwitching
from tests.benchmarks.bench_streaming import Ticker, _stats

SWITCHES = int(os.environ.get("VRAMPILOT_BENCH_SWITCHES", "16"))
RECIPE_SWITCHES = int(os.environ.get("VRAMPILOT_BENCH_RECIPE", "3"))
LOADS = int(os.environ.get("VRAMPILOT_BENCH_LOADS", "3"))
PAIR = ("demo-tiny-a", "demo-tiny-b")
RECORD_FIXED_WAIT_S = 2.0
CONTEXT = 1024  # the catalog's context for the demo models: the recipe loads the same


def _load_avg() -> float:
    return os.getloadavg()[0]


def _direct_args(path: Path) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs

    spec = LoadSpec(model_id=path.name, path=str(path), max_model_len=CONTEXT,
                    memory_utilization=CPU_MIN_UTILIZATION)
    return AsyncEngineArgs(model=spec.path, max_model_len=spec.max_model_len,
                           gpu_memory_utilization=spec.memory_utilization,
                           dtype=engine_dtype(spec), enforce_eager=engine_enforce_eager(spec),
                           disable_log_stats=True)


def _direct_load(path: Path, log_file: Path) -> tuple[Any, float, dict[str, float]]:
    """vLLM's own start-up, blocking, with its breakdown read the same way as ours. With vLLM's
    defaults: its processes do not inherit the shorter worker-exit grace our engine sets."""
    from vllm.v1.engine.async_llm import AsyncLLM

    ours = os.environ.pop("VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS", None)
    try:
        return _construct(AsyncLLM, path, log_file)
    finally:
        if ours is not None:
            os.environ["VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS"] = ours


def _construct(AsyncLLM: Any, path: Path, log_file: Path
               ) -> tuple[Any, float, dict[str, float]]:

    offset = log_file.stat().st_size if log_file.exists() else 0
    before = child_pids()
    args = _direct_args(path)
    t0 = time.time()
    llm = AsyncLLM.from_engine_args(args)
    t1 = time.time()
    procs = new_engine_processes(before)
    core = next((p for p in procs if p.ppid() == os.getpid()), None)
    worker = next((p for p in procs if p is not core), None)
    marks = LoadMarks(t0, t0, t1, t1,
                      process_started_at(core.pid) if core else None,
                      process_started_at(worker.pid) if worker else None,
                      core.pid if core else None, worker.pid if worker else None)
    with log_file.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    return llm, t1 - t0, breakdown(marks, parse_log(text))


def _add(results: dict[str, list[float]], name: str, value: float) -> None:
    results.setdefault(name, []).append(value)


async def _bench_manager(results: dict[str, list[float]], units: dict[str, str]) -> None:
    catalog = load_catalog()
    activity = EngineActivity()
    history = HistoryStore()
    switching = ModelSwitching(fallback_cascade=PAIR, switch_timeout_seconds=600)
    predicted: dict[int, float | None] = {}

    def factory(entry: ModelEntry) -> VllmEngine:
        return VllmEngine(activity=activity)

    def on_event(event: SwitchEvent) -> None:
        predicted.setdefault(event.switch_id, event.predicted_total_s)  # said at its start

    manager = ModelManager(catalog, switching, HostMemoryProbe(), factory, history, activity,
                           estimator_fit(Estimator(catalog), min_utilization=CPU_MIN_UTILIZATION,
                                         size_kv_cache=True),
                           prefetch=prefetch_model_files,
                           expected_start=lambda entry: expected_start())
    manager.subscribe(on_event)
    seen: dict[tuple[str | None, str], int] = {}
    try:
        # The loop's worst lateness with nothing to do, on this machine now: what the switch
        # stalls are read against (a busy 2-core machine delays a waiting loop tens of ms).
        for _ in range(3):
            with Ticker() as idle:
                await asyncio.sleep(5)
            _add(results, "baseline_idle_loop_worst_stall", idle.worst_s * 1000)
        await manager.switch_to(PAIR[0])
        loads = [_load_avg()]
        for i in range(SWITCHES):
            target = PAIR[(i + 1) % 2]
            source = manager.active_model
            warm = forkserver.ready()  # else the switch waits for its imports, or spawns
            with Ticker() as ticker:
                result = await manager.switch_to(target)
            loads.append(_load_avg())
            if result.outcome != "ready":
                raise RuntimeError(f"switch to {target} failed: {result.errors}")
            row = history.recent(1)[0]
            ph = row.phases
            engine_s = ph.get("unloading", 0) + ph.get("loading", 0) + ph.get("warming_up", 0)
            _add(results, "manager_switch_total", row.total_s)
            if warm:
                _add(results, "manager_warm_switch_total", row.total_s)
            for phase, seconds in ph.items():
                _add(results, f"manager_{phase}", seconds)
                units[f"manager_{phase}"] = "s"
            for phase, seconds in row.load_phases.items():
                _add(results, f"manager_load_{phase}", seconds)
                units[f"manager_load_{phase}"] = "s"
            _add(results, "manager_overhead", (row.total_s - engine_s) * 1000)
            _add(results, "manager_loop_worst_stall", ticker.worst_s * 1000)
            # The ETA said at the start of the switch against what it took, once the pair has
            # history (3 switches of the pair before it, the goal; 1 when too few).
            pair = (source, target)
            before = seen.get(pair, 0)
            seen[pair] = before + 1
            guess = predicted.get(max(predicted)) if predicted else None
            if guess is not None and before >= 1:
                error = abs(guess - row.total_s) / row.total_s * 100
                _add(results, "eta_error_after_1", error)
                if before >= 3:
                    _add(results, "eta_error_after_3", error)
        _add(results, "load_average_during_switches", statistics.mean(loads))
    finally:
        await manager.close()
        history.close()


async def _bench_record_recipe(results: dict[str, list[float]], models: Path,
                               log_file: Path) -> None:
    """The record's sketch: del, gc.collect, time.sleep(2), a blocking constructor on the loop."""
    llm, _, _ = _direct_load(models / PAIR[0], log_file)
    loads = [_load_avg()]
    try:
        for i in range(RECIPE_SWITCHES):
            target = PAIR[(i + 1) % 2]
            with Ticker() as ticker:
                await asyncio.sleep(0.01)
                started = time.monotonic()
                llm.shutdown()
                del llm
                gc.collect()
                shut = time.monotonic() - started
                time.sleep(RECORD_FIXED_WAIT_S)  # noqa: ASYNC251 - the record's blocking wait
                llm, load_s, phases = _direct_load(models / target, log_file)  # blocks the loop
                total = time.monotonic() - started
                await asyncio.sleep(0.02)  # let the ticker see the stall
            loads.append(_load_avg())
            _add(results, "record_switch_total", total)
            _add(results, "record_unloading", shut)
            _add(results, "record_fixed_wait", RECORD_FIXED_WAIT_S)
            _add(results, "record_loading", load_s)
            for phase, seconds in phases.items():
                _add(results, f"record_load_{phase}", seconds)
            _add(results, "record_loop_worst_stall", ticker.worst_s * 1000)
        _add(results, "load_average_during_recipe", statistics.mean(loads))
    finally:
        llm.shutdown()


async def _our_load(results: dict[str, list[float]], spec: LoadSpec, log_dir: Path,
                    name: str) -> float:
    engine = VllmEngine(log_dir=log_dir)
    started = time.monotonic()
    await engine.load(spec)
    took = time.monotonic() - started
    for phase, seconds in engine.load_phases.items():
        _add(results, f"{name}_{phase}", seconds)
    started = time.monotonic()
    await engine.shutdown()
    _add(results, f"{name.replace('_load', '')}_shutdown", time.monotonic() - started)
    return took


async def _bench_loads(results: dict[str, list[float]], models: Path, log_dir: Path) -> None:
    """Our engine's load (as the app asks for it) and vLLM's direct load, interleaved: ours cold
    (no forkserver yet: the app's first load, vLLM spawns its processes) and warm (forked from
    the forkserver, which imported torch and vLLM in the background after an earlier load)."""
    log_file = log_dir / "vllm-engine.log"
    path = models / PAIR[0]
    spec = LoadSpec(model_id=PAIR[0], path=str(path), max_model_len=CONTEXT,
                    memory_utilization=CPU_MIN_UTILIZATION, kv_cache_tokens=CONTEXT)
    loads = []
    kinds = ("cold", "direct", "warm")
    for i in range(LOADS):
        order = kinds[i % 3:] + kinds[:i % 3]
        took: dict[str, float] = {}
        for who in order:
            if who == "warm":
                # Its start-up belongs to the load before (it runs in the background).
                forkserver.start()
                await asyncio.get_running_loop().run_in_executor(None, forkserver.wait_ready)
            loads.append(_load_avg())
            if who == "cold":
                forkserver.stop()
                took[who] = await _our_load(results, spec, log_dir, "our_load")
                forkserver.stop()  # started after the load: its imports would load the machine
            elif who == "warm":
                took[who] = await _our_load(results, spec, log_dir, "our_warm_load")
            else:
                forkserver.stop()
                llm, took[who], phases = _direct_load(path, log_file)
                for phase, seconds in phases.items():
                    _add(results, f"baseline_direct_load_{phase}", seconds)
                started = time.monotonic()
                llm.shutdown()
                del llm
                gc.collect()
                _add(results, "baseline_direct_shutdown", time.monotonic() - started)
        _add(results, "our_load", took["cold"])
        _add(results, "our_warm_load", took["warm"])
        _add(results, "baseline_direct_load", took["direct"])
        _add(results, "load_ratio_per_round", took["cold"] / took["direct"])
        _add(results, "warm_load_ratio_per_round", took["warm"] / took["direct"])
    forkserver.stop()  # the manager's part starts as the app does: without one
    _add(results, "load_average_during_loads", statistics.mean(loads))


def _ratio(results: dict[str, list[float]], ours: str, base: str) -> list[float]:
    """Median ratio, and the ratios of the other side's extremes (the spread)."""
    a, b = results.get(ours), results.get(base)
    if not a or not b:
        return []
    return [min(a) / max(b), statistics.median(a) / statistics.median(b), max(a) / min(b)]


def run() -> dict[str, dict[str, Any]]:
    """All three parts in a temp data dir: {name: {min, median, max, unit, n}}."""
    results: dict[str, list[float]] = {}
    units: dict[str, str] = {}
    old = os.environ.get("VRAMPILOT_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="vrampilot-bench-switch-") as tmp:
        os.environ["VRAMPILOT_DATA_DIR"] = tmp
        try:
            ensure_demo_models()
            log_dir = Path(tmp) / "logs"
            config_file, log_file = write_logging_config(log_dir)
            os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)
            from core.engine.vllm_process import import_vllm

            import_vllm()  # once for all: neither side pays it
            asyncio.run(_bench_loads(results, Path(tmp) / "models", log_dir))
            asyncio.run(_bench_manager(results, units))
            asyncio.run(_bench_record_recipe(results, Path(tmp) / "models", log_file))
        finally:
            forkserver.stop()
            if old is None:
                os.environ.pop("VRAMPILOT_DATA_DIR", None)
            else:
                os.environ["VRAMPILOT_DATA_DIR"] = old
    out: dict[str, dict[str, Any]] = {}
    for name, values in results.items():
        unit = units.get(name) or ("%" if name.startswith("eta_error") else
                                   "ms" if name.endswith(("overhead", "stall")) else
                                   "x" if "ratio" in name else
                                   "" if name.startswith("load_average") else "s")
        out[name] = _stats(values, unit)
    for name, (ours, base) in {
            "ratio_load_ours_over_direct": ("our_load", "baseline_direct_load"),
            "ratio_warm_load_ours_over_direct": ("our_warm_load", "baseline_direct_load"),
            "ratio_switch_ours_over_recipe": ("manager_switch_total", "record_switch_total"),
            "ratio_warm_switch_ours_over_recipe": ("manager_warm_switch_total",
                                                   "record_switch_total")}.items():
        r = _ratio(results, ours, base)
        if r:
            out[name] = {"min": r[0], "median": r[1], "max": r[2], "unit": "x", "n": 1}
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
