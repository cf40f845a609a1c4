"""`vrampilot generate [--model NAME|auto] [--task-type T] [--max-tokens N] [--system TEXT]
[--seed N] [--top-p P] [--think|--no-think] PROMPT`.

Goes through the router and the manager like the GUI does: the reply streams to stdout, the
routing decision, the switch phases and the timings go to stderr (so stdout can be piped).
When vrampilot already runs (the app, or another `generate`), the reply comes from that owner's
engine over its control socket; otherwise this command runs the engine and is the owner.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.engine.demo_model import DEMO_NOTICE

if TYPE_CHECKING:
    from core.server.control_client import ControlClient
    from core.server.instance_lock import InstanceLock

# A headless owner that finished its own reply still serves replies other commands asked it for.
ATTACHED_REPLY_GRACE_S = 600


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common],
                       help="stream a reply through the router and the manager")
    p.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    p.add_argument("--model", default="auto", help="catalog id, or auto (the router picks)")
    p.add_argument("--task-type", default="unknown", help="router task type (default unknown)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None,
                   help="same seed, prompt and model: the same reply")
    p.add_argument("--system", default="", help="a system prompt")
    p.add_argument("--think", action=argparse.BooleanOptionalAction, default=None,
                   help="thinking on/off for Qwen3 hybrids (default: the catalog's mode)")
    p.add_argument("--private", action="store_true",
                   help="never send this prompt to a remote endpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_tokens <= 0:
        print("vrampilot generate: --max-tokens must be positive", file=sys.stderr)
        return 2
    if not 0.0 <= args.temperature <= 2.0:  # the local API's bound; checked before any load
        print(f"vrampilot generate: --temperature must be between 0 and 2, got {args.temperature}",
              file=sys.stderr)
        return 2
    if not 0.0 < args.top_p <= 1.0:
        print(f"vrampilot generate: --top-p must be in (0, 1], not {args.top_p}",
              file=sys.stderr)
        return 2
    if args.seed is not None and args.seed < 0:
        print(f"vrampilot generate: --seed must be 0 or more, not {args.seed}", file=sys.stderr)
        return 2
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        print("vrampilot generate: the prompt is empty", file=sys.stderr)
        return 2
    from core.server.control_client import OwnerUnreachable, attach_or_own
    from core.server.instance_lock import InstanceLock

    # One engine per user: ask the running owner, or become the owner while this runs.
    lock = InstanceLock()
    try:
        owner = attach_or_own(lock, "generate")
    except OwnerUnreachable as exc:
        _err(f"vrampilot generate: {exc}")
        return 1
    if owner is not None:
        with owner:
            return _generate_attached(args, prompt, owner)
    try:
        return asyncio.run(_until_signalled(_generate_here(args, prompt, lock)))
    finally:
        lock.release()


async def _until_signalled(work: Coroutine[Any, Any, int]) -> int:
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
        return await work
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


def _config_path(args: argparse.Namespace) -> str | None:
    return str(Path(args.config).resolve()) if args.config else None


class _ReplyPrinter:
    """Shows reply events (core.chat_stream) as this command always has: the reply on stdout,
    the decision, switch phases, thinking and timings on stderr."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.in_thinking = False

    def show(self, event: dict[str, Any]) -> int | None:
        """Print one event; returns the exit code when the event ends the reply."""
        kind = event["type"]
        if kind == "switch" and event["phase"] == "settled":
            pass  # the end of a switch; its terminal phase was printed
        elif kind == "switch":
            eta = f", ETA {event['eta_s']:.1f} s" if event["eta_s"] is not None else ""
            _err(f"[switch] {event['phase']:20s} {event['target']} {event['elapsed_s']:6.2f} s"
                 f"{eta}" + (f"  {event['message']}" if event["message"] else ""))
        elif kind == "decision":
            _err(event["explanation"])
        elif kind == "delta":
            if event["thinking"]:
                if not self.in_thinking:
                    _err("[thinking]")
                    self.in_thinking = True
                sys.stderr.write(event["thinking"])
            if event["text"]:
                sys.stdout.write(event["text"])
                sys.stdout.flush()
        elif kind == "done":
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._done(event)
            return 0
        elif kind == "error":
            _err(f"vrampilot generate: {event['message']}")
            return int(event["exit_code"])
        return None

    def _done(self, event: dict[str, Any]) -> None:
        if event["model"] is None:
            return
        total = time.perf_counter() - self.started
        first, rate = event["first_token_s"], event["tokens_per_s"]
        ttft = f"{first * 1000:.0f} ms" if first is not None else "-"
        speed = f"{rate:.1f} tok/s" if rate is not None else "-"
        _err(f"[done] model {event['model']}: {event['tokens']} tokens, first token {ttft}, "
             f"{speed}; {total:.1f} s in all (switch included)")
        if event["demo"]:
            _err(f"[note] {DEMO_NOTICE}")


def _generate_attached(args: argparse.Namespace, prompt: str, owner: ControlClient) -> int:
    """The running owner generates (switching in its manager, shown in its window)."""
    from core.server.control_client import ControlError, OwnerUnreachable

    who = "the vrampilot app" if owner.owner["kind"] == "app" else (
        f"`vrampilot {owner.owner['kind']}`")
    _err(f"[owner] {who} (pid {owner.pid}) runs the model: this reply goes through it")
    if (args.simulate and args.simulate != owner.owner["simulate"]) or (
            args.config and _config_path(args) != owner.owner["config"]):
        _err("[owner] --simulate/--config are ignored: the running owner's set-up decides")
    printer = _ReplyPrinter()
    body = {"prompt": prompt, "model": args.model, "task_type": args.task_type,
            "max_tokens": args.max_tokens, "temperature": args.temperature,
            "private": args.private, "system": args.system, "top_p": args.top_p,
            "seed": args.seed, "thinking": args.think}
    try:
        for event in owner.stream_events("/generate", body):
            code = printer.show(event)
            if code is not None:
                return code
    except ControlError as exc:
        _err(f"vrampilot generate: {exc}")
        return 2 if 400 <= exc.status < 500 else 1
    except OwnerUnreachable as exc:
        _err(f"vrampilot generate: {exc}")
        return 1
    _err("vrampilot generate: the owner ended the reply without finishing it")
    return 1


async def _generate_here(args: argparse.Namespace, prompt: str, lock: InstanceLock) -> int:
    """No owner runs: this command runs the engine, and serves the control socket meanwhile so
    other commands (and a launched app) attach to it instead of starting a second engine."""
    from core.chat_stream import prompt_request, reply_events
    from core.engine.processes import reap_orphan_engines
    from core.runtime import Runtime
    from core.server.control_routes import Owner
    from core.server.control_server import ControlServer

    runtime = Runtime.create(config_file=args.config, simulate=args.simulate)
    control = ControlServer(runtime, lock, Owner("generate", args.simulate, _config_path(args)),
                            graceful_s=ATTACHED_REPLY_GRACE_S)
    try:
        await control.start()
    except Exception as exc:  # noqa: BLE001 - the reply works without it; said once
        _err(f"[owner] cannot serve the control socket ({exc}); other commands wait for this one")
    request = prompt_request(prompt, f"cli-{uuid.uuid4().hex[:12]}", system=args.system,
                             max_tokens=args.max_tokens, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed, thinking=args.think)
    printer = _ReplyPrinter()
    code = 1
    try:
        # Engines a killed owner left behind hold memory: end them before loading.
        await asyncio.get_running_loop().run_in_executor(None, reap_orphan_engines)
        async for event in reply_events(runtime.chat, request, args.model, args.task_type,
                                        args.private):
            ended = printer.show(event)
            if ended is not None:
                code = ended
    finally:
        await control.close()  # replies of attached commands finish first
        await runtime.close()
    return code
