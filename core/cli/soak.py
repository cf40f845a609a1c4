"""`vrampilot soak [--model M] [--minutes N] [--concurrency K] [--prompt-tokens P]
[--max-tokens T] [--json]`: sustained generation while the device is sampled, then the report.

Requests go through the ChatSession and the manager like every other request; the alert policy
stays in force (under "act" a critical alert may lower concurrency, or switch the model away,
which ends the soak). Ctrl+C stops the run early and still writes the report. The report (JSON),
the samples (CSV) and, where Qt can render offscreen, the charts (PNG) go to <data>/soak/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

PROGRESS_EVERY_S = 5.0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("soak", parents=[common],
                       help="sustained generation: throttling, steady state, tokens/s, energy")
    p.add_argument("--model", help="catalog id to soak (needed: no model is active in a new "
                                   "process)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="how long to run (default 10; fractions allowed)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="requests in flight at once (default 1, at most 64)")
    p.add_argument("--prompt-tokens", type=int, default=256,
                   help="about this many prompt tokens per request (default 256)")
    p.add_argument("--max-tokens", type=int, default=256,
                   help="tokens generated per request (default 256)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from core.soak.runner import SoakInputError, SoakSettings

    settings = SoakSettings(minutes=args.minutes, concurrency=args.concurrency,
                            prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens,
                            model=args.model)
    try:
        settings.check()
    except SoakInputError as exc:
        _err(f"vrampilot soak: {exc}")
        return 2
    if settings.model is None:
        _err("vrampilot soak: no model is active and none was given: pass --model")
        return 2
    return asyncio.run(_soak(args, settings))


async def _soak(args: argparse.Namespace, settings: Any) -> int:
    from core.engine.base import EngineError
    from core.engine.demo_model import ensure_demo_models
    from core.models.catalog import UnknownModelError
    from core.runtime import Runtime
    from core.soak.report import describe, save_run
    from core.soak.runner import SoakInputError, SoakRunner
    from core.telemetry.simulated_device import UnknownProfileError

    try:
        runtime = Runtime.create(config_file=args.config, simulate=args.simulate)
    except UnknownProfileError as exc:
        _err(f"vrampilot soak: --simulate: {exc}")
        return 2
    try:
        runtime.config.catalog.get(settings.model)
    except UnknownModelError as exc:
        _err(f"vrampilot soak: --model: {exc}")
        await runtime.close()
        return 2
    label = (runtime.gpu_snapshots()[0].name if runtime.devices
             else "host (CPU engine)")
    runner = SoakRunner(runtime.chat, runtime.sampler, settings, device_label=label,
                        simulated=runtime.simulated)
    runtime.add_event_listener(runner.note)
    runtime.add_event_listener(lambda level, text: _err(f"[{level}] {text}"))
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
        loop.add_signal_handler(signal.SIGINT, runner.stop)
    progress = asyncio.ensure_future(_progress(runner))
    try:
        await loop.run_in_executor(None, ensure_demo_models)
        runtime.start()
        _err(f"[soak] {settings.model} on {label}: {settings.minutes:g} min, concurrency "
             f"{settings.concurrency}; Ctrl+C stops early and keeps the report")
        report = await runner.run()
    except SoakInputError as exc:
        _err(f"vrampilot soak: {exc}")
        return 2
    except EngineError as exc:
        _err(f"vrampilot soak: {exc}")
        return 1
    finally:
        progress.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await runtime.close()
    assert runner.recording is not None
    saved = save_run(report, runner.recording)
    png = render_png(saved.folder)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(describe(report))
    _err(f"[soak] saved {saved.folder}: report.json, samples.csv"
         + (", charts.png" if png else " (no charts.png: Qt could not render offscreen)"))
    return 0


async def _progress(runner: Any) -> None:
    """A line on stderr every few seconds: elapsed, tokens/s, temperature, power, throttling."""
    from core.soak.series import series_of

    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        recording = runner.recording
        if recording is None or recording.ended is not None:
            continue
        series = series_of(recording.copy())
        if not len(series):
            continue
        span = min(PROGRESS_EVERY_S, float(series.t_s[-1]))
        if span <= 0.5:
            continue
        recent = series.t_s > series.t_s[-1] - span
        rate = float(series.tokens[recent].sum()) / span
        _err(f"[soak] {series.t_s[-1]:6.1f} s  {rate:7.1f} tok/s  "
             f"{series.temperature_c[-1]:5.1f} C  {series.power_w[-1]:6.1f} W"
             + (f"  throttled: {series.throttle_reasons[-1]}"
                if series.throttle_reasons[-1] else ""))


def render_png(folder: Path) -> bool:
    """Draw charts.png with the GUI's charts in a separate offscreen Qt process (core stays
    Qt-free); False when Qt is not installed or cannot render."""
    if importlib.util.find_spec("PySide6") is None or importlib.util.find_spec("gui") is None:
        return False
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    try:
        done = subprocess.run([sys.executable, "-m", "gui.soak_png", str(folder)], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and (folder / "charts.png").is_file()
