"""Who holds the GPU's memory: a pid from the driver (or the simulator) made into a GpuProcess.

One place decides a process's name, user and whether it is ours (this app or one of its
descendants: vLLM's engine core and workers), for the NVML reader and the simulated GPU alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil

from core.telemetry.snapshot import GpuProcess


def _is_ours(proc: psutil.Process, own_pid: int) -> bool:
    if proc.pid == own_pid:
        return True
    try:
        return any(parent.pid == own_pid for parent in proc.parents())
    except (psutil.Error, OSError):
        return False


def describe(pid: int, used_bytes: int | None, own_pid: int | None = None) -> GpuProcess:
    """The process's name and user from psutil (None when it is gone or hidden from us)."""
    own = os.getpid() if own_pid is None else own_pid
    try:
        proc = psutil.Process(pid)
    except (psutil.Error, OSError):
        return GpuProcess(pid=pid, used_bytes=used_bytes)
    name = user = None
    with contextlib.suppress(psutil.Error, OSError):
        name = proc.name()
    with contextlib.suppress(psutil.Error, OSError, KeyError):  # KeyError: uid not in passwd
        user = proc.username()
    return GpuProcess(pid=pid, used_bytes=used_bytes, name=name, user=user,
                      ours=_is_ours(proc, own))


def describe_all(used_by_pid: Iterable[tuple[int, int | None]]) -> tuple[GpuProcess, ...]:
    """Every (pid, used bytes), in pid order."""
    return tuple(describe(pid, used) for pid, used in sorted(used_by_pid))


def others_holding(processes: Iterable[GpuProcess] | None) -> str | None:
    """The processes that are not ours holding GPU memory, for a refusal on memory: "other
    processes hold VRAM: Xorg (pid 4242) 1.0 GiB, …" (None: none, or the list is not reported)."""
    others = sorted((p for p in processes or () if not p.ours),
                    key=lambda p: (p.used_bytes is None, -(p.used_bytes or 0), p.pid))
    if not others:
        return None
    parts = [f"{p.name or 'unknown'} (pid {p.pid}) "
             + ("amount not reported" if p.used_bytes is None
                else f"{p.used_bytes / 1024**3:.2f} GiB") for p in others]
    return "other processes hold VRAM: " + ", ".join(parts)
