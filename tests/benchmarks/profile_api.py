"""Where the app's process spends its CPU while it streams through the local API: the real app
(offscreen, `--serve`, demo-tiny-a), N streamed requests of bench_api's shape, sampled by py-spy
(the dev extra installs it). Prints the streams' tokens/s and the frames with the most samples,
own and inclusive. Not a benchmark (py-spy's sampling costs CPU too): a map of what costs.

    python -m tests.benchmarks.profile_api [--streams N] [--rate HZ] [--raw FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

from core.engine.demo_model import ensure_demo_models
from tests.benchmarks.bench_api import A, _one_stream, _our_app


def _app_pid(base: str) -> int:
    import psutil

    port = int(base.rsplit(":", 1)[1].split("/")[0])
    for conn in psutil.net_connections("tcp"):
        if (conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
                and conn.pid is not None):
            return conn.pid
    raise RuntimeError(f"no process listens on port {port}")


async def _streams(base: str, n: int) -> list[float]:
    client = openai.AsyncOpenAI(base_url=base, api_key="profile", max_retries=0, timeout=300)
    rates = []
    for _ in range(n):
        ttft, end, tokens = await _one_stream(client, A)
        rates.append((tokens - 1) / (end - ttft))
    await client.close()
    return rates


def _summary(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    rows = [f"{total} samples", "-- own"]
    rows += [f"{100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    rows += ["-- inclusive"]
    rows += [f"{100 * n / total:5.1f} %  {f}" for f, n in inclusive.most_common(2 * top)]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed (pip install py-spy, or the dev extra)")
    with tempfile.TemporaryDirectory(prefix="profile-api-") as tmp:
        raw = args.raw or Path(tmp) / "stacks.txt"
        ensure_demo_models(Path(tmp) / "models")
        with _our_app(Path(tmp)) as base:
            asyncio.run(_streams(base, 2))  # warm the path
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(_app_pid(base)), "--format", "raw", "-o", str(raw),
                 "--rate", str(args.rate), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # py-spy attaches
            rates = asyncio.run(_streams(base, args.streams))
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)
        print("tokens/s per stream:", " ".join(f"{r:.0f}" for r in rates))
        print(_summary(raw, args.top))


if __name__ == "__main__":
    main()
