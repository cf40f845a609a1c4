"""Typed monitoring, switching and tracking settings: resources/monitoring.yaml plus a user file.

The structure is the decision record's: ``hardware_monitoring:``, ``model_switching:``,
``performance_tracking:``. A user file (``--config``) overrides only the keys it names; other
top-level keys in it (``models:``, ``router:`` ...) belong to other loaders and are ignored here.
The record's own key names are read as aliases of ours, with one warning (record_keys.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.config_loading import ConfigError, deep_merge, describe_error, read_yaml
from core.paths import resource
from core.telemetry import record_keys

logger = logging.getLogger(__name__)


def log_warning(text: str) -> None:
    """A configuration warning on stderr (logging's last-resort handler when none is set up)."""
    logger.warning("vrampilot: warning: %s", text)

SECTIONS = ("hardware_monitoring", "model_switching", "performance_tracking")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelThreshold(_Frozen):
    """Warning and critical levels of one metric, with hysteresis and a minimum duration."""

    warning: float
    critical: float
    hysteresis: float = Field(default=0.0, ge=0)
    min_duration_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LevelThreshold:
        if self.warning > self.critical:
            raise ValueError(
                f"warning ({self.warning:g}) is above critical ({self.critical:g}); "
                "expected warning <= critical"
            )
        return self


class FractionThreshold(LevelThreshold):
    """Levels that are fractions of a total (0..1)."""

    warning: float = Field(gt=0, le=1)
    critical: float = Field(gt=0, le=1)
    hysteresis: float = Field(default=0.0, ge=0, lt=1)


class ThrottleThreshold(_Frozen):
    """Thermal throttling reported by the clock-event reasons."""

    level: Literal["warning", "critical"] = "warning"
    min_duration_seconds: float = Field(default=2.0, ge=0)


class Thresholds(_Frozen):
    vram_usage: FractionThreshold
    temperature: LevelThreshold
    power: LevelThreshold
    thermal_throttle: ThrottleThreshold = ThrottleThreshold()


class AlertAction(StrEnum):
    """What the manager does about an alert."""

    SWITCH_IMMEDIATELY = "switch_immediately"  # unload now, pick a model that fits
    GRADUAL = "gradual"  # reduce batch / concurrency first, step down only if it persists
    SWITCH_SMALLER = "switch_smaller"  # move to the next smaller model
    SWITCH_REMOTE = "switch_remote"  # hand the work to the remote endpoint
    NOTIFY = "notify"  # only report it


class AlertPolicy(StrEnum):
    """Whether the alert actions are carried out."""

    ACT = "act"  # the manager switches models or lowers concurrency
    ADVISE = "advise"  # it only says what it would do


# vram_overflow: VRAM use; temperature: the temperature thresholds; thermal_throttle: the
# clock-event reasons; power_limit: power draw; gpu_lost: the GPU fell off the bus.
AlertKind = Literal["vram_overflow", "temperature", "thermal_throttle", "power_limit", "gpu_lost"]


class HardwareMonitoring(_Frozen):
    interval_seconds: float = Field(default=0.5, ge=0.1, le=60)
    history_seconds: float = Field(default=3600, gt=0, le=7 * 24 * 3600)
    process_poll_every: int = Field(default=10, ge=1)
    thresholds: Thresholds
    alerts: dict[AlertKind, AlertAction] = Field(default_factory=dict)
    policy: AlertPolicy = AlertPolicy.ACT

    def action_for(self, kind: str) -> AlertAction:
        """The configured action for an alert kind; NOTIFY when none is configured."""
        return self.alerts.get(kind, AlertAction.NOTIFY)  # type: ignore[call-overload]

    @property
    def history_capacity(self) -> int:
        """Ring-buffer rows for history_seconds at interval_seconds."""
        return max(1, round(self.history_seconds / self.interval_seconds))


class ModelSwitching(_Frozen):
    switch_timeout_seconds: float = Field(default=90, gt=0)
    max_retries: int = Field(default=3, ge=0)
    vram_buffer_gb: float = Field(default=1.0, ge=0)
    max_temperature_c: float = 85
    max_power_w: float = Field(default=120, gt=0)
    memory_poll_interval_seconds: float = Field(default=0.25, gt=0)
    memory_return_timeout_seconds: float = Field(default=30, gt=0)
    thermal_persist_seconds: float = Field(default=60, ge=0)
    cooldown_seconds: float = Field(default=120, ge=0)
    fallback_cascade: tuple[str, ...] = (
        "qwen3-30b-a3b-instruct-2507",
        "qwen3-14b",
        "qwen3-8b",
        "qwen3-4b-instruct-2507",
        "remote",
    )


class PerformanceTracking(_Frozen):
    track_switch_times: bool = True
    track_tokens_per_s: bool = True
    track_routing: bool = True


class MonitoringConfig(_Frozen):
    """The three sections this loader owns."""

    hardware_monitoring: HardwareMonitoring
    model_switching: ModelSwitching
    performance_tracking: PerformanceTracking


def default_path() -> Path:
    return resource("monitoring.yaml")


def load_monitoring_config(
    user_data: Mapping[str, Any] | None = None,
    user_path: Path | str | None = None,
    *,
    warn: Callable[[str], None] = log_warning,
) -> MonitoringConfig:
    """Shipped defaults deep-merged with the user's sections, validated as a whole.

    user_data is the parsed user file (read from user_path when not given); user_path names it
    in errors. An error names the file the offending key came from, the key, and what was expected.
    A file written with the decision record's key names loads, and `warn` gets one sentence
    listing the renames.
    """
    base_path = default_path()
    base = read_yaml(base_path)
    if user_data is None and user_path is not None:
        user_data = read_yaml(user_path)
    user_label = str(user_path) if user_path is not None else "<user config>"
    translated = record_keys.translate(user_data or {}, user_label)
    warning = translated.warning(user_label)
    if warning is not None:
        warn(warning)
    user: Mapping[str, Any] = translated.data
    merged: dict[str, Any] = {k: v for k, v in base.items() if k in SECTIONS}
    stray = sorted(set(base) - set(SECTIONS))
    if stray:
        expected = "unknown key; expected one of " + ", ".join(SECTIONS)
        raise ConfigError(base_path, stray[0], expected)
    for section in SECTIONS:
        if section not in user:
            continue
        value = user[section]
        if not isinstance(value, Mapping):
            raise ConfigError(user_label, section,
                              f"expected a mapping, got {type(value).__name__}")
        merged[section] = deep_merge(merged.get(section) or {}, value)
    try:
        return MonitoringConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        # pydantic marks a bad mapping key with a trailing "[key]" part: the key itself is the loc.
        loc = tuple(str(part) for part in err["loc"] if part != "[key]")
        where = user_label if _has_path(user, loc) else str(base_path)
        key = ".".join(loc)
        # A renamed key is named as the user wrote it.
        raise ConfigError(where, translated.origin.get(key, key), describe_error(err)) from None


def _has_path(data: Mapping[str, Any], loc: tuple[str, ...]) -> bool:
    """Whether the user mapping holds loc or a key under it (the offending key came from there)."""
    node: Any = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True



