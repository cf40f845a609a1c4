"""The load breakdown from vLLM's log: parsed from a real excerpt of the CPU build's log, and
phases that add up to the load whatever lines a vLLM version prints."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.engine.load_phases import (
    LOAD_PHASES,
    LoadMarks,
    breakdown,
    current_phase,
    parse_log,
    process_started_at,
)

SAMPLE = (Path(__file__).parent.parent / "data" / "vllm_cpu_startup.log").read_text()
CORE, WORKER = 14564, 14703


def _at(stamp: str) -> float:
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000


def test_the_cpu_builds_lines_are_found_with_their_reported_seconds() -> None:
    events = parse_log(SAMPLE)
    kinds = [(e.kind, e.pid) for e in events]
    assert ("core_started", CORE) in kinds
    assert ("first_line", WORKER) in kinds
    model_init = next(e for e in events if e.kind == "model_init")
    assert model_init.reported_s == pytest.approx(0.129079)
    init = next(e for e in events if e.kind == "init_engine")
    assert init.reported_s == pytest.approx(0.01)
    assert init.at == pytest.approx(_at("2026-11-28 19:47:01,069"))


def test_phases_add_up_to_the_load_and_follow_the_log() -> None:
    started = _at("2026-11-28 19:46:26,000")
    marks = LoadMarks(started=started, constructing=started + 2.0,
                      constructed=_at("2026-11-28 19:47:01,500"),
                      ended=_at("2026-11-28 19:47:01,600"),
                      core_created=started + 2.3, worker_created=_at("2026-11-28 19:46:44,500"),
                      core_pid=CORE, worker_pid=WORKER)
    phases = breakdown(marks, parse_log(SAMPLE))
    assert list(phases) == [p for p in LOAD_PHASES if p in phases]
    assert sum(phases.values()) == pytest.approx(marks.ended - marks.started)
    assert phases["prepare"] == pytest.approx(2.0)
    # fork/exec of both processes: 0.3 s, then the core's executor set-up until the worker.
    assert phases["spawn"] == pytest.approx(0.3 + (44.5 - 44.382), abs=1e-3)
    # Python start-up and imports: the core's until its first line, the worker's until its own.
    core_imports = _at("2026-11-28 19:46:44,382") - (started + 2.3)
    assert phases["imports"] == pytest.approx(core_imports + (60.034 - 44.5), abs=1e-3)
    assert phases["weights"] == pytest.approx(0.005, abs=1e-3)
    assert phases["kv_cache"] == pytest.approx(0.01, abs=1e-3)  # vLLM's own "took 0.01 s"
    assert phases["tokenizer"] == pytest.approx(0.1, abs=1e-3)
    assert "compile" not in phases  # eager on the CPU build: nothing compiled


def test_compilation_and_graph_capture_are_carved_out_of_the_init_step() -> None:
    log = "\n".join([
        "2026-01-01 10:00:05,000 EngineCore pid=7 INFO [vllm.v1.engine.core] Initializing a V1 "
        "LLM engine (v0.32.0) with config: ...",
        "2026-01-01 10:00:09,000 EngineCore pid=7 INFO [x] Model loading took 3.1 GiB memory "
        "and 3.500000 seconds",
        "2026-01-01 10:00:30,000 EngineCore pid=7 INFO [x] Graph capturing finished in 6 secs, "
        "took 0.40 GiB",
        "2026-01-01 10:00:31,000 EngineCore pid=7 INFO [x] init engine (profile, create kv "
        "cache, warmup model) took 21.00 s (compilation: 12.00 s)",
    ])
    t0 = _at("2026-01-01 10:00:00,000")
    marks = LoadMarks(t0, t0 + 1, t0 + 32, t0 + 32.5, core_created=t0 + 1.2, core_pid=7)
    phases = breakdown(marks, parse_log(log))
    assert phases["compile"] == pytest.approx(18.0)
    assert phases["kv_cache"] == pytest.approx(3.0)
    assert phases["worker_ready"] == pytest.approx(1.0)  # 10:00:09 to the init step's start
    assert sum(phases.values()) == pytest.approx(32.5)


def test_a_log_without_the_lines_still_accounts_for_every_second() -> None:
    t0 = 1_000_000.0
    marks = LoadMarks(t0, t0 + 1, t0 + 20, t0 + 21)
    phases = breakdown(marks, [])
    assert phases == {"prepare": 1.0, "handshake": 19.0, "tokenizer": 1.0}


def test_the_current_phase_follows_the_log() -> None:
    lines = SAMPLE.splitlines()
    assert current_phase(parse_log("")) == "imports"  # the engine process starts and imports
    assert current_phase(parse_log(lines[0])) == "imports"  # then its worker does
    weights = next(i for i, line in enumerate(lines) if "Loading weights took" in line)
    assert current_phase(parse_log("\n".join(lines[:weights]))) == "weights"
    assert current_phase(parse_log("\n".join(lines[:weights + 1]))) == "kv_cache"
    assert current_phase(parse_log(SAMPLE)) == "handshake"


def test_a_process_start_is_read_to_the_tick() -> None:
    import subprocess

    before = time.time()
    proc = subprocess.Popen(["sleep", "0.5"])
    try:
        started = process_started_at(proc.pid)
    finally:
        proc.wait()
    assert started is not None
    assert before - 0.05 <= started <= time.time() + 0.02
