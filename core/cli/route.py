"""`vrampilot route --task-type T [--file F | --text S] [--private] [--json]`: which model, why.

`--free-gib F` and `--temperature C` decide as if the device were in that state (what-if); the
explanation and the JSON say which values were assumed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from core.cli.estimate import load_config_and_state, settings_for
from core.models.estimator import Estimator, fmt_bytes
from core.router import Router
from core.units import GIB


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "route", parents=[common],
        help="route a task to a model and explain the decision",
        description="Scores the task's complexity (task type, length, content signals) and picks "
                    "a model for the device's state (temperature, free memory); prints the "
                    "decision with every factor and every rejected candidate.")
    parser.add_argument("--task-type", required=True, metavar="T",
                        help="e.g. simple_extraction, salary_analysis, complex_reasoning "
                             "(an unknown type scores the default 0.4)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="F", help="read the task's text from F ('-': stdin)")
    source.add_argument("--text", metavar="S", help="the task's text")
    parser.add_argument("--private", action="store_true",
                        help="the task must not leave this machine (no remote endpoint)")
    parser.add_argument("--free-gib", metavar="F",
                        help="decide as if F GiB of device memory were free (what-if)")
    parser.add_argument("--temperature", metavar="C",
                        help="decide as if the GPU were at C degrees Celsius (what-if)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def _assumed_number(option: str, text: str | None, unit: str) -> float | None:
    """The option's value as a finite number >= 0 (None: not given); ValueError saying why not."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{option} expects {unit} as a number of at least 0, got {text!r}")
    return value


def _read_text(args: argparse.Namespace) -> str | None:
    if args.text is not None:
        return str(args.text)
    if args.file is None:
        return ""
    if args.file == "-":
        return sys.stdin.read()
    try:
        return Path(args.file).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"vrampilot route: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from core.server.control_client import ask_owner

    text = _read_text(args)
    if text is None:
        return 2
    try:
        free_gib = _assumed_number("--free-gib", args.free_gib, "GiB")
        temperature = _assumed_number("--temperature", args.temperature, "degrees Celsius")
    except ValueError as exc:
        print(f"vrampilot route: {exc}", file=sys.stderr)
        return 2
    what_if = free_gib is not None or temperature is not None
    # A what-if question is about an assumed device, not the owner's: answer it here.
    answer = None if what_if else ask_owner(args, lambda owner: owner.post(
        "/route", {"text": text, "task_type": args.task_type, "private": args.private}))
    if answer is not None:
        decision, explanation = answer["decision"], answer["explanation"]
    else:
        loaded = load_config_and_state(args, "route")
        if isinstance(loaded, int):
            return loaded
        config, state = loaded
        if free_gib is not None and free_gib * GIB > state.total_bytes:
            print(f"vrampilot route: --free-gib {free_gib:g} is more than the device's "
                  f"{fmt_bytes(state.total_bytes)} in all ({state.label})", file=sys.stderr)
            return 2
        state = state.assume(None if free_gib is None else int(free_gib * GIB), temperature)
        estimator = Estimator(config.catalog, settings_for(state))
        routed = Router(config.router, config.catalog, estimator=estimator).route(
            text, args.task_type, state, private=args.private)
        decision, explanation = routed.as_dict(), routed.explain()
    if args.json:
        print(json.dumps(decision, indent=1))
    else:
        print(explanation)
    return 0
