"""Wait until an unloaded model's memory is actually back: poll the device, bounded by a timeout.

Like Ollama (which polls free memory every 250 ms until 75 % of the expected memory is back), done
once most of the expected memory is free again; never a fixed sleep, so the wait ends within one
poll interval of the memory coming back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from core.manager.plan import DeviceReading
from core.telemetry.snapshot import GpuSnapshot
from core.units import GIB

# Fraction of the unloaded model's memory that must be free again (Ollama uses 75 %).
RETURN_FRACTION = 0.75


class MemoryProbe(Protocol):
    """Reads the device (GPU, simulated GPU, or the host when the engine runs on the CPU)."""

    def read(self) -> DeviceReading: ...


def reading_of(s: GpuSnapshot) -> DeviceReading:
    """What a switch needs from one GPU snapshot."""
    return DeviceReading(s.vram_free_bytes, s.vram_total_bytes, s.temperature_c, s.power_w,
                         s.simulated)


class GpuSnapshotProbe:
    """A probe over anything that returns a GpuSnapshot taken now (the app: the sampler's
    `fresh`, so the sampler stays the device's only reader; tests: a device)."""

    def __init__(self, sample: Callable[[], GpuSnapshot]) -> None:
        self._sample = sample

    def read(self) -> DeviceReading:
        return reading_of(self._sample())


class HostMemoryProbe:
    """The host's available RAM: where the CPU build of vLLM puts the model."""

    def read(self) -> DeviceReading:
        import psutil

        vm = psutil.virtual_memory()
        return DeviceReading(int(vm.available), int(vm.total))


class MemoryNotReturnedError(RuntimeError):
    """The unloaded model's memory did not come back within the timeout."""

    def __init__(self, expected_free: int, free: int | None, waited_s: float) -> None:
        self.expected_free = expected_free
        self.free = free
        self.waited_s = waited_s
        have = "unknown" if free is None else f"{free / GIB:.2f} GiB"
        super().__init__(f"Device memory did not come back after unloading: {have} free after "
                         f"{waited_s:.1f} s, expected at least {expected_free / GIB:.2f} GiB.")


@dataclass(frozen=True)
class MemoryWaitResult:
    waited_s: float
    polls: int
    free_bytes: int | None
    target_free_bytes: int | None


async def wait_for_memory(probe: MemoryProbe, *, free_before_unload: int | None,
                          released_bytes: int, poll_interval_s: float, timeout_s: float,
                          clock: Callable[[], float] = time.monotonic,
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                          sufficient_free_bytes: int | None = None,
                          ) -> MemoryWaitResult:
    """Poll until free >= free_before_unload + RETURN_FRACTION x released_bytes, or until free
    memory already covers what the next model needs (sufficient_free_bytes): other processes
    move the free figure too (always so for host RAM), and the next load only needs its share.

    Returns at once when nothing is expected back or the device does not report free memory.
    Raises MemoryNotReturnedError after timeout_s.
    """
    start = clock()
    if free_before_unload is None or released_bytes <= 0:
        return MemoryWaitResult(0.0, 0, free_before_unload, None)
    target = free_before_unload + int(RETURN_FRACTION * released_bytes)
    if sufficient_free_bytes is not None:
        target = min(target, sufficient_free_bytes)
    polls = 0
    while True:
        reading = probe.read()
        polls += 1
        waited = clock() - start
        if reading.free_bytes is None:
            return MemoryWaitResult(waited, polls, None, target)
        if reading.free_bytes >= target:
            return MemoryWaitResult(waited, polls, reading.free_bytes, target)
        if waited >= timeout_s:
            raise MemoryNotReturnedError(target, reading.free_bytes, waited)
        await sleep(min(poll_interval_s, max(0.0, timeout_s - waited)) or poll_interval_s)
