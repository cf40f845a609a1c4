"""A simulated GPU from a device profile, driven by the engine's real activity.

Power follows what the engine is doing (streams -> high, loading -> medium, idle -> low), the
temperature follows power through a first-order thermal model, and VRAM is the desktop baseline plus
what the manager has loaded. Deterministic for a given seed and clock, so tests can run it faster
than real time. Its name always says "(simulated)" and its snapshots have ``simulated=True``.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.config_loading import read_yaml, validate
from core.engine.processes import looks_like_engine
from core.paths import resource
from core.telemetry import gpu_processes
from core.telemetry.activity import ActivityState, EngineActivity
from core.telemetry.snapshot import GpuProcess, GpuSnapshot
from core.units import GIB, MIB

_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class UnknownProfileError(ValueError):
    """No device profile of that name; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown profile {name!r}; known: {', '.join(known) or '(none)'}")


class ProfileClocks(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_sm_mhz: int = Field(gt=0)
    active_sm_mhz: int = Field(gt=0)
    idle_mem_mhz: int = Field(gt=0)
    active_mem_mhz: int = Field(gt=0)
    # The board's maximum clocks (NVML's MaxClockInfo); default: the active clocks.
    max_sm_mhz: int | None = Field(default=None, gt=0)
    max_mem_mhz: int | None = Field(default=None, gt=0)

    @property
    def sm_max(self) -> int:
        return self.max_sm_mhz or self.active_sm_mhz

    @property
    def mem_max(self) -> int:
        return self.max_mem_mhz or self.active_mem_mhz


class DeviceProfile(BaseModel):
    """A GPU model's figures for the simulator (resources/profiles/NAME.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vram_total_gib: float = Field(gt=0)
    baseline_vram_used_mib: float = Field(ge=0)
    tgp_min_w: float = Field(gt=0)
    tgp_max_w: float = Field(gt=0)
    dynamic_boost_w: float = Field(ge=0)
    idle_power_w: float = Field(ge=0)
    loading_power_w: float = Field(ge=0)
    generating_power_w: float = Field(ge=0)
    per_extra_stream_w: float = Field(ge=0)
    ambient_c: float
    thermal_resistance_c_per_w: float = Field(gt=0)
    thermal_time_constant_s: float = Field(gt=0)
    throttle_temperature_c: float
    power_noise_w: float = Field(ge=0)
    clocks: ProfileClocks
    pcie_gen: int = Field(ge=1)
    pcie_width: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.tgp_min_w > self.tgp_max_w:
            raise ValueError(f"tgp_min_w {self.tgp_min_w} is above tgp_max_w {self.tgp_max_w}")
        if self.throttle_temperature_c <= self.ambient_c:
            raise ValueError("throttle_temperature_c must be above ambient_c")
        return self

    @property
    def max_power_w(self) -> float:
        """The enforced limit with Dynamic Boost."""
        return self.tgp_max_w + self.dynamic_boost_w

    @property
    def vram_total_bytes(self) -> int:
        return int(self.vram_total_gib * GIB)

    @property
    def thermal(self) -> ThermalModel:
        return ThermalModel(self.ambient_c, self.thermal_resistance_c_per_w,
                            self.thermal_time_constant_s)


@dataclass(frozen=True)
class ThermalModel:
    """First order: dT/dt = (T_ss(P) - T) / tau with T_ss(P) = ambient + R * P.

    For power held constant over dt the exact solution is
    T(t + dt) = T_ss + (T(t) - T_ss) * exp(-dt / tau), which is what step() computes.
    """

    ambient_c: float
    resistance_c_per_w: float
    time_constant_s: float

    def steady_state(self, power_w: float) -> float:
        return self.ambient_c + self.resistance_c_per_w * power_w

    def power_for(self, temperature_c: float) -> float:
        """The power whose steady state is temperature_c."""
        return (temperature_c - self.ambient_c) / self.resistance_c_per_w

    def step(self, temperature_c: float, power_w: float, dt: float) -> float:
        target = self.steady_state(power_w)
        return target + (temperature_c - target) * math.exp(-max(0.0, dt) / self.time_constant_s)


def profiles_dir() -> Path:
    return resource("profiles")


def known_profiles() -> list[str]:
    """Names of the shipped device profiles."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(name: str) -> DeviceProfile:
    """Read resources/profiles/NAME.yaml; UnknownProfileError lists the known names.

    A name ending in .yaml / .yml is a profile file of the user's own (their laptop's figures,
    or a faster thermal model to rehearse a soak in seconds); errors name the file and key.
    """
    if name.endswith((".yaml", ".yml")):
        return validate(DeviceProfile, read_yaml(name), name)
    known = known_profiles()
    if not _PROFILE_NAME.match(name) or name not in known:
        raise UnknownProfileError(name, known)
    path = profiles_dir() / f"{name}.yaml"
    return validate(DeviceProfile, read_yaml(path), path)


class SimulatedGpu:
    """A GPU that does not exist, behaving like the profile says. Implements GpuDevice."""

    # Throttling engages this close to the limit and holds the power whose steady state is it.
    _THROTTLE_MARGIN_C = 0.5
    # Who holds the memory is looked up every N samples (psutil walks /proc), like NVML's list.
    PROCESS_POLL_EVERY = 10

    def __init__(
        self,
        profile: DeviceProfile,
        activity: EngineActivity,
        *,
        index: int = 0,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        initial_temperature_c: float | None = None,
    ) -> None:
        self.profile = profile
        self.index = index
        self.name = f"{profile.name} (simulated)"
        self._activity = activity
        self._clock = clock
        self._rng = random.Random(seed)
        self._thermal = profile.thermal
        self._temperature = (
            initial_temperature_c if initial_temperature_c is not None
            else self._thermal.steady_state(profile.idle_power_w)
        )
        self._last_time: float | None = None
        self._power = profile.idle_power_w  # held until the next sample
        self._demanded = profile.idle_power_w
        self._throttling = False
        self._samples = 0
        self._processes: tuple[GpuProcess, ...] = ()

    @property
    def temperature_c(self) -> float:
        """The model's temperature as of the last sample."""
        return self._temperature

    @property
    def held_power_w(self) -> float:
        """The power chosen at the last sample, held until the next (no measurement noise)."""
        return self._power

    @property
    def throttling(self) -> bool:
        """Whether the last sample held power down to stay at the throttle temperature."""
        return self._throttling

    def sample(self) -> GpuSnapshot:
        now = self._clock()
        if self._last_time is not None:
            # The power chosen at the previous sample was held over the interval just ended.
            self._temperature = self._thermal.step(self._temperature, self._power,
                                                   now - self._last_time)
        self._last_time = now
        state = self._activity.state()
        self._demanded = self._demanded_power(state)
        self._power, self._throttling = self._choose_power(state)
        if self._samples % self.PROCESS_POLL_EVERY == 0:
            self._processes = self._engine_processes(state)
        self._samples += 1
        return self._snapshot(now, state)

    def close(self) -> None:
        """Nothing to release."""

    def _demanded_power(self, state: ActivityState) -> float:
        p = self.profile
        if state.active_streams > 0:
            extra = p.per_extra_stream_w * (state.active_streams - 1)
            return min(p.generating_power_w + extra, p.max_power_w)
        if state.loading:
            return p.loading_power_w
        return p.idle_power_w

    def _choose_power(self, state: ActivityState) -> tuple[float, bool]:
        demanded = self._demanded_power(state)
        limit_c = self.profile.throttle_temperature_c
        if self._temperature >= limit_c - self._THROTTLE_MARGIN_C:
            hold = self._thermal.power_for(limit_c)
            if demanded > hold:
                return hold, True
        return demanded, False

    def _engine_processes(self, state: ActivityState) -> tuple[GpuProcess, ...]:
        """What the manager loaded is held by the engine: vLLM's engine core when one of our
        descendant processes is one, else this process (an engine running in-process)."""
        if state.loaded_bytes <= 0:
            return ()
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            children = []
        holder = next((c.pid for c in children if looks_like_engine(c)), os.getpid())
        return gpu_processes.describe_all([(holder, state.loaded_bytes)])

    def _sm_clock(self, active: bool) -> int:
        """Thermal throttling lowers the SM clock in proportion to the power it holds back."""
        c = self.profile.clocks
        if not active:
            return c.idle_sm_mhz
        if self._throttling and self._demanded > 0:
            return max(c.idle_sm_mhz, round(c.active_sm_mhz * self._power / self._demanded))
        return c.active_sm_mhz

    def _snapshot(self, now: float, state: ActivityState) -> GpuSnapshot:
        p = self.profile
        total = p.vram_total_bytes
        used = min(total, int(p.baseline_vram_used_mib * MIB) + state.loaded_bytes)
        busy = state.active_streams > 0
        events: list[str] = []
        if not busy and not state.loading:
            events.append("Idle")
        if self._power >= p.tgp_max_w:
            events.append("SwPowerCap")
        if self._throttling:
            events.append("SwThermal")
        noise = self._rng.gauss(0.0, p.power_noise_w) if p.power_noise_w else 0.0
        if busy:
            gpu_util, mem_util = 97.0, 82.0
        elif state.loading:
            gpu_util, mem_util = 35.0, 60.0
        else:
            gpu_util, mem_util = float(self._rng.randint(0, 3)), 1.0
        active = busy or state.loading
        return GpuSnapshot(
            timestamp=now,
            index=self.index,
            name=self.name,
            simulated=True,
            vram_total_bytes=total,
            vram_used_bytes=used,
            vram_free_bytes=total - used,
            temperature_c=self._temperature,
            throttle_temperature_c=p.throttle_temperature_c,
            power_w=max(0.0, self._power + noise),
            power_limit_w=p.max_power_w,
            gpu_util_percent=gpu_util,
            mem_util_percent=mem_util,
            sm_clock_mhz=self._sm_clock(active),
            mem_clock_mhz=p.clocks.active_mem_mhz if active else p.clocks.idle_mem_mhz,
            sm_clock_max_mhz=p.clocks.sm_max,
            mem_clock_max_mhz=p.clocks.mem_max,
            clock_events=tuple(events),
            fan_percent=None,  # laptop GPUs do not report their fan through NVML
            pcie_gen=p.pcie_gen,
            pcie_width=p.pcie_width,
            processes=self._processes,
        )
