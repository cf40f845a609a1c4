"""Soak benchmark: what the soak itself costs beyond the generation it drives.

One real vLLM load of the demo model on the simulated RTX 4090 Laptop (sampling at the default
2 Hz). Each round streams for ROUND_S seconds with CONCURRENCY requests in flight, twice: the
plain stream (workers looping over ChatSession.generate, no sampler, nothing recorded) as the
baseline, then a SoakRunner with the same settings. Measured:

- the soak's own CPU time (thread CPU time of the sampler ticks, the recording of every delta
  and request, and building + saving the report), as % of one core over the run;
- this process's CPU (% of one core, and ms per 1000 tokens) and the tokens/s in both, for
  comparison (noisier: vLLM's output handling runs in this process too).

``python -m tests.benchmarks.bench_soak`` prints the figures as JSON. About 2-3 minutes here.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROUNDS = 3
ROUND_S = 15.0
CONCURRENCY = 2
PROMPT_TOKENS = 64
MAX_TOKENS = 32


def _stats(values: list[float], unit: str) -> dict[str, Any]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "unit": unit, "n": len(values)}


class CpuMeter:
    """Thread CPU time spent inside the wrapped functions, whichever thread calls them."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - t

        setattr(owner, name, timed)


async def _plain_stream(runtime: Any, seconds: float) -> int:
    """The baseline: the same requests through the ChatSession, nothing sampled or recorded."""
    from core.engine.base import ChatMessage, GenerationRequest
    from core.soak.runner import soak_prompt

    tokens = 0
    deadline = time.monotonic() + seconds

    async def worker(k: int) -> None:
        nonlocal tokens
        n = 0
        while time.monotonic() < deadline:
            n += 1
            request = GenerationRequest(
                (ChatMessage("user", soak_prompt(n * CONCURRENCY + k, PROMPT_TOKENS)),),
                max_tokens=MAX_TOKENS, temperature=0.8, request_id=f"plain-{k}-{n}",
                ignore_eos=True)
            got = 0
            async for delta in runtime.chat.generate(request, "demo-tiny-a"):
                got = delta.tokens
            tokens += got

    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    return tokens


async def _bench(work: Path) -> dict[str, dict[str, Any]]:
    from core.engine.demo_model import build_demo_model
    from core.runtime import Runtime
    from core.soak import recording, report
    from core.soak import runner as runner_module
    from core.soak.runner import SoakRunner, SoakSettings
    from core.telemetry.sampler import Sampler

    build_demo_model(work / "models" / "demo-tiny-a", seed=0, name="demo-tiny-a")
    # A shared, busy machine can take minutes to start an engine: no 90 s load timeout here.
    config = work / "bench.yaml"
    config.write_text("model_switching:\n  switch_timeout_seconds: 600\n", encoding="utf-8")
    runtime = Runtime.create(config_file=config, simulate="rtx4090-laptop",
                             history_path=work / "h.sqlite3")
    meter = CpuMeter()
    # The soak's own work: every sampler tick (it exists for the soak here), the recording of
    # each streamed delta and request, and the report at the end.
    meter.wrap(Sampler, "_tick")
    for name in ("add_tokens", "add_request", "add_event"):
        meter.wrap(recording.SoakRecording, name)
    meter.wrap(runner_module, "build_report")
    results: dict[str, list[float]] = {k: [] for k in (
        "soak_own_cpu", "soak_save", "baseline_plain_stream_process_cpu",
        "soak_process_cpu", "baseline_plain_stream_tokens_per_s", "soak_tokens_per_s",
        "baseline_plain_stream_cpu_per_1k_tokens", "soak_cpu_per_1k_tokens")}
    try:
        result = await runtime.manager.switch_to("demo-tiny-a")
        assert result.ok, result.errors
        await _plain_stream(runtime, 3.0)  # warm the engine's paths up
        for _ in range(ROUNDS):
            cpu, wall = time.process_time(), time.monotonic()
            tokens = await _plain_stream(runtime, ROUND_S)
            elapsed = time.monotonic() - wall
            results["baseline_plain_stream_process_cpu"].append(
                100 * (time.process_time() - cpu) / elapsed)
            results["baseline_plain_stream_tokens_per_s"].append(tokens / elapsed)
            results["baseline_plain_stream_cpu_per_1k_tokens"].append(
                1e6 * (time.process_time() - cpu) / max(1, tokens))

            meter.seconds = 0.0
            runner = SoakRunner(runtime.chat, runtime.sampler,
                                SoakSettings(ROUND_S / 60, CONCURRENCY, PROMPT_TOKENS, MAX_TOKENS,
                                             "demo-tiny-a"),
                                device_label="bench", simulated=True)
            cpu, wall = time.process_time(), time.monotonic()
            soak_report = await runner.run()
            elapsed = time.monotonic() - wall
            process_cpu = time.process_time() - cpu
            assert runner.recording is not None
            t = time.thread_time()
            report.save_run(soak_report, runner.recording, work / "runs" / str(time.time_ns()))
            saving = time.thread_time() - t
            results["soak_save"].append(1000 * saving)
            results["soak_own_cpu"].append(100 * (meter.seconds + saving) / elapsed)
            results["soak_process_cpu"].append(100 * (process_cpu + saving) / elapsed)
            results["soak_tokens_per_s"].append(soak_report["tokens"] / elapsed)
            results["soak_cpu_per_1k_tokens"].append(
                1e6 * (process_cpu + saving) / max(1, soak_report["tokens"]))
    finally:
        await runtime.close()
    units = {"soak_save": "ms", "baseline_plain_stream_tokens_per_s": "tok/s",
             "soak_tokens_per_s": "tok/s", "baseline_plain_stream_cpu_per_1k_tokens": "ms",
             "soak_cpu_per_1k_tokens": "ms"}
    return {name: _stats(values, units.get(name, "% of one core"))
            for name, values in results.items()}


def run() -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="vrampilot-bench-soak-") as tmp:
        os.environ["VRAMPILOT_DATA_DIR"] = tmp
        return asyncio.run(_bench(Path(tmp)))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
