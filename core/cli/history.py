"""`vrampilot history [--json]`: recent switches, per-pair durations and measured tokens/s."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("history", parents=[common], help="switch history and throughput")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=_positive_int, default=20,
                   help="recent switches to show (default 20)")
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from core.history_store import HistoryStore

    store = HistoryStore()
    try:
        recent = store.recent(args.limit)
        pairs = store.pair_stats()
        throughput = store.throughput()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"database": str(store.path),
                          "recent": [asdict(r) | {"phases": dict(r.phases)} for r in recent],
                          "pairs": [asdict(p) for p in pairs],
                          "throughput": [asdict(t) for t in throughput]}, indent=2))
        return 0
    print(f"Switch history ({store.path})")
    if not recent:
        print("  no switches recorded yet")
    for r in recent:
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in r.phases.items())
        line = (f"  #{r.id} {r.from_model or '(none)'} -> {r.to_model} [{r.reason}] {r.outcome} "
                f"{r.total_s:.2f}s")
        print(line + (f" ({phases})" if phases else ""))
        if r.error:
            print(f"      error: {r.error}")
    if pairs:
        print("Per pair (successful switches):")
        for p in pairs:
            print(f"  {p.from_model or '(none)'} -> {p.to_model}: n={p.count} "
                  f"mean {p.mean_s:.2f}s p95 {p.p95_s:.2f}s")
    if throughput:
        print("Measured throughput:")
        for t in throughput:
            rate = "n/a" if t.mean_tokens_per_s is None else f"{t.mean_tokens_per_s:.1f} tok/s"
            print(f"  {t.model}: {rate} over {t.generations} generations")
    return 0
