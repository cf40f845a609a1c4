"""One check's result, and the report: the verdict line first, then a table or JSON."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # the app runs, something is missing or degraded
    FAIL = "fail"  # the app cannot run until this is fixed
    SKIP = "skip"  # not configured, or not checked (--quick)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    found: str
    fix: str | None = None  # what to do, when status is WARN or FAIL


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def can_run(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.FAIL)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is Status.WARN)

    def headline(self) -> str:
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            return f"vrampilot doctor: the app cannot run ({names}: see the fixes below)"
        warned = len(self.warnings)
        return "vrampilot doctor: the app can run" + \
            (f" ({warned} warning{'s' if warned != 1 else ''})" if warned else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "can_run": self.can_run,
            "verdict": self.headline(),
            "checks": [{"name": c.name, "status": str(c.status), "found": c.found, "fix": c.fix}
                       for c in self.checks],
        }

    def format_table(self, width: int = 100) -> str:
        name_w = max(len(c.name) for c in self.checks)
        indent = " " * (6 + name_w + 2)
        lines = [self.headline(), ""]
        for c in self.checks:
            head = f"{c.status:<6}{c.name:<{name_w}}  "
            lines.append(_fill(c.found, width, head, indent))
            if c.fix and c.status in (Status.WARN, Status.FAIL):
                lines.append(_fill(c.fix, width, indent + "fix: ", indent + "     "))
        return "\n".join(lines)


def _fill(text: str, width: int, first: str, rest: str) -> str:
    # Paths and package names stay whole, even past the width.
    return textwrap.fill(text, width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)
