"""enforce_eager's trade-off on this machine: load time against decode speed, same run.

vLLM compiles the model (torch.compile; on a GPU also CUDA-graph capture) unless enforce_eager
is set: a slower load, for a faster decode. The compiled code is cached (VLLM_CACHE_ROOT,
~/.cache/vllm by default), so only the first compiled load of a model pays the whole compile.
Three loads of the demo model through our engine, each spawned (no forkserver, so each pays the
same process start), in a fresh compile cache: eager (the baseline), compiled with an empty
cache, compiled again with the cache it left; then the decode speed of each.

What it informs: VllmEngine's default (core.engine.vllm_engine.engine_enforce_eager), with the
switch benchmark's load phases. ~4 min here.
VRAMPILOT_BENCH_EAGER_TOKENS (default 512) sets the decode length.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from core.engine.base import ChatMessage, GenerationRequest, LoadSpec
from core.engine.demo_model import ensure_demo_models
from core.engine.processes import EngineProcessRegistry
from core.engine.vllm_engine import VllmEngine
from tests.benchmarks.bench_streaming import _stats

TOKENS = int(os.environ.get("VRAMPILOT_BENCH_EAGER_TOKENS", "512"))
# Eager first and last: the first load of a process also warms the OS file cache of torch's
# libraries, which made a lone first eager load look slower than it is.
RUNS = (("eager", True), ("compiled_cold_cache", False), ("compiled_warm_cache", False),
        ("eager", True))


async def _one(name: str, eager: bool, model: Path, tmp: Path,
               results: dict[str, list[float]]) -> None:
    engine = VllmEngine(registry=EngineProcessRegistry(tmp / "pids.json"), log_dir=tmp / "logs",
                        preforked=False)
    spec = LoadSpec(model_id="demo", path=str(model), max_model_len=1024,
                    memory_utilization=0.1, enforce_eager=eager, kv_cache_tokens=1024)
    started = time.monotonic()
    await engine.load(spec)
    results.setdefault(f"load_{name}", []).append(time.monotonic() - started)
    try:
        request = GenerationRequest((ChatMessage("user", "Count"),), max_tokens=TOKENS,
                                    temperature=0.0, ignore_eos=True)
        for _ in range(3):
            first = end = None
            tokens = 0
            t0 = time.monotonic()
            async for delta in engine.generate(request):
                first = first or time.monotonic()
                tokens = delta.tokens or tokens
                end = time.monotonic()
            if first is None or end is None or end <= first:
                raise RuntimeError(f"{name}: no tokens")
            results.setdefault(f"decode_{name}", []).append(tokens / (end - t0))
    finally:
        await engine.shutdown()


def run() -> dict[str, dict[str, Any]]:
    results: dict[str, list[float]] = {}
    old = {k: os.environ.get(k) for k in ("VRAMPILOT_DATA_DIR", "VLLM_CACHE_ROOT")}
    with tempfile.TemporaryDirectory(prefix="vrampilot-bench-eager-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["VRAMPILOT_DATA_DIR"] = str(tmp)
        os.environ["VLLM_CACHE_ROOT"] = str(tmp / "vllm-cache")  # the first compile is cold
        try:
            model = next(p for p in ensure_demo_models() if p.name == "demo-tiny-a")
            for name, eager in RUNS:
                asyncio.run(_one(name, eager, model, tmp, results))
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    out = {name: _stats(values, "s" if name.startswith("load") else "tok/s")
           for name, values in results.items()}
    eager_load = out["load_eager"]["median"]
    eager_decode = out["decode_eager"]["median"]
    for name, _ in RUNS[1:3]:
        out[f"ratio_load_{name}_vs_eager"] = _stats(
            [out[f"load_{name}"]["median"] / eager_load], "x")
        out[f"ratio_decode_{name}_vs_eager"] = _stats(
            [out[f"decode_{name}"]["median"] / eager_decode], "x")
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:45} {value['median']:10.3f} {value['unit']}")
