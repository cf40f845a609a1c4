"""The decision record's `monitoring_config.yaml` names, read as aliases of ours.

ADR-029 spells the thresholds flat (`temperature_critical: 87`) where we nest them beside their
hysteresis and minimum duration (`temperature: {critical: 87}`), and names a few other keys and
one alert action differently. A user file written with the record's names loads as written: the
loader renames them here and reports every rename in one warning, so the user can move to ours.
An unknown key stays unknown: it is left in place for the settings model to reject.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.config_loading import ConfigError

Path_ = tuple[str, ...]

# The record's key -> ours (full key paths from the top of the file).
RENAMED_KEYS: dict[Path_, Path_] = {
    **{("hardware_monitoring", "thresholds", f"{metric}_{level}"):
       ("hardware_monitoring", "thresholds", metric, level)
       for metric in ("vram_usage", "temperature", "power") for level in ("warning", "critical")},
    ("model_switching", "max_switch_time_seconds"): ("model_switching", "switch_timeout_seconds"),
    ("model_switching", "switch_failure_retries"): ("model_switching", "max_retries"),
    ("performance_tracking", "track_model_efficiency"):
        ("performance_tracking", "track_tokens_per_s"),
    ("performance_tracking", "track_task_routing_accuracy"):
        ("performance_tracking", "track_routing"),
}

# The record's alert action "immediate", per alert kind, as its comments describe it:
# vram_overflow "Immediate model switching", power_limit "Switch to smaller model".
IMMEDIATE_ACTION = {"vram_overflow": "switch_immediately", "power_limit": "switch_smaller"}
IMMEDIATE_DEFAULT = "switch_immediately"

# Record keys that state what vrampilot always does: accepted with this one value, then dropped.
FIXED_KEYS: dict[Path_, tuple[str, str]] = {
    ("model_switching", "fallback_strategy"):
        ("cascade", "what vrampilot always does, in the order of model_switching.fallback_cascade"),
}


def _dotted(path: Path_) -> str:
    return ".".join(path)


def _parent(data: dict[str, Any], path: Path_, *, create: bool) -> dict[str, Any] | None:
    """The mapping that holds path's last key (created on the way when create), else None."""
    node: Any = data
    for part in path[:-1]:
        if not isinstance(node, dict):
            return None
        if part not in node and create:
            node[part] = {}
        node = node.get(part)
    return node if isinstance(node, dict) else None


@dataclass(frozen=True)
class Translated:
    """A user file's data in our names, and what was renamed on the way."""

    data: dict[str, Any]
    notes: tuple[str, ...] = ()  # one per rename, as the warning lists them
    origin: Mapping[str, str] = field(default_factory=dict)  # our dotted key -> the record's

    def warning(self, label: str) -> str | None:
        """The one warning for a file that used the record's names (None: it used ours)."""
        if not self.notes:
            return None
        return (f"{label}: read the decision record's names as ours "
                f"(rename them to silence this): " + "; ".join(self.notes))


def translate(user: Mapping[str, Any], label: str) -> Translated:
    """The user's data with the record's names replaced by ours.

    A key given both ways is a ConfigError naming label and the record's key, and so is a fixed
    key with another value than the one we do.
    """
    data = copy.deepcopy(dict(user))
    notes: list[str] = []
    origin: dict[str, str] = {}
    for old, new in RENAMED_KEYS.items():
        holder = _parent(data, old, create=False)
        if holder is None or old[-1] not in holder:
            continue
        target = _parent(data, new, create=True)
        if target is None:  # ours is there but not a mapping: the settings model says so
            continue
        if new[-1] in target:
            raise ConfigError(label, _dotted(old), f"given twice: under the decision record's "
                              f"name and as {_dotted(new)}; keep one")
        target[new[-1]] = holder.pop(old[-1])
        notes.append(f"{_dotted(old)} -> {_dotted(new)}")
        origin[_dotted(new)] = _dotted(old)
    monitoring = data.get("hardware_monitoring")
    alerts = monitoring.get("alerts") if isinstance(monitoring, dict) else None
    for kind, action in (alerts.items() if isinstance(alerts, dict) else ()):
        if action == "immediate":
            ours = IMMEDIATE_ACTION.get(str(kind), IMMEDIATE_DEFAULT)
            alerts[kind] = ours  # type: ignore[index]
            notes.append(f"hardware_monitoring.alerts.{kind}: immediate -> {ours}")
    for path, (only, meaning) in FIXED_KEYS.items():
        holder = _parent(data, path, create=False)
        if holder is None or path[-1] not in holder:
            continue
        value = holder.pop(path[-1])
        if value != only:
            raise ConfigError(label, _dotted(path), f"expected {only!r} ({meaning}), "
                              f"got {value!r}")
        notes.append(f"{_dotted(path)}: {only} is {meaning} (key dropped)")
    return Translated(data, tuple(notes), origin)
