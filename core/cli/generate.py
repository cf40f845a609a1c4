"""`vrampilot generate [--model NAME|auto] [--task-type T] [--max-tokens N] PROMPT`.

Goes through the router and the manager like the GUI does: the reply streams to stdout, the
routing decision, the switch phases and the timings go to stderr (so stdout can be piped).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from typing import Any

from core.engine.base import ChatMessage, EngineError, GenerationDelta, GenerationRequest


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common],
                       help="stream a reply through the router and the manager")
    p.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    p.add_argument("--model", default="auto", help="catalog id, or auto (the router picks)")
    p.add_argument("--task-type", default="unknown", help="router task type (default unknown)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--private", action="store_true",
                   help="never send this prompt to a remote endpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_tokens <= 0:
        print("vrampilot generate: --max-tokens must be positive", file=sys.stderr)
        return 2
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        print("vrampilot generate: the prompt is empty", file=sys.stderr)
        return 2
    return asyncio.run(_until_signalled(args, prompt))


async def _until_signalled(args: argparse.Namespace, prompt: str) -> int:
    """SIGINT and SIGTERM cancel the command, which then closes like the app does (the
    runtime's close: within its deadline, no engine process left); exit code 128 + signal."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:  # a second signal must not interrupt the close
            received.append(signum)
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await _generate(args, prompt)
    except asyncio.CancelledError:
        if not received:
            raise
        _err(f"\nvrampilot generate: stopped by {signal.Signals(received[0]).name}")
        return 128 + received[0]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _generate(args: argparse.Namespace, prompt: str) -> int:
    from core.engine.demo_model import ensure_demo_models
    from core.manager.events import SwitchEvent
    from core.models.catalog import UnknownModelError
    from core.runtime import Runtime

    runtime = Runtime.create(config_file=args.config, simulate=args.simulate)
    if args.model != "auto" and args.model not in runtime.config.catalog:
        try:
            runtime.config.catalog.get(args.model)
        except UnknownModelError as exc:
            _err(f"vrampilot generate: {exc}")
            await runtime.close()
            return 2

    def show(event: SwitchEvent) -> None:
        eta = f", ETA {event.eta_s:.1f} s" if event.eta_s is not None else ""
        _err(f"[switch] {event.phase.value:20s} {event.target} {event.elapsed_s:6.2f} s{eta}"
             + (f"  {event.message}" if event.message else ""))

    runtime.manager.subscribe(show)
    request = GenerationRequest(messages=(ChatMessage("user", prompt),),
                                max_tokens=args.max_tokens, temperature=args.temperature,
                                request_id=f"cli-{uuid.uuid4().hex[:12]}")
    started = time.perf_counter()
    last: GenerationDelta | None = None
    model: str | None = None
    in_thinking = False
    try:
        await asyncio.get_running_loop().run_in_executor(None, ensure_demo_models)
        stream = runtime.chat.generate(request, None if args.model == "auto" else args.model,
                                       args.task_type, args.private)
        async for delta in stream:
            if runtime.chat.last_decision is not None and last is None:
                _err(runtime.chat.last_decision.explain())
            if delta.thinking:
                if not in_thinking:
                    _err("[thinking]")
                    in_thinking = True
                sys.stderr.write(delta.thinking)
            if delta.text:
                sys.stdout.write(delta.text)
                sys.stdout.flush()
            last = delta
            model = runtime.manager.active_model
        sys.stdout.write("\n")
    except EngineError as exc:
        _err(f"vrampilot generate: {exc}")
        return 1
    finally:
        await runtime.close()
    total = time.perf_counter() - started
    if last is not None:
        ttft = f"{last.first_token_s * 1000:.0f} ms" if last.first_token_s is not None else "-"
        rate = f"{last.tokens_per_s:.1f} tok/s" if last.tokens_per_s is not None else "-"
        _err(f"[done] model {model or '-'}: {last.tokens} tokens, first token {ttft}, {rate}; "
             f"{total:.1f} s in all (switch included)")
    if model is not None and runtime.config.catalog.get(model).priority == "DEMO":
        _err("[note] demo models have random weights: their text is noise.")
    return 0
