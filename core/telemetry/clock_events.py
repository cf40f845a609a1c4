"""NVML's clock-event (throttle) reasons: their bits (nvml.h) and their names for people.

A snapshot carries the short names (``SwThermal``); the monitor, the Events log and the tray say
what they mean ("thermal slowdown").
"""

from __future__ import annotations

# nvmlClocksEventReason* from nvml.h (the same bits as the deprecated ClocksThrottleReason*).
CLOCK_EVENT_BITS: tuple[tuple[int, str], ...] = (
    (0x1, "Idle"),
    (0x2, "AppClocksSetting"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermal"),
    (0x40, "HwThermal"),
    (0x80, "HwPowerBrake"),
    (0x100, "DisplayClockSetting"),
)

REASON_NAMES: dict[str, str] = {
    "Idle": "idle",
    "AppClocksSetting": "application clocks setting",
    "SwPowerCap": "power cap",
    "HwSlowdown": "HW slowdown",
    "SyncBoost": "sync boost",
    "SwThermal": "thermal slowdown",
    "HwThermal": "HW thermal slowdown",
    "HwPowerBrake": "HW power brake",
    "DisplayClockSetting": "display clock setting",
}

# Reasons that hold the clocks down for a reason a user would want to know about; Idle, the
# application-clocks setting and sync boost are not news (SwPowerCap is routine on laptops but
# is still shown: it is why the clocks are below their maximum).
NOTEWORTHY = frozenset({"SwPowerCap", "HwSlowdown", "SwThermal", "HwThermal", "HwPowerBrake"})


def decode(mask: int) -> tuple[str, ...]:
    """Names of the reason bits set in mask (unknown bits are ignored)."""
    return tuple(name for bit, name in CLOCK_EVENT_BITS if mask & bit)


def reason_name(event: str) -> str:
    return REASON_NAMES.get(event, event)


def describe(events: tuple[str, ...] | None) -> str:
    """One phrase for a snapshot's reasons: "thermal slowdown, power cap", "none",
    or "not reported"."""
    if events is None:
        return "not reported"
    shown = [reason_name(e) for e in events if e in NOTEWORTHY]
    return ", ".join(shown) if shown else "none"


def changes(before: tuple[str, ...] | None,
            after: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Noteworthy reasons that started and ended between two snapshots."""
    old = NOTEWORTHY.intersection(before or ())
    new = NOTEWORTHY.intersection(after or ())
    order = [name for _bit, name in CLOCK_EVENT_BITS]
    return (tuple(e for e in order if e in new - old), tuple(e for e in order if e in old - new))
