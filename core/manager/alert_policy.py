"""Reacting to hardware alerts: switch smaller, or first lower the engine's concurrency.

From the decision record: VRAM critical -> switch to a smaller model at once; thermal critical ->
first lower how many requests the engine gets at once, then, if it persists for
`thermal_persist_seconds`, switch smaller; power critical -> switch smaller. A cooldown after each
alert-driven switch prevents flapping. With policy "advise", nothing is changed: advice events only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.manager.events import SwitchEvent, SwitchPhase
from core.manager.manager import ModelManager
from core.telemetry.alerts import AlertEvent
from core.telemetry.config import AlertAction, HardwareMonitoring

THERMAL_KINDS = frozenset({"temperature", "thermal_throttle"})
# The concurrency the engine is limited to while it is too hot.
THERMAL_MAX_CONCURRENT = 1


@dataclass(frozen=True)
class AlertReaction:
    """What the policy decided for the alerts active now.

    action: "switch_smaller" | "limit_concurrency" | "restore_concurrency" | "cooldown" | "none";
    applied: False in advise-only mode (or when there was nothing to do).
    """

    action: str
    kind: str
    reason: str
    target: str | None = None
    applied: bool = False


class AlertReactor:
    """Keeps the set of critical alerts and reacts to it through the manager."""

    def __init__(self, manager: ModelManager, monitoring: HardwareMonitoring, *,
                 thermal_persist_s: float | None = None, cooldown_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.monitoring = monitoring
        s = manager.switching
        self.thermal_persist_s = (s.thermal_persist_seconds if thermal_persist_s is None
                                  else thermal_persist_s)
        self.cooldown_s = s.cooldown_seconds if cooldown_s is None else cooldown_s
        self._clock = clock
        self._critical: dict[str, float] = {}  # kind -> when it became critical (our clock)
        self._last_switch: float | None = None
        self._limited = False

    @property
    def advise_only(self) -> bool:
        return self.monitoring.policy == "advise"

    async def handle(self, events: Sequence[AlertEvent]) -> list[AlertReaction]:
        """Take in alert changes, then react to the alerts active now."""
        now = self._clock()
        for e in events:
            if e.active and e.level == "critical":
                self._critical.setdefault(e.kind, now)
            else:
                self._critical.pop(e.kind, None)
        return await self.tick()

    async def tick(self) -> list[AlertReaction]:
        """React to the critical alerts still active (call on every sample: persistence counts)."""
        now = self._clock()
        reactions: list[AlertReaction] = []
        if not any(k in THERMAL_KINDS for k in self._critical) and self._limited:
            reactions.append(await self._limit(None, "thermal alert ended: concurrency restored",
                                               "restore_concurrency"))
        for kind, since in sorted(self._critical.items()):
            action = self.monitoring.action_for(kind)
            if action == AlertAction.NOTIFY or self.manager.active_model is None:
                continue
            if action == AlertAction.GRADUAL:
                if not self._limited:
                    reactions.append(await self._limit(
                        THERMAL_MAX_CONCURRENT, f"{kind} critical: at most "
                        f"{THERMAL_MAX_CONCURRENT} request at a time", "limit_concurrency"))
                    continue
                if now - since < self.thermal_persist_s:
                    continue
                why = f"{kind} critical for {now - since:.0f} s despite lower concurrency"
            else:
                why = f"{kind} critical"
            reactions.append(await self._switch_smaller(kind, why, now))
        return reactions

    async def _limit(self, limit: int | None, reason: str, action: str) -> AlertReaction:
        if self.advise_only:
            self._advise(reason)
            return AlertReaction(action, "temperature", reason)
        await self.manager.set_max_concurrent(limit)
        self._limited = limit is not None
        return AlertReaction(action, "temperature", reason, applied=True)

    async def _switch_smaller(self, kind: str, why: str, now: float) -> AlertReaction:
        if self._last_switch is not None and now - self._last_switch < self.cooldown_s:
            left = self.cooldown_s - (now - self._last_switch)
            return AlertReaction("cooldown", kind, f"{why}; cooling down ({left:.0f} s left)")
        active = self.manager.active_model
        target = self.smaller_model()
        if active is None or target is None:
            reason = f"{why}; no smaller model than {active} is available"
            self._advise(reason)
            return AlertReaction("none", kind, reason)
        reason = f"{why}: switch {active} -> {target}"
        if self.advise_only:
            self._advise(f"{reason} (advise only)")
            return AlertReaction("switch_smaller", kind, reason, target)
        self._last_switch = now
        await self.manager.switch_to(target, reason="alert")
        return AlertReaction("switch_smaller", kind, reason, target, applied=True)

    def smaller_model(self) -> str | None:
        """The first cascade model after the active one that needs strictly less memory."""
        active = self.manager.active_model
        if active is None:
            return None
        need = self.manager.needed_bytes(active)
        cascade = list(self.manager.cascade)
        after = cascade[cascade.index(active) + 1:] if active in cascade else cascade
        for model_id in after:
            entry = self.manager.catalog.get(model_id)
            if not self.manager.is_usable(entry) or entry.is_remote:
                continue
            other = self.manager.needed_bytes(model_id)
            if need is None or (other is not None and other < need):
                return model_id
        return None

    def _advise(self, message: str) -> None:
        active = self.manager.active_model or ""
        self.manager.emit(SwitchEvent(0, SwitchPhase.ADVICE, active, active, "alert", 0.0,
                                      message=message))
