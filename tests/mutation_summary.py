"""Summarise `mutmut results --all true`: killed / survived / timeout per module of the safety core.

Run by `make mutate` after `mutmut run`; prints a markdown table (for the README's testing
section) and the surviving mutants by name (`mutmut show NAME` prints a mutant's diff).
The history predictions (predicted_duration, predicted_phase(s), trend) get their own row.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

PREDICTIONS = ("predicted_duration", "predicted_phase", "predicted_phases", "trend")
KILLED = {"killed", "timeout"}  # a mutant that makes the tests hang is caught too


def module_of(name: str) -> str:
    module, _, function = name.rpartition(".")
    if module == "core.history_store" and any(f"ǁ{p}__" in function for p in PREDICTIONS):
        return "core.history_store (predictions)"
    return module


def main() -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or status == "not checked":  # outside this run (ARGS narrowed it)
            continue
        counts[module_of(name)][status] += 1
        if status not in KILLED:
            survivors[module_of(name)].append(f"{name} ({status})")
    if not counts:
        print("no mutation results: run `make mutate` first", file=sys.stderr)
        return 1
    print("| module | mutants | killed | survived | timeout | other | killed % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    total: Counter[str] = Counter()
    for module in sorted(counts):
        c = counts[module]
        total += c
        print(_row(module, c))
    print(_row("**all**", total))
    for module in sorted(survivors):
        print(f"\nsurvivors in {module}:")
        for name in survivors[module]:
            print(f"  {name}")
    return 0


def _row(label: str, c: Counter[str]) -> str:
    n = sum(c.values())
    other = n - c["killed"] - c["survived"] - c["timeout"]
    caught = c["killed"] + c["timeout"]
    tested = n - c["skipped"]
    share = f"{100 * caught / tested:.1f}" if tested else "-"
    return (f"| {label} | {n} | {c['killed']} | {c['survived']} | {c['timeout']} | {other} | "
            f"{share} |")


if __name__ == "__main__":
    raise SystemExit(main())
