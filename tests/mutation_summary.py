"""Summarise `mutmut results --all true`: killed / survived / timeout per module of the safety core.

Run by `make mutate` after `mutmut run`; prints a markdown table (for the README's testing
section) and the surviving mutants by name (`mutmut show NAME` prints a mutant's diff).
The history predictions (predicted_duration, predicted_phase(s), trend) get their own row.

Survivors that cannot change behaviour are listed, with why, in tests/data/mutation_equivalent.txt
(each with the line the mutant writes, so an entry that no longer names the same mutant, after the
code moved, is reported as stale instead of hiding a new survivor). They are counted apart from the
unexplained ones; `killed %` counts only what the tests kill.
`python -m tests.mutation_summary --draft` prints the unexplained survivors as entries to review.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

PREDICTIONS = ("predicted_duration", "predicted_phase", "predicted_phases", "trend")
# A mutant that makes the tests hang is caught too, and so is one mypy rejects (`make lint`
# fails on it before any test runs: pyproject.toml's type_check_command).
KILLED = {"killed", "timeout", "caught by type check"}
EQUIVALENT_FILE = Path(__file__).parent / "data" / "mutation_equivalent.txt"


@dataclass(frozen=True)
class Equivalent:
    name: str
    line: str  # the mutated line, stripped, as the diff's "+" line has it
    reason: str


def module_of(name: str) -> str:
    module, _, function = name.rpartition(".")
    if module == "core.history_store" and any(f"ǁ{p}__" in function for p in PREDICTIONS):
        return "core.history_store (predictions)"
    return module


def load_equivalents(path: Path = EQUIVALENT_FILE) -> dict[str, Equivalent]:
    """`## reason` starts a group; each line under it is `mutant-name  mutated line`."""
    out: dict[str, Equivalent] = {}
    reason = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("## "):
            reason = line[3:].strip()
        elif line and not line.startswith("#"):
            name, _, mutated = line.partition("  ")
            if not reason or not mutated.strip():
                raise ValueError(f"{path}: {raw!r} needs a `## reason` above it and the mutated "
                                 "line after two spaces")
            out[name] = Equivalent(name, mutated.strip(), reason)
    return out


def mutated_lines(name: str) -> list[str]:
    """The "+" lines of a mutant's diff (mutmut's own code, in-process: a subprocess per
    survivor would take minutes)."""
    from mutmut.__main__ import find_mutant, get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=find_mutant(name).path)
    return [d[1:].strip() for d in diff.splitlines()
            if d.startswith("+") and not d.startswith("+++")]


def main(argv: list[str]) -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    equivalents = load_equivalents()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    unexplained: dict[str, list[str]] = defaultdict(list)
    stale: list[str] = []
    draft: list[str] = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or status == "not checked":  # outside this run (ARGS narrowed it)
            continue
        module = module_of(name)
        if status != "survived":
            counts[module][status] += 1
            if status not in KILLED:
                unexplained[module].append(f"{name} ({status})")
            continue
        listed = equivalents.get(name)
        lines = mutated_lines(name)
        if listed is not None and listed.line in lines:
            counts[module]["equivalent"] += 1
            continue
        counts[module]["survived"] += 1
        unexplained[module].append(f"{name} (survived)")
        if listed is not None:
            stale.append(f"{name}: listed as `{listed.line}`, now writes {lines}")
        draft.append(f"{name}  {lines[0] if lines else '?'}")
    if not counts:
        print("no mutation results: run `make mutate` first", file=sys.stderr)
        return 1
    if "--draft" in argv:
        print("\n".join(draft))
        return 0
    print("| module | mutants | mypy | killed | timeout | equivalent | survived | other | "
          "killed % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    total: Counter[str] = Counter()
    for module in sorted(counts):
        c = counts[module]
        total += c
        print(_row(module, c))
    print(_row("**all**", total))
    print("\nmypy: rejected by the type checker (never run); equivalent: listed in "
          "tests/data/mutation_equivalent.txt with why; "
          "killed % = (mypy + killed + timeout) / (mutants - skipped - equivalent)")
    for module in sorted(unexplained):
        print(f"\nsurvivors in {module}:")
        for name in unexplained[module]:
            print(f"  {name}")
    if stale:
        print("\nstale entries (the listed mutant now writes another line):")
        for entry in stale:
            print(f"  {entry}")
    return 0


def _row(label: str, c: Counter[str]) -> str:
    n = sum(c.values())
    typed = c["caught by type check"]
    other = n - typed - c["killed"] - c["survived"] - c["timeout"] - c["equivalent"]
    caught = typed + c["killed"] + c["timeout"]
    tested = n - c["skipped"] - c["equivalent"]  # the usual mutation score: no test can kill those
    share = f"{100 * caught / tested:.1f}" if tested else "-"
    return (f"| {label} | {n} | {typed} | {c['killed']} | {c['timeout']} | "
            f"{c['equivalent']} | {c['survived']} | {other} | {share} |")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
