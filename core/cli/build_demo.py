"""`vrampilot build-demo`: build the tiny random Qwen3 used when no real model is available."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the build-demo subcommand to the CLI's subparsers."""
    parser = sub.add_parser(
        "build-demo", parents=[common],
        help="build the tiny demo models (random weights, no download)",
        description="Build a tiny randomly initialised Qwen3 model. Without --path, build the "
                    "demo models (demo-small, demo-tiny-a, demo-tiny-b) in the models dir if "
                    "missing.")
    parser.add_argument("--path", type=Path, metavar="DIR",
                        help="build one model into DIR (replacing what is there)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed for --path (default 0)")
    parser.add_argument("--name", default="demo-tiny", help="name recorded with --path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.engine.demo_model import build_demo_model, ensure_demo_models

    try:
        if args.path is not None:
            built = [build_demo_model(args.path, seed=args.seed, name=args.name)]
        else:
            built = ensure_demo_models()
    except OSError as exc:
        where = args.path if args.path is not None else (exc.filename or "the models directory")
        print(f"vrampilot build-demo: cannot build a model in {where} ({exc.strerror or exc})",
              file=sys.stderr)
        return 2
    for path in built:
        print(path)
    return 0
