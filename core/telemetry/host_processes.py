"""The engine's processes on the host: this app and its descendants (vLLM's engine core and
workers) with their resident memory, read with psutil when the Monitor tab refreshes."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class HostProcess:
    pid: int
    name: str | None  # None: gone or hidden from us
    rss_bytes: int | None
    parent_pid: int | None


def _row(proc: psutil.Process) -> HostProcess:
    name = rss = parent = None
    with contextlib.suppress(psutil.Error, OSError):
        name = proc.name()
    with contextlib.suppress(psutil.Error, OSError):
        rss = proc.memory_info().rss
    with contextlib.suppress(psutil.Error, OSError):
        parent = proc.ppid()
    return HostProcess(proc.pid, name, rss, parent)


def engine_processes(own_pid: int | None = None) -> tuple[HostProcess, ...]:
    """This process first, then its descendants in pid order (a child that ends while being
    read is shown with what could still be read)."""
    try:
        own = psutil.Process(os.getpid() if own_pid is None else own_pid)
    except (psutil.Error, OSError):
        return ()
    try:
        children = sorted(own.children(recursive=True), key=lambda p: p.pid)
    except (psutil.Error, OSError):
        children = []
    return tuple(_row(p) for p in (own, *children))
