"""A fake ``pynvml`` module built from NVML's documented behaviour, for the one hardware seam.

Constants, error classes and ctypes structures come from the real nvidia-ml-py module, so error
codes and the NVMLError subclass mapping (e.g. NVMLError_GpuIsLost) are the real ones. Behaviour
reproduced:

- a metric the board does not support raises NVMLError(NVML_ERROR_NOT_SUPPORTED) (laptops: power,
  fan, ...); a field value reports it in its own ``nvmlReturn``;
- an older nvidia-ml-py lacks the new names (AttributeError), a newer driver answers the deprecated
  ones with NVML_ERROR_DEPRECATED, an older driver the new ones with NVML_ERROR_FUNCTION_NOT_FOUND;
- a GPU that falls off the bus raises NVMLError_GpuIsLost from every call;
- no driver: nvmlInit raises NVML_ERROR_DRIVER_NOT_LOADED (or LIBRARY_NOT_FOUND);
- power in milliwatts, memory in bytes, clock-event reasons as a bit mask, clocks in MHz (current
  from nvmlDeviceGetClockInfo, the board's maximum from nvmlDeviceGetMaxClockInfo);
- the running-process lists hold (pid, usedGpuMemory); nvidia-ml-py turns the driver's
  NVML_VALUE_NOT_AVAILABLE into usedGpuMemory None (WDDM, some laptops): a None here stands
  for it.
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pynvml as real

GIB = 1024**3


@dataclass
class FakeBoard:
    """The state of one fake GPU; tests change it between samples."""

    name: str = "NVIDIA GeForce RTX 4090 Laptop GPU"
    total_bytes: int = 16 * GIB
    used_bytes: int = 1 * GIB
    temperature_c: int = 45
    slowdown_c: int = 87
    power_instant_mw: int = 32_000
    power_average_mw: int = 30_000
    enforced_limit_mw: int = 175_000
    gpu_util: int = 10
    mem_util: int = 5
    sm_clock: int = 1500
    mem_clock: int = 8001
    sm_clock_max: int = 2040
    mem_clock_max: int = 9001
    fan: int = 40
    pcie_gen: int = 4
    pcie_width: int = 16
    clock_events: int = 0x1
    total_energy_mj: int = 1_000_000
    compute_procs: list[tuple[int, int | None]] = field(default_factory=list)
    graphics_procs: list[tuple[int, int | None]] = field(default_factory=list)
    # Function names (without the nvmlDevice prefix) that raise NOT_SUPPORTED on this board.
    unsupported: set[str] = field(default_factory=set)
    # Field ids whose nvmlReturn is NOT_SUPPORTED.
    unsupported_fields: set[int] = field(default_factory=set)
    lost: bool = False


class FakeNvml:
    """Module-like object: pass it wherever the code takes ``nvml=``."""

    def __init__(
        self,
        boards: list[FakeBoard] | None = None,
        *,
        missing: set[str] | None = None,
        deprecated: set[str] | None = None,
        not_found: set[str] | None = None,
        init_error: int | None = None,
    ) -> None:
        self.boards = boards if boards is not None else [FakeBoard()]
        self.missing = missing or set()  # attributes this nvidia-ml-py lacks
        self.deprecated = deprecated or set()  # names the driver answers with DEPRECATED
        self.not_found = not_found or set()  # names the driver lacks (FUNCTION_NOT_FOUND)
        self.init_error = init_error
        self.calls: Counter[str] = Counter()
        self.initialised = 0

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if not name.startswith("nvml"):
            return attr
        if name in object.__getattribute__(self, "missing"):
            raise AttributeError(name)
        calls = object.__getattribute__(self, "calls")

        def counted(*args: Any) -> Any:  # count calls, not look-ups
            calls[name] += 1
            return attr(*args)

        return counted

    def __getattr__(self, name: str) -> Any:
        # Constants, NVMLError and its subclasses, structures: the real module's.
        if name.startswith(("NVML", "c_nvml")):
            return getattr(real, name)
        raise AttributeError(name)

    # -- helpers ---------------------------------------------------------------------------------

    def _board(self, handle: Any, fn: str) -> FakeBoard:
        if self.initialised <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        if fn in self.deprecated:
            raise real.NVMLError(real.NVML_ERROR_DEPRECATED)
        if fn in self.not_found:
            raise real.NVMLError(real.NVML_ERROR_FUNCTION_NOT_FOUND)
        board: FakeBoard = handle.board
        if board.lost:
            raise real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)
        if fn.removeprefix("nvmlDevice") in board.unsupported:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return board

    # -- library ---------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise real.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        if self.initialised <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    driver_version = "555.42.06"
    cuda_driver_version = 12050  # CUDA 12.5

    def nvmlSystemGetDriverVersion(self) -> str:
        if self.initialised <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        if self.initialised <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        if self.initialised <= 0:
            raise real.NVMLError(real.NVML_ERROR_UNINITIALIZED)
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < len(self.boards):
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return types.SimpleNamespace(board=self.boards[index], index=index)

    # -- device ----------------------------------------------------------------------------------

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._board(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        b = self._board(handle, "nvmlDeviceGetMemoryInfo")
        mem = real.c_nvmlMemory_t()
        mem.total, mem.used, mem.free = b.total_bytes, b.used_bytes, b.total_bytes - b.used_bytes
        return mem

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        b = self._board(handle, "nvmlDeviceGetUtilizationRates")
        util = real.c_nvmlUtilization_t()
        util.gpu, util.memory = b.gpu_util, b.mem_util
        return util

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int) -> int:
        assert sensor == real.NVML_TEMPERATURE_GPU
        return self._board(handle, "nvmlDeviceGetTemperatureV").temperature_c

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == real.NVML_TEMPERATURE_GPU
        return self._board(handle, "nvmlDeviceGetTemperature").temperature_c

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        b = self._board(handle, "nvmlDeviceGetTemperatureThreshold")
        if threshold != real.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            raise real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return b.slowdown_c

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> Any:
        b = self._board(handle, "nvmlDeviceGetFieldValues")
        values = (real.c_nvmlFieldValue_t * len(field_ids))()
        for slot, fid in zip(values, field_ids, strict=True):
            slot.fieldId = fid
            if fid in b.unsupported_fields or fid != real.NVML_FI_DEV_POWER_INSTANT:
                slot.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
                continue
            slot.nvmlReturn = real.NVML_SUCCESS
            slot.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
            slot.value.uiVal = b.power_instant_mw
        return values

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetPowerUsage").power_average_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetEnforcedPowerLimit").enforced_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        b = self._board(handle, "nvmlDeviceGetClockInfo")
        return {real.NVML_CLOCK_SM: b.sm_clock, real.NVML_CLOCK_MEM: b.mem_clock}[clock_type]

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock_type: int) -> int:
        b = self._board(handle, "nvmlDeviceGetMaxClockInfo")
        maximum = {real.NVML_CLOCK_SM: b.sm_clock_max, real.NVML_CLOCK_MEM: b.mem_clock_max}
        return maximum[clock_type]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetCurrentClocksEventReasons").clock_events

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").clock_events

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetTotalEnergyConsumption").total_energy_mj

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetFanSpeed").fan

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetCurrPcieLinkGeneration").pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        return self._board(handle, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        b = self._board(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in b.compute_procs]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        b = self._board(handle, "nvmlDeviceGetGraphicsRunningProcesses")
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in b.graphics_procs]

    def device_calls(self) -> int:
        """How many nvmlDevice* functions were called."""
        return sum(n for name, n in self.calls.items() if name.startswith("nvmlDevice"))
