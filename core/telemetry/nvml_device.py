"""The one seam over NVML (``pynvml`` from nvidia-ml-py): every driver call goes through here.

Nothing above this module sees an NVML error: a metric the device does not support is ``None``,
an implausible reading is discarded, and a lost GPU becomes a terminal snapshot with ``lost=True``.
The ``nvml`` module object is injected so tests can pass a fake built from documented behaviour.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.telemetry import gpu_processes
from core.telemetry.clock_events import decode as decode_clock_events
from core.telemetry.snapshot import GpuProcess, GpuSnapshot

__all__ = ["DriverReport", "NvmlDevices", "NvmlGpu", "decode_clock_events", "read_driver_report"]

logger = logging.getLogger(__name__)

# A 4090 Laptop has been seen reporting ~593,000 mW while power-gated; no single GPU draws 1 kW.
MAX_PLAUSIBLE_POWER_W = 1000.0
# Temperatures outside this range are sensor garbage, not a hot GPU.
PLAUSIBLE_TEMPERATURE_C = (-40.0, 150.0)

# Errors after which the GPU is gone for good: a terminal "lost" snapshot.
_TERMINAL_ERRORS = ("NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED")
# Errors that mean "this API name is not usable here": try the next (older) name.
_API_GONE_ERRORS = (
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_DEPRECATED",
    "NVML_ERROR_NOT_SUPPORTED",
)


class _GpuLostError(Exception):
    """Raised inside this module only, to unwind one sample when the GPU falls off the bus."""


def _codes(nvml: Any, names: Sequence[str]) -> frozenset[int]:
    return frozenset(getattr(nvml, n) for n in names if hasattr(nvml, n))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlGpu:
    """One NVIDIA GPU read through NVML. Implements the sampler's GpuDevice protocol.

    Not thread-safe by design: the sampler thread is the one owner that calls sample().
    """

    def __init__(
        self,
        owner: NvmlDevices,
        handle: Any,
        index: int,
        *,
        clock: Callable[[], float] = time.time,
        process_poll_every: int = 10,
    ) -> None:
        self._owner = owner
        self._nvml = owner.nvml
        self._handle = handle
        self.index = index
        self._clock = clock
        self._process_poll_every = max(1, process_poll_every)
        self._samples = 0
        self._processes: tuple[GpuProcess, ...] | None = None
        self._unsupported: set[str] = set()  # metrics that said NOT_SUPPORTED: never asked again
        self._api_choice: dict[str, str] = {}  # metric -> the API name that worked
        self._throttle_c: float | None = None
        self._throttle_read = False
        self._max_clocks: tuple[int | None, int | None] | None = None
        self._lost: GpuSnapshot | None = None
        self._closed = False
        nvml = self._nvml
        self._not_supported = _codes(nvml, ["NVML_ERROR_NOT_SUPPORTED"])
        self._terminal = _codes(nvml, _TERMINAL_ERRORS)
        self._api_gone = _codes(nvml, _API_GONE_ERRORS)
        self._lib_mismatch: type[BaseException] | None = getattr(
            nvml, "NVMLLibraryMismatchError", None
        )
        self.name = self._read_name()

    # -- public -----------------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def sample(self) -> GpuSnapshot:
        """Read every metric once. A lost GPU returns its terminal snapshot without calling NVML."""
        now = self._clock()
        if self._lost is not None:
            return dataclasses.replace(self._lost, timestamp=now)
        if self._closed:
            raise RuntimeError(f"GPU {self.index} was closed")
        try:
            snap = self._read_all(now)
        except _GpuLostError as exc:
            logger.error("GPU %d (%s) is lost: %s; polling stops", self.index, self.name, exc)
            self._lost = GpuSnapshot(
                timestamp=now, index=self.index, name=self.name, simulated=False,
                vram_total_bytes=None, vram_used_bytes=None, vram_free_bytes=None,
                lost=True, error=f"GPU is lost ({exc})",
            )
            return self._lost
        self._samples += 1
        return snap

    def close(self) -> None:
        """Release this GPU; NVML shuts down once every GPU of its session is closed."""
        if not self._closed:
            self._closed = True
            self._owner._release()

    # -- reading ----------------------------------------------------------------------------------

    def _read_all(self, now: float) -> GpuSnapshot:
        nvml, h = self._nvml, self._handle
        mem = self._call("memory", nvml.nvmlDeviceGetMemoryInfo, h)
        util = self._call("utilization", nvml.nvmlDeviceGetUtilizationRates, h)
        temperature = self._temperature()
        events_mask = self._first_of(
            "clock_events",
            ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
            h,
        )
        limit_mw = self._call("power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        if self._samples % self._process_poll_every == 0:
            self._processes = self._read_processes()
        sm_max, mem_max = self._max_clock_info()
        return GpuSnapshot(
            timestamp=now,
            index=self.index,
            name=self.name,
            simulated=False,
            # v1 memory info: used = total - free, so it includes the driver's reserved memory
            # (nvidia-smi's "used" leaves that out; "free", what decisions rest on, is the same).
            vram_total_bytes=int(mem.total) if mem is not None else None,
            vram_used_bytes=int(mem.used) if mem is not None else None,
            vram_free_bytes=int(mem.free) if mem is not None else None,
            temperature_c=temperature,
            throttle_temperature_c=self._throttle_temperature(),
            power_w=self._power_w(),
            power_limit_w=self._plausible_power(limit_mw),
            gpu_util_percent=float(util.gpu) if util is not None else None,
            mem_util_percent=float(util.memory) if util is not None else None,
            sm_clock_mhz=self._int(self._call("sm_clock", nvml.nvmlDeviceGetClockInfo, h,
                                              nvml.NVML_CLOCK_SM)),
            mem_clock_mhz=self._int(self._call("mem_clock", nvml.nvmlDeviceGetClockInfo, h,
                                               nvml.NVML_CLOCK_MEM)),
            sm_clock_max_mhz=sm_max,
            mem_clock_max_mhz=mem_max,
            clock_events=decode_clock_events(int(events_mask)) if events_mask is not None else None,
            fan_percent=self._float(self._call("fan", nvml.nvmlDeviceGetFanSpeed, h)),
            pcie_gen=self._int(self._call("pcie_gen", nvml.nvmlDeviceGetCurrPcieLinkGeneration, h)),
            pcie_width=self._int(self._call("pcie_width", nvml.nvmlDeviceGetCurrPcieLinkWidth, h)),
            processes=self._processes,
            total_energy_mj=self._int(self._first_of(
                "total_energy", ("nvmlDeviceGetTotalEnergyConsumption",), h)),
        )

    def _read_name(self) -> str:
        try:
            return _text(self._nvml.nvmlDeviceGetName(self._handle))
        except self._nvml.NVMLError:
            return f"NVIDIA GPU {self.index}"

    def _temperature(self) -> float | None:
        nvml = self._nvml
        value = self._first_of(
            "temperature",
            ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"),
            self._handle,
            nvml.NVML_TEMPERATURE_GPU,
        )
        if value is None:
            return None
        t = float(value)
        low, high = PLAUSIBLE_TEMPERATURE_C
        return t if low <= t <= high else None

    def _throttle_temperature(self) -> float | None:
        # A static property of the board: read once.
        if not self._throttle_read:
            self._throttle_read = True
            value = self._call(
                "throttle_temperature",
                self._nvml.nvmlDeviceGetTemperatureThreshold,
                self._handle,
                self._nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
            )
            self._throttle_c = float(value) if value is not None else None
        return self._throttle_c

    def _max_clock_info(self) -> tuple[int | None, int | None]:
        """The boards' maximum SM and memory clocks: static, read once (None: not reported)."""
        if self._max_clocks is None:
            nvml, h = self._nvml, self._handle
            self._max_clocks = (
                self._int(self._call("sm_clock_max", nvml.nvmlDeviceGetMaxClockInfo, h,
                                     nvml.NVML_CLOCK_SM)),
                self._int(self._call("mem_clock_max", nvml.nvmlDeviceGetMaxClockInfo, h,
                                     nvml.NVML_CLOCK_MEM)),
            )
        return self._max_clocks

    def _power_w(self) -> float | None:
        """Instantaneous power where the field exists, else the driver's 1 s average."""
        nvml = self._nvml
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is not None and "power_instant" not in self._unsupported:
            values = self._call("power_instant", nvml.nvmlDeviceGetFieldValues, self._handle,
                                [field_id])
            if values is not None:
                entry = values[0]
                if entry.nvmlReturn == nvml.NVML_SUCCESS:
                    watts = self._plausible_power(self._field_number(entry))
                    if watts is not None:
                        return watts
                elif entry.nvmlReturn in self._not_supported:
                    self._unsupported.add("power_instant")
                elif entry.nvmlReturn in self._terminal:
                    raise _GpuLostError(str(nvml.NVMLError(entry.nvmlReturn)))
        usage = self._call("power_average", nvml.nvmlDeviceGetPowerUsage, self._handle)
        return self._plausible_power(usage)

    def _field_number(self, entry: Any) -> float:
        nvml = self._nvml
        kinds = {
            getattr(nvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
            getattr(nvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
            getattr(nvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
        }
        return float(getattr(entry.value, kinds.get(entry.valueType, "uiVal")))

    @staticmethod
    def _plausible_power(milliwatts: float | None) -> float | None:
        if milliwatts is None:
            return None
        watts = float(milliwatts) / 1000.0
        return watts if 0.0 <= watts <= MAX_PLAUSIBLE_POWER_W else None

    def _read_processes(self) -> tuple[GpuProcess, ...] | None:
        found: dict[int, int | None] = {}
        supported = False
        for names in (
            ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"),
            ("nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v2"),
        ):
            procs = self._first_of(names[0], names, self._handle)
            if procs is None:
                continue
            supported = True
            for p in procs:
                used = getattr(p, "usedGpuMemory", None)
                pid = int(p.pid)
                if used is not None:
                    found[pid] = (found.get(pid) or 0) + int(used)
                else:
                    found.setdefault(pid, None)
        if not supported:
            return None
        return gpu_processes.describe_all(found.items())

    # -- NVML call discipline ---------------------------------------------------------------------

    def _call(self, metric: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call one NVML function; None when the metric is unsupported; lost GPU unwinds."""
        if metric in self._unsupported:
            return None
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in self._terminal:
                raise _GpuLostError(str(exc)) from exc
            if code in self._not_supported:
                self._unsupported.add(metric)
            else:
                logger.debug("GPU %d: %s failed: %s", self.index, metric, exc)
            return None

    def _first_of(self, metric: str, names: Sequence[str], *args: Any) -> Any:
        """Call the first usable API among names (newest first), remembering which one worked."""
        if metric in self._unsupported:
            return None
        chosen = self._api_choice.get(metric)
        if chosen is not None:
            return self._call(metric, getattr(self._nvml, chosen), *args)
        last_error: BaseException | None = None
        for name in names:
            fn = getattr(self._nvml, name, None)
            if fn is None:  # an older nvidia-ml-py, or a removed deprecated name
                continue
            try:
                value = fn(*args)
            except self._nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code in self._terminal:
                    raise _GpuLostError(str(exc)) from exc
                if code in self._api_gone:
                    last_error = exc
                    continue
                logger.debug("GPU %d: %s via %s failed: %s", self.index, metric, name, exc)
                return None
            except Exception as exc:
                if self._lib_mismatch is not None and isinstance(exc, self._lib_mismatch):
                    last_error = exc
                    continue
                raise
            self._api_choice[metric] = name
            return value
        logger.debug("GPU %d: %s not available (%s)", self.index, metric, last_error)
        self._unsupported.add(metric)
        return None

    @staticmethod
    def _int(value: Any) -> int | None:
        return int(value) if value is not None else None

    @staticmethod
    def _float(value: Any) -> float | None:
        return float(value) if value is not None else None


class NvmlDevices:
    """One NVML session: initialised once, with every GPU's handle cached."""

    def __init__(
        self,
        nvml: Any,
        *,
        clock: Callable[[], float] = time.time,
        process_poll_every: int = 10,
    ) -> None:
        """Use ``open()``; this assumes nvmlInit already succeeded."""
        self.nvml = nvml
        self._open = 0
        count = int(nvml.nvmlDeviceGetCount())
        gpus: list[NvmlGpu] = []
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(NvmlGpu(self, handle, index, clock=clock,
                                process_poll_every=process_poll_every))
        self._open = len(gpus)
        self.devices: tuple[NvmlGpu, ...] = tuple(gpus)

    @classmethod
    def open(
        cls,
        nvml: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        process_poll_every: int = 10,
    ) -> NvmlDevices | None:
        """Initialise NVML and list the GPUs; None when there is no library, driver or GPU."""
        if nvml is None:
            try:
                import pynvml as nvml_module
            except ImportError:
                return None
            nvml = nvml_module
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError, OSError) as exc:
            logger.info("NVML not available: %s", exc)
            return None
        try:
            devices = cls(nvml, clock=clock, process_poll_every=process_poll_every)
        except nvml.NVMLError as exc:
            logger.warning("NVML initialised but listing GPUs failed: %s", exc)
            cls._shutdown(nvml)
            return None
        if not devices.devices:
            cls._shutdown(nvml)
            return None
        return devices

    def close(self) -> None:
        """Close every GPU (and so shut NVML down)."""
        for gpu in self.devices:
            gpu.close()

    def _release(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._shutdown(self.nvml)

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            logger.debug("nvmlShutdown failed: %s", exc)


@dataclasses.dataclass(frozen=True)
class DriverReport:
    """What NVML says about the driver, for `vrampilot doctor`; error says why it said nothing."""

    gpu_names: tuple[str, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None  # the newest CUDA the driver supports, e.g. "12.5"
    error: str | None = None


def read_driver_report(nvml: Any = None) -> DriverReport:
    """Initialise NVML once, read the GPU names and the driver's versions, shut it down again."""
    if nvml is None:
        try:
            import pynvml as nvml_module
        except ImportError as exc:
            return DriverReport(error=f"nvidia-ml-py is not installed ({exc})")
        nvml = nvml_module
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError, OSError) as exc:
        return DriverReport(error=str(exc) or type(exc).__name__)
    try:
        count = int(nvml.nvmlDeviceGetCount())
        names = tuple(_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
                      for i in range(count))
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda: str | None = None
        try:
            # e.g. 12050 -> "12.5" (nvml.h: major * 1000 + minor * 10)
            value = int(nvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{value // 1000}.{value % 1000 // 10}"
        except nvml.NVMLError:
            cuda = None
    except nvml.NVMLError as exc:
        return DriverReport(error=f"NVML initialised but could not list the GPUs: {exc}")
    finally:
        NvmlDevices._shutdown(nvml)
    if not names:
        return DriverReport(driver_version=driver, cuda_version=cuda,
                            error="the driver is loaded but reports no GPU")
    return DriverReport(gpu_names=names, driver_version=driver, cuda_version=cuda)
