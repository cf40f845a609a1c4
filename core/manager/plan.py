"""The pure half of a switch: what the device looks like, what the target needs, and the verdict.

`plan_switch` has no side effects: it takes a device reading, the fitted estimate and the limits,
and returns a `SwitchPlan` whose checks say what passed and, for a refusal, why (with numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.models.catalog import ModelEntry
from core.units import GIB


@dataclass(frozen=True)
class DeviceReading:
    """What the switch needs from the device right now (device-wide, None = not reported)."""

    free_bytes: int | None
    total_bytes: int | None
    temperature_c: float | None = None
    power_w: float | None = None
    simulated: bool = False


@dataclass(frozen=True)
class FitEstimate:
    """The estimator's answer for one model against some usable memory.

    needed_bytes: what the engine will take on the device (for vLLM: utilization x total);
    context: the fitted max_model_len; memory_utilization: the value to pass to the engine;
    model_bytes: what the model itself needs before any utilization floor (vLLM's CPU build
    reserves at least 10 % of the device whatever the model), which is what "a smaller model"
    compares (None: same as needed_bytes).
    """

    fits: bool
    needed_bytes: int
    context: int
    memory_utilization: float
    detail: str = ""
    model_bytes: int | None = None
    kv_cache_tokens: int | None = None  # size the KV cache to this many tokens (CPU build)

    @property
    def size_bytes(self) -> int:
        return self.needed_bytes if self.model_bytes is None else self.model_bytes


# (entry, free bytes after unloading, device total, buffer bytes) -> estimate; None = not reported.
FitEstimator = Callable[[ModelEntry, int | None, int | None, int], FitEstimate]


class SwitchingSettings(Protocol):
    """The `model_switching` section of monitoring.yaml (read-only view)."""

    @property
    def switch_timeout_seconds(self) -> float: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def vram_buffer_gb(self) -> float: ...
    @property
    def max_temperature_c(self) -> float: ...
    @property
    def max_power_w(self) -> float: ...
    @property
    def memory_poll_interval_seconds(self) -> float: ...
    @property
    def memory_return_timeout_seconds(self) -> float: ...
    @property
    def thermal_persist_seconds(self) -> float: ...
    @property
    def cooldown_seconds(self) -> float: ...
    @property
    def fallback_cascade(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class SafetyLimits:
    """Thresholds a load must respect (from config)."""

    buffer_bytes: int
    max_temperature_c: float
    max_power_w: float

    @classmethod
    def from_settings(cls, s: SwitchingSettings) -> SafetyLimits:
        return cls(int(s.vram_buffer_gb * GIB), s.max_temperature_c, s.max_power_w)


# The checks a forced switch skips (an alert step-down, a confirmed "Switch anyway"). Memory is
# never skipped: loading what does not fit is exactly the crash this policy exists to prevent.
GATE_CHECKS = frozenset({"temperature", "power"})


@dataclass(frozen=True)
class Check:
    """One safety check: its name, whether it passed, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class SwitchPlan:
    """A switch decided but not executed. `refusal` is None when every check passed."""

    target: str
    from_model: str | None
    noop: bool
    checks: tuple[Check, ...]
    fit: FitEstimate | None
    predicted_s: float | None

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def refused_only_on_heat_or_power(self) -> bool:
        """Refused, and only by the temperature/power gate: a user may override it ("Switch
        anyway"); never a refusal on memory, disk, privacy or a crash loop."""
        failed = {c.name for c in self.checks if not c.passed}
        return bool(failed) and failed <= GATE_CHECKS

    @property
    def refusal(self) -> str | None:
        failed = [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]
        return "; ".join(failed) if failed else None


def _gib(n: int | float) -> str:
    return f"{n / GIB:.2f} GiB"


def plan_switch(target: ModelEntry, *, active_model: str | None, active_loaded_bytes: int,
                reading: DeviceReading, limits: SafetyLimits, estimate: FitEstimator,
                on_disk: bool, private: bool = False, remote_configured: bool = False,
                predicted_s: float | None = None, force: bool = False,
                crash_loop: str | None = None) -> SwitchPlan:
    """Decide whether switching to `target` is safe, assuming the active model is unloaded first.

    Memory: the free memory after unloading (free now plus what the active model holds) minus the
    buffer must cover the estimate. Temperature and power must be under the limits (a metric the
    device does not report passes, and says so); `force` passes them with their numbers and says
    the gate was skipped. crash_loop: why the target is not reloaded (its engine keeps dying).
    """
    if active_model == target.id:
        return SwitchPlan(target.id, active_model, True, (), None, 0.0)
    checks: list[Check] = []
    fit: FitEstimate | None = None
    if not target.enabled:
        checks.append(Check("enabled", False, f"{target.id} is disabled in the catalog"))
    if target.is_remote:
        if private:
            checks.append(Check("private", False,
                                "the task is private: it is never sent to a remote endpoint"))
        if not remote_configured:
            checks.append(Check("remote", False, "no remote endpoint is configured"))
        else:
            checks.append(Check("remote", True, "remote endpoint configured"))
        return SwitchPlan(target.id, active_model, False, tuple(checks), None, predicted_s)

    if crash_loop is not None:
        checks.append(Check("crash_loop", False, crash_loop))
    checks.append(Check("on_disk", on_disk,
                        "model files present" if on_disk else f"{target.id} is not on disk"))
    usable: int | None = None
    free_after: int | None = None
    if reading.free_bytes is not None:
        free_after = reading.free_bytes + max(0, active_loaded_bytes)
        usable = free_after - limits.buffer_bytes
    fit = estimate(target, free_after, reading.total_bytes, limits.buffer_bytes)
    if usable is None:
        checks.append(Check("memory", fit.fits, "free memory not reported; estimate only"
                            + (f" ({fit.detail})" if fit.detail else "")))
    else:
        passed = fit.fits and usable >= fit.needed_bytes
        checks.append(Check(
            "memory", passed,
            f"{_gib(usable + limits.buffer_bytes)} free after unloading - "
            f"{_gib(limits.buffer_bytes)} buffer = {_gib(usable)} usable, "
            f"needs {_gib(fit.needed_bytes)}" + (f" ({fit.detail})" if fit.detail else "")))
    t = reading.temperature_c
    p = reading.power_w
    gate = [Check("temperature", t is None or t < limits.max_temperature_c,
                  "not reported" if t is None
                  else f"{t:.0f} °C, limit {limits.max_temperature_c:.0f} °C"),
            Check("power", p is None or p < limits.max_power_w,
                  "not reported" if p is None else f"{p:.0f} W, limit {limits.max_power_w:.0f} W")]
    if force:
        gate = [c if c.passed else Check(c.name, True, f"{c.detail} (gate skipped: forced)")
                for c in gate]
    checks.extend(gate)
    return SwitchPlan(target.id, active_model, False, tuple(checks), fit, predicted_s)


def next_models(current: str, cascade: Sequence[str], size: Callable[[str], int | None], *,
                smaller_only: bool = False) -> list[str]:
    """Which models to try after `current`, best first: the one place that decides "which model
    next" (the manager's fallback after a failed switch, the alert policy's step-down, the
    Models tab's offer after a refusal). Callers then drop models that are not usable here.

    The cascade's entries after `current` (smaller ones: 30B -> 14B -> 8B -> 4B -> remote by
    default), then entries before it that need no more memory than it does (peers such as two
    demo models). A model not in the cascade falls back to the whole cascade.
    smaller_only (a step-down): only local models that need strictly less memory than `current`.
    size: a model's own memory need (None: unknown, or remote).
    """
    order = list(cascade)
    if current in order:
        i = order.index(current)
        candidates = order[i + 1:] + list(reversed(order[:i]))
        after = set(order[i + 1:])
    else:
        candidates, after = order, set(order)
    limit = size(current)

    def keep(model_id: str) -> bool:
        need = size(model_id)
        if smaller_only:
            return limit is not None and need is not None and need < limit
        if model_id in after:
            return True
        return limit is not None and need is not None and need <= limit

    return [m for m in candidates if m != current and keep(m)]


def effective_cascade(fallback_cascade: Sequence[str], local_tier: Sequence[str],
                      remote_id: str = "remote") -> tuple[str, ...]:
    """The configured cascade with the local tier (models built on this machine, such as the demo
    models) placed before the remote endpoint, so a machine with only demo models still falls back
    from one demo model to the other."""
    out = [m for m in fallback_cascade if m != remote_id]
    out += [m for m in local_tier if m not in out]
    if remote_id in fallback_cascade:
        out.append(remote_id)
    return tuple(out)
