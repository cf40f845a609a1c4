"""The host's RAM, swap, CPU use, CPU temperature and package power (psutil and sysfs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from core.telemetry.snapshot import HostSnapshot

logger = logging.getLogger(__name__)

# Intel RAPL package-0 energy counter (microjoules). Root-only on kernels >= 5.10 (CVE-2020-8694).
RAPL_PACKAGE = Path("/sys/class/powercap/intel-rapl:0")
# Sensor chips whose readings are the CPU package, best first.
_CPU_SENSORS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "acpitz")
# Reading every hwmon file costs milliseconds; a CPU temperature does not move faster than this.
_TEMPERATURE_REFRESH_S = 1.0
# psutil.swap_memory parses all of /proc/vmstat (~0.25 ms, the costliest read of a tick); swap
# use moves slowly, so at 10 Hz it is read once a second.
_SWAP_REFRESH_S = 1.0


class RaplPackagePower:
    """Package power from the RAPL energy counter: the delta between two reads."""

    def __init__(self, directory: Path = RAPL_PACKAGE, clock: Callable[[], float] = time.monotonic):
        self._energy = directory / "energy_uj"
        self._range = directory / "max_energy_range_uj"
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self._wrap_uj: int | None = None
        first = self._read(self._energy)
        self.available = first is not None
        if first is not None:
            self._wrap_uj = self._read(self._range)
            self._last = (clock(), first)  # so the first watts() call already has a delta

    @staticmethod
    def _read(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def watts(self) -> float | None:
        """Average package power since the previous read; None if unreadable."""
        if not self.available:
            return None
        energy = self._read(self._energy)
        now = self._clock()
        if energy is None:
            return None
        last, self._last = self._last, (now, energy)
        if last is None or now <= last[0]:
            return None
        delta = energy - last[1]
        if delta < 0:  # the counter wrapped
            if not self._wrap_uj:
                return None
            delta += self._wrap_uj
        return delta / 1e6 / (now - last[0])


class HostSampler:
    """Reads one HostSnapshot per call. Keep one instance: CPU % is a delta between calls."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        rapl: RaplPackagePower | None = None,
        ps: Any = psutil,
    ) -> None:
        self._clock = clock
        self._ps = ps
        self._rapl = rapl if rapl is not None else RaplPackagePower()
        self._temp_at = float("-inf")
        self._temp: float | None = None
        self._swap_at = float("-inf")
        self._swap: tuple[int, int] = (0, 0)
        # Primes the delta: the first real call measures from here.
        self._ps.cpu_percent(interval=None)

    def sample(self) -> HostSnapshot:
        now = self._clock()
        vm = self._ps.virtual_memory()
        mono = time.monotonic()
        swap_total, swap_used = self._swap_memory(mono)
        return HostSnapshot(
            timestamp=now,
            ram_total_bytes=int(vm.total),
            # total - available counts what programs hold, not reclaimable page cache
            ram_used_bytes=int(vm.total - vm.available),
            ram_available_bytes=int(vm.available),
            swap_total_bytes=swap_total,
            swap_used_bytes=swap_used,
            cpu_percent=float(self._ps.cpu_percent(interval=None)),
            cpu_temperature_c=self._cpu_temperature(mono),
            package_power_w=self._rapl.watts(),
        )

    def _swap_memory(self, now: float) -> tuple[int, int]:
        if now - self._swap_at >= _SWAP_REFRESH_S:
            self._swap_at = now
            swap = self._ps.swap_memory()
            self._swap = (int(swap.total), int(swap.used))
        return self._swap

    def _cpu_temperature(self, now: float) -> float | None:
        if now - self._temp_at < _TEMPERATURE_REFRESH_S:
            return self._temp
        self._temp_at = now
        self._temp = cpu_temperature(self._ps)
        return self._temp


def cpu_temperature(ps: Any = psutil) -> float | None:
    """The CPU package temperature, if the machine exposes one."""
    read = getattr(ps, "sensors_temperatures", None)
    if read is None:  # not on this platform
        return None
    try:
        sensors: dict[str, list[Any]] = read()
    except (OSError, RuntimeError) as exc:
        logger.debug("sensors_temperatures failed: %s", exc)
        return None
    for chip in _CPU_SENSORS:  # other chips (nvme, GPU, battery) are not the CPU
        entries = sensors.get(chip)
        if not entries:
            continue
        for entry in entries:  # prefer the package / Tctl reading
            if entry.label.startswith(("Package", "Tctl", "Tdie")):
                return float(entry.current)
        return float(entries[0].current)
    return None
