"""`vrampilot route --task-type T [--file F | --text S] [--private] [--json]`: which model, why."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.cli.estimate import load_config_and_state, settings_for
from core.models.estimator import Estimator
from core.router import Router


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
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


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
    answer = ask_owner(args, lambda owner: owner.post(
        "/route", {"text": text, "task_type": args.task_type, "private": args.private}))
    if answer is not None:
        decision, explanation = answer["decision"], answer["explanation"]
    else:
        loaded = load_config_and_state(args, "route")
        if isinstance(loaded, int):
            return loaded
        config, state = loaded
        estimator = Estimator(config.catalog, settings_for(state))
        routed = Router(config.router, config.catalog, estimator=estimator).route(
            text, args.task_type, state, private=args.private)
        decision, explanation = routed.as_dict(), routed.explain()
    if args.json:
        print(json.dumps(decision, indent=1))
    else:
        print(explanation)
    return 0
