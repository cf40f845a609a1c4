"""Engine process records and orphan reaping, with real child processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.engine.processes import (
    EngineProcessRegistry,
    ProcessRecord,
    alive,
    end_processes,
    new_engine_processes,
    reap_orphan_engines,
)

# The stand-ins below carry an engine's name: exempt from the conftest's no-vLLM guard.
pytestmark = pytest.mark.engine_stand_ins

# setproctitle is a vLLM dependency; vLLM renames its processes the same way.
ENGINE_LIKE = ("import setproctitle, time; setproctitle.setproctitle('VLLM::EngineCore'); "
               "time.sleep(60)")


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def start(procs: list[subprocess.Popen[bytes]], code: str) -> psutil.Process:
    p = subprocess.Popen([sys.executable, "-c", code])
    procs.append(p)
    proc = psutil.Process(p.pid)
    for _ in range(200):  # wait for the title change: bounded, by polling the process
        if code is not ENGINE_LIKE or "VLLM" in proc.name():
            break
        psutil.wait_procs([proc], timeout=0.02)
    return proc


def test_new_engine_processes_and_end(spawn: list[subprocess.Popen[bytes]]) -> None:
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    proc = start(spawn, "import time; time.sleep(60)")
    assert [p.pid for p in new_engine_processes(before)] == [proc.pid]
    assert end_processes([proc], timeout_s=5) == []
    spawn[0].wait(5)
    assert not alive(proc)


def test_records_survive_and_orphans_are_reaped(tmp_path: Path,
                                                spawn: list[subprocess.Popen[bytes]]) -> None:
    registry = EngineProcessRegistry(tmp_path / "pids.json")
    engine = start(spawn, ENGINE_LIKE)
    bystander = start(spawn, "import time; time.sleep(60)")  # not engine-like: left alone
    registry.add([engine])
    # Our own live engines are kept.
    assert registry.reap_orphans() == []
    assert [r.pid for r in registry.records()] == [engine.pid]
    # Pretend the parent was a crashed app: a parent pid/start time that no longer exists.
    dead_parent = [ProcessRecord(r.pid, r.create_time, r.parent_pid, r.parent_create_time - 100)
                   for r in registry.records()]
    dead_parent.append(ProcessRecord(bystander.pid, bystander.create_time(), 1, 0.0))
    dead_parent.append(ProcessRecord(999_999, 1.0, 1, 0.0))  # long gone
    registry._write(dead_parent)
    assert reap_orphan_engines(registry) == [engine.pid]
    spawn[0].wait(5)
    assert not alive(engine)
    assert alive(bystander)
    assert registry.records() == []


def test_reused_pid_is_not_killed(tmp_path: Path, spawn: list[subprocess.Popen[bytes]]) -> None:
    registry = EngineProcessRegistry(tmp_path / "pids.json")
    engine = start(spawn, ENGINE_LIKE)
    registry._write([ProcessRecord(engine.pid, engine.create_time() - 50, 1, 0.0)])
    assert registry.reap_orphans() == []
    assert alive(engine)


def test_unreadable_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pids.json").write_text("{broken")
    registry = EngineProcessRegistry(tmp_path / "pids.json")
    assert registry.records() == []
    assert registry.reap_orphans() == []
    assert json.loads((tmp_path / "pids.json").read_text()) == {"processes": []}


def test_default_location_is_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    assert EngineProcessRegistry().path == tmp_path / "engine-pids.json"


def test_an_exited_child_is_reaped_and_a_spared_one_left() -> None:
    """A child that exited after a shutdown saw it running stays a zombie until waited for."""
    import os
    import time

    import psutil

    from core.engine.processes import reap_exited_children

    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        deadline = time.monotonic() + 5
        while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    reaped, spared = pids
    done = reap_exited_children({spared})
    assert reaped in done
    assert spared not in done
    assert not psutil.pid_exists(reaped)
    assert psutil.Process(spared).status() == psutil.STATUS_ZOMBIE
    os.waitpid(spared, 0)
