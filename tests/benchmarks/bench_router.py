"""Router decision time on 1k / 10k / 50k characters (target: under 100 us on 50k).

Each figure is the per-decision time over batches (min / median / max of the batch means), the full
decision: complexity analysis, band and rule, on-disk and fit checks of the candidates (the
demo model is "on disk" in a temporary models dir, so the preferred Qwen3 models are rejected
first, as on a machine without their weights). The baseline in the same run is the least any
case-insensitive scan can cost: one `str.lower()` of the text and one `in` test. Wall and CPU
time are both reported: on a shared machine the CPU figure is the decision's own cost.

    python -m tests.benchmarks.bench_router
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.models.catalog import Catalog, load_catalog
from core.models.estimator import GIB
from core.router import HardwareState, Router, load_router_config

Figure = dict[str, float | str]
SIZES = (1_000, 10_000, 50_000)
PARAGRAPH = ("Senior ML engineer, Berlin. Salary 95-120k EUR plus equity; remote or hybrid. "
             "<table><tr><td>base</td><td>bonus</td></tr></table> Requirements: Python, CUDA. ")


def _figure(values: list[float], unit: str) -> Figure:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "unit": unit}


def _per_call_us(fn: Callable[[], object], batches: int,
                 per_batch: int) -> tuple[list[float], list[float]]:
    """Per-call wall and CPU (this process) microseconds, one figure per batch.

    CPU time is what the decision costs even when other processes share the cores; wall time is
    what a caller waits on an idle machine.
    """
    fn()  # warm caches (footprints, interned strings)
    wall, cpu = [], []
    for _ in range(batches):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(per_batch):
            fn()
        w1, c1 = time.perf_counter(), time.process_time()
        wall.append((w1 - w0) / per_batch * 1e6)
        cpu.append((c1 - c0) / per_batch * 1e6)
    return wall, cpu


def run(batches: int = 15, per_batch: int = 300) -> dict[str, Figure]:
    """All figures as {name: {min, median, max, unit}}; baselines are named ``baseline_*``."""
    figures: dict[str, Figure] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        demo = models / "demo-tiny-a"
        demo.mkdir(parents=True)
        (demo / "config.json").write_text('{"model_type": "qwen3"}')
        catalog = Catalog(load_catalog(models_dir=models).entries, models)
        router = Router(load_router_config(catalog), catalog)
        hardware = HardwareState(15 * GIB, 16 * GIB, 62.0, "benchmark")
        for size in SIZES:
            text = (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]
            decision = router.route(text, "salary_analysis", hardware)
            assert decision.model_id == "demo-tiny-a", decision.explain()

            def decide(text: str = text) -> object:
                return router.route(text, "salary_analysis", hardware)

            def baseline(text: str = text) -> object:
                return "equity" in text.lower()

            label = f"{size // 1000}k_chars"
            wall, cpu = _per_call_us(decide, batches, per_batch)
            figures[f"router_decision_{label}"] = _figure(wall, "us")
            figures[f"router_decision_cpu_{label}"] = _figure(cpu, "us")
            figures[f"router_decisions_per_s_{label}"] = _figure([1e6 / us for us in wall], "1/s")
            base_wall, base_cpu = _per_call_us(baseline, batches, per_batch)
            figures[f"baseline_lower_in_{label}"] = _figure(base_wall, "us")
            figures[f"baseline_lower_in_cpu_{label}"] = _figure(base_cpu, "us")
    return figures


def main() -> None:
    print(f"bench_router (pid {os.getpid()})")
    for name, fig in run().items():
        print(f"{name:36} min {fig['min']:12.2f}  median {fig['median']:12.2f}  "
              f"max {fig['max']:12.2f}  {fig['unit']}")


if __name__ == "__main__":
    main()
