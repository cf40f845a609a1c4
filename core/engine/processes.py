"""Engine processes: find the ones vLLM started, end them for sure, and reap those a crash left.

vLLM's engine processes survive a SIGKILLed parent and keep their memory (vllm issue #55510), so
every engine process is recorded in a small JSON file with its parent; at start-up the app ends
recorded processes whose parent is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from core import paths
from core.engine import forkserver

logger = logging.getLogger(__name__)

PID_FILE = "engine-pids.json"
# Spawned vLLM processes rename themselves (setproctitle) to "VLLM::EngineCore", "VLLM::Worker"...
_ENGINE_MARKERS = ("VLLM::", "vllm")


@dataclass(frozen=True)
class ProcessRecord:
    """One engine process, identified by pid and start time so a reused pid is never killed."""

    pid: int
    create_time: float
    parent_pid: int
    parent_create_time: float


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def looks_like_engine(proc: psutil.Process) -> bool:
    """Whether the process's name or command line says it is a vLLM engine process."""
    try:
        text = " ".join([proc.name(), *proc.cmdline()])
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(marker in text for marker in _ENGINE_MARKERS)


def _is_resource_tracker(proc: psutil.Process) -> bool:
    # multiprocessing's resource tracker is per parent, shared by every engine, and exits with us.
    try:
        return "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except psutil.ZombieProcess:
        return False  # an exited engine process, still to be reaped
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return True


def child_pids() -> set[int]:
    """Pids of every descendant of this process."""
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def new_engine_processes(before: set[int]) -> list[psutil.Process]:
    """Descendants started since ``before`` was taken, except the shared resource tracker and
    the engine forkserver (core.engine.forkserver: it outlives each engine, ended at close)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        if (proc.pid not in before and not _is_resource_tracker(proc)
                and not forkserver.is_forkserver(proc)):
            out.append(proc)
    return out


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a killed child stays a zombie until reaped)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def end_processes(procs: Iterable[psutil.Process], timeout_s: float = 5.0) -> list[int]:
    """SIGTERM the processes and all their descendants, wait up to timeout_s, then SIGKILL.

    Returns the pids still alive afterwards (empty unless the OS refused). Blocking: call it from
    an executor thread.
    """
    targets: dict[int, psutil.Process] = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for child in proc.children(recursive=True):
                targets[child.pid] = child
        targets[proc.pid] = proc
    for proc in targets.values():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.terminate()
    left = _wait_gone(list(targets.values()), timeout_s)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()
    return [p.pid for p in _wait_gone(left, 2.0)]


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until none of procs runs; returns those still running. A zombie counts as gone (it
    holds no memory): psutil.wait_procs would wait out the timeout on one that is not our child
    (an engine's worker whose parent was killed first). Our own children are reaped."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in procs if alive(p)]
        _reap(procs)  # after the check: whatever was seen gone is reaped
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def _reap(procs: Iterable[psutil.Process]) -> None:
    me = os.getpid()
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            if proc.ppid() == me:
                os.waitpid(proc.pid, os.WNOHANG)


def reap_exited_children(spared: set[int]) -> list[int]:
    """Reap this process's children that have exited (zombies), except those in ``spared``.
    An engine process that exits on its own just after a shutdown saw it running stays a zombie
    until its parent waits for it; returns the pids reaped."""
    reaped = []
    for proc in psutil.Process().children():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid not in spared and proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)
                reaped.append(proc.pid)
    return reaped


def start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if not running) without its leak warnings.

    vLLM's engine processes register semaphores and shared memory with the tracker, one per
    parent. When we end an engine by force (a cancelled load, a quick exit) the tracker unlinks
    what the killed process left - the clean-up we want - and warns "There appear to be N leaked
    shared_memory objects" on stderr for each kind, which only reads like a fault. The tracker
    takes its warning filters from this process's -W options when it starts, so it gets that
    one warning ignored; nothing else changes."""
    from multiprocessing import resource_tracker

    quiet = "ignore:resource_tracker:UserWarning"
    added = quiet not in sys.warnoptions
    if added:
        sys.warnoptions.append(quiet)
    try:
        resource_tracker.ensure_running()
    finally:
        if added:
            sys.warnoptions.remove(quiet)


def end_engine_processes(spared: set[int], grace_s: float = 0.5) -> list[int]:
    """End every process this one started, except those in ``spared`` (running before the
    engines were possible) and multiprocessing's resource tracker (it exits with us): SIGTERM,
    SIGKILL after grace_s, reaped so none stays a zombie; the engine forkserver too. Returns
    the pids that were still running. Blocking: call it from a thread."""
    server = forkserver.stop(timeout_s=grace_s)
    if server is not None:
        logger.info("ended the engine forkserver (pid %s)", server)
    everyone = new_engine_processes(spared)
    procs = [p for p in everyone if alive(p)]
    if procs:
        logger.info("ending engine process(es) %s", [p.pid for p in procs])
        end_processes(procs, timeout_s=grace_s)
    _reap(everyone)  # those that had exited already are zombies until we wait for them
    return [p.pid for p in procs]


class EngineProcessRegistry:
    """The on-disk record of engine processes this app started (data_dir()/engine-pids.json)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path if path is not None else paths.data_dir() / PID_FILE

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> list[ProcessRecord]:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            return [ProcessRecord(**entry) for entry in raw.get("processes", [])]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("ignoring unreadable engine pid file %s: %s", self._path, exc)
            return []

    def _write(self, records: list[ProcessRecord]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"processes": [asdict(r) for r in records]}, indent=1))
        os.replace(tmp, self._path)

    def records(self) -> list[ProcessRecord]:
        return self._read()

    def add(self, procs: Iterable[psutil.Process]) -> None:
        """Record processes as children of this process."""
        me = psutil.Process()
        records = self._read()
        known = {r.pid for r in records}
        for proc in procs:
            created = _create_time(proc.pid)
            if created is not None and proc.pid not in known:
                records.append(ProcessRecord(proc.pid, created, me.pid, me.create_time()))
        self._write(records)

    def remove(self, pids: Iterable[int]) -> None:
        drop = set(pids)
        self._write([r for r in self._read() if r.pid not in drop])

    def reap_orphans(self, timeout_s: float = 5.0) -> list[int]:
        """End recorded engine processes whose parent app is gone; returns the pids ended.

        Records of processes that no longer exist are dropped; records whose parent still runs
        (another instance of the app) are kept and left alone. Blocking.
        """
        keep: list[ProcessRecord] = []
        victims: list[psutil.Process] = []
        for rec in self._read():
            created = _create_time(rec.pid)
            if created is None or abs(created - rec.create_time) > 0.01:
                continue  # gone, or the pid now belongs to someone else
            parent_created = _create_time(rec.parent_pid)
            if parent_created is not None and abs(parent_created - rec.parent_create_time) <= 0.01:
                keep.append(rec)  # its app still runs
                continue
            proc = psutil.Process(rec.pid)
            if looks_like_engine(proc):
                victims.append(proc)
        if victims:
            logger.warning("ending %d engine process(es) left by a previous run: %s",
                        len(victims), [p.pid for p in victims])
            end_processes(victims, timeout_s)
        self._write(keep)
        return [p.pid for p in victims]


def reap_orphan_engines(registry: EngineProcessRegistry | None = None) -> list[int]:
    """End engine processes left over by a crash of this app (call once at start-up)."""
    return (registry or EngineProcessRegistry()).reap_orphans()
