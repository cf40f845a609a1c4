"""The record's tracked routing figures, from the routing log and the uptime states: how often
the router was right per task type (by the users' verdicts), the confusion between the model that
answered and the one wanted, the task distribution by tier against the record's estimate, and
model uptime against its 95 % target. One report for `vrampilot history --routing` and the
History tab."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from core.history_store import HistoryStore
from core.routing_log import TIER_ESTIMATE, TIERS, RoutedRequest, RoutingLog
from core.uptime import Uptime, uptime


@dataclass(frozen=True)
class TaskAccuracy:
    """One task type: requests logged, verdicts given, and the share the router got right."""

    task_type: str
    logged: int
    rated: int
    right: int

    @property
    def accuracy(self) -> float | None:
        return self.right / self.rated if self.rated else None


@dataclass(frozen=True)
class TierShare:
    tier: str
    count: int
    share: float | None
    estimate: float


@dataclass(frozen=True)
class RoutingReport:
    database: str
    requests: int
    by_task: list[TaskAccuracy]
    confusion: dict[tuple[str, str], int]  # (the model that answered, the one wanted) -> count
    tiers: list[TierShare]
    uptime: Uptime

    @property
    def rated(self) -> int:
        return sum(t.rated for t in self.by_task)

    @property
    def accuracy(self) -> float | None:
        rated = self.rated
        return sum(t.right for t in self.by_task) / rated if rated else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "requests": self.requests, "rated": self.rated,
            "accuracy": self.accuracy,
            "by_task_type": [{"task_type": t.task_type, "logged": t.logged, "rated": t.rated,
                              "right": t.right, "accuracy": t.accuracy} for t in self.by_task],
            "confusion": [{"answered": a, "wanted": w, "count": n}
                          for (a, w), n in sorted(self.confusion.items())],
            "tiers": [{"tier": t.tier, "count": t.count, "share": t.share,
                       "estimate": t.estimate} for t in self.tiers],
            "uptime": self.uptime.as_dict(),
        }


def build_report(store: HistoryStore, now: float | None = None,
                 live_session: str | None = None) -> RoutingReport:
    """The report over everything in the database (see the module docstring)."""
    requests = RoutingLog(store).all()
    return summarize(requests, uptime(store, now or time.time(), live_session), str(store.path))


def summarize(requests: list[RoutedRequest], up: Uptime, database: str = "") -> RoutingReport:
    logged: Counter[str] = Counter()
    rated: Counter[str] = Counter()
    right: Counter[str] = Counter()
    confusion: Counter[tuple[str, str]] = Counter()
    tiers: Counter[str] = Counter()
    for r in requests:
        logged[r.task_type] += 1
        tiers[r.tier] += 1
        if r.verdict is None:
            continue
        rated[r.task_type] += 1
        right[r.task_type] += r.verdict == "good"
        confusion[(r.judged_model or "(none)", r.wanted_model or "(none)")] += 1
    total = len(requests)
    return RoutingReport(
        database, total,
        [TaskAccuracy(t, logged[t], rated[t], right[t]) for t in sorted(logged)],
        dict(confusion),
        [TierShare(t, tiers[t], tiers[t] / total if total else None, TIER_ESTIMATE[t])
         for t in TIERS],
        up)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


def format_report(report: dict[str, Any]) -> str:
    """The text of `vrampilot history --routing` (from the report's as_dict())."""
    lines = [f"Routing feedback ({report['database']})",
             f"  {report['requests']} routed requests logged, {report['rated']} rated; "
             f"router right: {_pct(report['accuracy'])}"]
    if report["by_task_type"]:
        lines.append("Per task type (right / rated, logged):")
        for t in report["by_task_type"]:
            lines.append(f"  {t['task_type']:<22} {_pct(t['accuracy']):>5}  "
                         f"{t['right']}/{t['rated']}, {t['logged']} logged")
    if report["confusion"]:
        lines.append("Answered -> wanted (rated requests):")
        for c in report["confusion"]:
            mark = "" if c["answered"] == c["wanted"] else "  (wrong model)"
            lines.append(f"  {c['answered']} -> {c['wanted']}: {c['count']}{mark}")
    lines.append("Task distribution by tier (record's estimate):")
    for t in report["tiers"]:
        lines.append(f"  {t['tier']:<9} {_pct(t['share']):>5} ({t['count']})  "
                     f"estimate {_pct(t['estimate'])}")
    up = report["uptime"]
    verdict = {True: "meets", False: "below", None: "no data for"}[up["meets_target"]]
    lines.append(f"Model uptime: {_pct(up['share'])} ({verdict} the {_pct(up['target'])} "
                 f"target) over {up['counted_s'] / 3600:.2f} h in {up['sessions']} sessions")
    seconds = up["seconds"]
    lines.append("  " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    for model, s in up["ready_by_model"].items():
        lines.append(f"  ready on {model}: {s:.0f} s")
    return "\n".join(lines)
