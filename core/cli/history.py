"""`vrampilot history [--json]`: recent switches, per-pair durations and measured tokens/s.
`vrampilot history --routing [--json]`: the routing feedback, task tiers and model uptime."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.history_store import HistoryStore


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("history", parents=[common], help="switch history and throughput")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=_positive_int, default=20,
                   help="recent switches to show (default 20)")
    p.add_argument("--routing", action="store_true",
                   help="how often the router was right (by your feedback), the task tiers "
                        "against the record's estimate, and model uptime")
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
    from core.server.control_client import ask_owner

    if args.routing:
        return _routing(args)
    report = ask_owner(args, lambda owner: owner.get("/history", params={"limit": args.limit}))
    if report is None:
        store = HistoryStore()
        try:
            report = history_report(store, args.limit)
        finally:
            store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_history(report))
    return 0


def _routing(args: argparse.Namespace) -> int:
    """Read from the database itself (SQLite WAL lets a running app keep writing meanwhile)."""
    from core.history_store import HistoryStore
    from core.routing_report import build_report, format_report

    store = HistoryStore()
    try:
        report = build_report(store).as_dict()
    finally:
        store.close()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def history_report(store: HistoryStore, limit: int) -> dict[str, Any]:
    """Recent switches, per-pair durations and throughput, as JSON (`history --json`)."""
    return {"database": str(store.path),
            "recent": [asdict(r) | {"phases": dict(r.phases), "reason_label": r.reason_label}
                       for r in store.recent(limit)],
            "pairs": [asdict(p) for p in store.pair_stats()],
            "throughput": [asdict(t) for t in store.throughput()]}


def format_history(report: dict[str, Any]) -> str:
    """The text view of a history report."""
    lines = [f"Switch history ({report['database']})"]
    if not report["recent"]:
        lines.append("  no switches recorded yet")
    for r in report["recent"]:
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in r["phases"].items())
        label = r.get("reason_label", r["reason"])
        line = (f"  #{r['id']} {r['from_model'] or '(none)'} -> {r['to_model']} [{label}] "
                f"{r['outcome']} {r['total_s']:.2f}s")
        lines.append(line + (f" ({phases})" if phases else ""))
        if r.get("load_phases"):
            start = f" ({r['engine_start'].replace('_', ' ')})" if r.get("engine_start") else ""
            lines.append(f"      load{start}: " + ", ".join(
                f"{k} {v:.2f}s" for k, v in r["load_phases"].items()))
        if r["error"]:
            lines.append(f"      error: {r['error']}")
    if report["pairs"]:
        lines.append("Per pair (successful switches):")
        for p in report["pairs"]:
            lines.append(f"  {p['from_model'] or '(none)'} -> {p['to_model']}: n={p['count']} "
                         f"mean {p['mean_s']:.2f}s p95 {p['p95_s']:.2f}s")
    if report["throughput"]:
        lines.append("Measured throughput:")
        for t in report["throughput"]:
            rate = ("n/a" if t["mean_tokens_per_s"] is None
                    else f"{t['mean_tokens_per_s']:.1f} tok/s")
            lines.append(f"  {t['model']}: {rate} over {t['generations']} generations")
    return "\n".join(lines)
