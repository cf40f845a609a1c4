"""Where the seconds of a vLLM load go: its phases, read from vLLM's own log and our timings.

vLLM logs a line as each start-up step ends ("Initializing model took", "Loading weights took",
"init engine (profile, create kv cache, warmup model) took ... (compilation: ...)", "Graph
capturing finished in ..."), each stamped with the time and the process. Between those lines and
our own marks (the load began, vLLM's constructor was called and returned, the tokenizer was
ready) and the processes' start times, every second of a load belongs to exactly one phase, so
the phases add up to the load's duration. A line a vLLM version does not print merges its phase
into the next one; nothing is guessed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The phases of a load, in order (the switch history's load breakdown uses these names).
LOAD_PHASES = ("prepare", "spawn", "imports", "model_init", "weights", "worker_ready",
               "kv_cache", "compile", "handshake", "tokenizer")
LABELS = {
    "prepare": "preparing (engine arguments, our imports, the engine forkserver's)",
    "spawn": "starting the engine processes",
    "imports": "importing vLLM in the engine processes",
    "model_init": "building the model",
    "weights": "loading the weights",
    "worker_ready": "worker ready (its start-up after the weights)",
    "kv_cache": "memory profiling and KV-cache allocation",
    "compile": "compilation and graph capture",
    "handshake": "engine handshake",
    "tokenizer": "tokenizer",
}
# While a load runs: the phase that begins after each line (the worker's first line: the model).
_NEXT = {
    "core_started": "imports",  # the worker process starts and imports
    "worker_started": "model_init",
    "model_init": "weights",
    "weights": "kv_cache",
    "init_engine": "handshake",
}

# "2026-11-28 19:42:10,897 VllmWorker-0 pid=8327 INFO [vllm.x] message" (vllm_engine's format).
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\S+) pid=(\d+) \w+ "
                   r"\[[^\]]*\] (.*)$")
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("core_started", re.compile(r"Initializing a V1 LLM engine")),
    ("model_init", re.compile(r"Initializing model took ([\d.]+) s")),
    ("weights", re.compile(r"Loading weights took ([\d.]+) s")),
    ("weights", re.compile(r"Model loading took \S+ GiB memory and ([\d.]+) s")),
    ("graph_capture", re.compile(r"Graph capturing finished in ([\d.]+) secs")),
    ("init_engine", re.compile(r"init engine \(profile, create kv cache, warmup model\) took "
                               r"([\d.]+) s(?: \(compilation: ([\d.]+) s)?")),
)


@dataclass(frozen=True)
class LogEvent:
    """One vLLM log line that ends a start-up step."""

    kind: str
    at: float  # epoch seconds (the line's timestamp, millisecond resolution)
    pid: int
    process: str
    reported_s: float | None = None  # the duration vLLM itself reported
    compile_s: float | None = None  # init_engine only: its compilation share


@dataclass(frozen=True)
class LoadMarks:
    """Our own marks of one load (epoch seconds) and the engine processes' start times."""

    started: float  # load() was called
    constructing: float  # vLLM's constructor was called
    constructed: float  # it returned
    ended: float  # the tokenizer is ready: load() returns
    core_created: float | None = None  # the engine-core process's start time
    worker_created: float | None = None  # its worker process's (None: no separate worker)
    core_pid: int | None = None
    worker_pid: int | None = None


def process_started_at(pid: int) -> float | None:
    """When a process started (epoch seconds, 10 ms resolution), None if unknown.

    psutil's create_time adds the start tick to the boot time, which the kernel gives in whole
    seconds: up to a second off, more than the spawn it would time. The process's age against
    /proc/uptime (same clock as the start tick) is exact to a tick."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        now = time.time()
        start_ticks = int(fields[19])  # field 22 of stat; fields[0] is field 3
    except (OSError, ValueError, IndexError):
        return None
    return now - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def parse_log(text: str) -> list[LogEvent]:
    """The start-up events in a vLLM log excerpt, in order. Lines without a timestamp (the rest
    of a multi-line message) and every other line are skipped."""
    events: list[LogEvent] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stamp, millis, process, pid, message = m.groups()
        at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        if not any(e.pid == int(pid) for e in events):
            events.append(LogEvent("first_line", at, int(pid), process))
        for kind, pattern in _PATTERNS:
            found = pattern.search(message)
            if found:
                values = [float(v) for v in found.groups() if v is not None]
                events.append(LogEvent(kind, at, int(pid), process,
                                       values[0] if values else None,
                                       values[1] if len(values) > 1 else None))
                break
    return events


def current_phase(events: Iterable[LogEvent]) -> str:
    """The phase (LOAD_PHASES) vLLM's start-up is in, from the log lines seen so far, once its
    constructor runs: at first its engine process starts and imports."""
    phase = "imports"
    for e in events:
        if e.kind == "first_line" and e.process.startswith("VllmWorker"):
            phase = _NEXT["worker_started"]
        elif e.kind in _NEXT:
            phase = _NEXT[e.kind]
    return phase


def _first(events: list[LogEvent], kind: str, pid: int | None = None) -> LogEvent | None:
    return next((e for e in events if e.kind == kind and (pid is None or e.pid == pid)), None)


def breakdown(marks: LoadMarks, events: list[LogEvent]) -> dict[str, float]:
    """Seconds per phase (LOAD_PHASES order; a phase that did not happen is left out). They add
    up to marks.ended - marks.started."""
    core_first = _first(events, "first_line", marks.core_pid) if marks.core_pid else None
    worker_first = (_first(events, "first_line", marks.worker_pid) if marks.worker_pid
                    else None)
    model_init = _first(events, "model_init")
    weights = _first(events, "weights")
    init_engine = _first(events, "init_engine")
    # (phase that ends at this boundary, boundary). A missing boundary gives its time to the
    # next phase that has one; boundaries out of order are clamped, never negative.
    bounds: list[tuple[str, float | None]] = [
        ("prepare", marks.constructing),
        ("spawn", marks.core_created),
        ("imports", core_first.at if core_first else None),
        ("spawn", marks.worker_created),
        ("imports", worker_first.at if worker_first else None),
        ("model_init", model_init.at if model_init else None),
        ("weights", weights.at if weights else None),
        # vLLM's "init engine" step (profiling, KV cache, its warm-up) began `reported_s` before
        # its line; what lies between the weights and that start is the worker finishing.
        ("worker_ready", init_engine.at - (init_engine.reported_s or 0.0) if init_engine
         else None),
        ("kv_cache", init_engine.at if init_engine else None),
        ("handshake", marks.constructed),
        ("tokenizer", marks.ended),
    ]
    out: dict[str, float] = {}
    last = marks.started
    for phase, at in bounds:
        if at is None:
            continue
        at = min(max(at, last), marks.ended)
        out[phase] = out.get(phase, 0.0) + (at - last)
        last = at
    # vLLM reports compilation and graph capture inside its "init engine" step: carved out.
    compiled = (init_engine.compile_s or 0.0) if init_engine else 0.0
    capture = _first(events, "graph_capture")
    compiled += capture.reported_s or 0.0 if capture else 0.0
    if compiled > 0 and "kv_cache" in out:
        compiled = min(compiled, out["kv_cache"])
        out["kv_cache"] -= compiled
        out["compile"] = compiled
    return {p: out[p] for p in LOAD_PHASES if p in out}


def describe(phases: Mapping[str, float]) -> str:
    """"spawn 0.1 s, imports 15.6 s, ..." for one line of text."""
    return ", ".join(f"{p.replace('_', ' ')} {s:.1f} s" for p, s in phases.items())
