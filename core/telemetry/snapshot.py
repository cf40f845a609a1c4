"""One sample of a GPU and of the host. A metric the device does not report is None."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on the GPU.

    used_bytes is None where the driver does not say (NVML_VALUE_NOT_AVAILABLE: WDDM, some
    laptops); ours: this app or one of its descendants (the engine's processes).
    """

    pid: int
    used_bytes: int | None
    name: str | None = None
    user: str | None = None
    ours: bool = False


@dataclass(frozen=True)
class GpuSnapshot:
    """One sample of one GPU (real through NVML, or simulated).

    Memory figures are device-wide (every process), never this process's own counters.
    """

    timestamp: float
    index: int
    name: str
    simulated: bool
    vram_total_bytes: int | None
    vram_used_bytes: int | None
    vram_free_bytes: int | None
    temperature_c: float | None = None
    throttle_temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    gpu_util_percent: float | None = None
    mem_util_percent: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    clock_events: tuple[str, ...] | None = None
    fan_percent: float | None = None
    pcie_gen: int | None = None
    pcie_width: int | None = None
    processes: tuple[GpuProcess, ...] | None = None
    # NVML's cumulative energy counter since the driver loaded (Volta and newer), millijoules.
    total_energy_mj: int | None = None
    lost: bool = False
    error: str | None = None

    @property
    def vram_used_fraction(self) -> float | None:
        if self.vram_used_bytes is None or not self.vram_total_bytes:
            return None
        return self.vram_used_bytes / self.vram_total_bytes


@dataclass(frozen=True)
class HostSnapshot:
    """One sample of the host: RAM, swap, CPU."""

    timestamp: float
    ram_total_bytes: int
    ram_used_bytes: int
    ram_available_bytes: int
    swap_total_bytes: int
    swap_used_bytes: int
    cpu_percent: float
    cpu_temperature_c: float | None = None
    package_power_w: float | None = None

    @property
    def ram_used_fraction(self) -> float:
        return self.ram_used_bytes / self.ram_total_bytes if self.ram_total_bytes else 0.0


@dataclass(frozen=True)
class Sample:
    """Everything read in one tick: the host and every GPU."""

    host: HostSnapshot
    gpus: tuple[GpuSnapshot, ...] = field(default_factory=tuple)


def gpu_label(index: int) -> str:
    """A GPU's name in metric keys and metric labels: "gpu0"."""
    return f"gpu{index}"


def gpu_metric(index: int, name: str) -> str:
    """The key of a GPU's metric in the history, the alerts and the charts:
    "gpu0.vram_used_bytes" (a snapshot field), "gpu0.vram_usage" (an alert's own metric)."""
    return f"{gpu_label(index)}.{name}"
