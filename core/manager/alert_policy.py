"""Reacting to hardware alerts: step down to a smaller model, or first lower the concurrency.

The policy: VRAM critical -> switch to a smaller model at once, and with nothing smaller, unload
(an "emergency unload"); thermal ("gradual": the temperature alert and clock
throttling) -> step 1 lowers how many requests the engine gets at once, step 2, if it persists for
`thermal_persist_seconds` after step 1, steps down a model; power critical -> step down; GPU lost
-> hand the work to the remote endpoint when one is configured and the task is not private,
otherwise unload. A step-down is forced: it skips the temperature and
power gate that would refuse it in exactly these conditions, never the memory check. A cooldown
after each alert-driven switch prevents flapping. With policy "advise", nothing is changed:
advice events only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.manager.events import StateChange, SwitchEvent
from core.manager.manager import ModelManager
from core.telemetry.alerts import AlertEvent
from core.telemetry.config import AlertAction, AlertPolicy, HardwareMonitoring

THERMAL_KINDS = frozenset({"temperature", "thermal_throttle"})
# The concurrency the engine is limited to while it is too hot.
THERMAL_MAX_CONCURRENT = 1

logger = logging.getLogger(__name__)


class Reaction(StrEnum):
    """What the policy does about the alerts active now."""

    SWITCH_SMALLER = "switch_smaller"
    SWITCH_REMOTE = "switch_remote"
    UNLOAD = "unload"
    LIMIT_CONCURRENCY = "limit_concurrency"  # thermal step 1
    RESTORE_CONCURRENCY = "restore_concurrency"  # the thermal alert ended
    COOLDOWN = "cooldown"  # too soon after the last alert-driven switch
    NONE = "none"


@dataclass(frozen=True)
class AlertReaction:
    """What the policy decided for the alerts active now.

    action: what was done (or, advise-only, would be); applied: False in advise-only mode (or when
    there was nothing to do, or the switch failed).
    """

    action: Reaction
    kind: str
    reason: str
    target: str | None = None
    applied: bool = False


def acts_on(event: AlertEvent) -> bool:
    """Whether the policy reacts to this alert: critical levels, and clock throttling at the
    level it is configured to raise (throttling is itself the condition: it has one level)."""
    return event.active and (event.level == "critical" or event.kind == "thermal_throttle")


class AlertReactor:
    """Keeps the set of actionable alerts and reacts to it through the manager."""

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
        self._critical: dict[str, float] = {}  # kind -> when it became actionable (our clock)
        self._last_switch: float | None = None
        self._limited_at: float | None = None  # when step 1 (lower concurrency) was taken
        # Advice given (message -> when): in advise-only mode the policy walks its steps as if it
        # acted, and says each thing once per cooldown, not on every sample.
        self._advised: dict[str, float] = {}

    @property
    def advise_only(self) -> bool:
        return self.monitoring.policy == AlertPolicy.ADVISE

    async def handle(self, events: Sequence[AlertEvent]) -> list[AlertReaction]:
        """Take in alert changes, then react to the alerts active now."""
        now = self._clock()
        for e in events:
            if acts_on(e):
                self._critical.setdefault(e.kind, now)
            else:
                self._critical.pop(e.kind, None)
        return await self.tick()

    async def tick(self) -> list[AlertReaction]:
        """React to the alerts still active (call on every sample: persistence counts)."""
        now = self._clock()
        reactions: list[AlertReaction] = []
        if not any(k in THERMAL_KINDS for k in self._critical) and self._limited_at is not None:
            reactions.append(await self._limit(None, "thermal", "thermal alert ended: concurrency "
                                               "restored", Reaction.RESTORE_CONCURRENCY))
        stepped = False
        for kind, since in sorted(self._critical.items()):
            action = self.monitoring.action_for(kind)
            if action == AlertAction.NOTIFY or self.manager.active_model is None or stepped:
                continue
            if action == AlertAction.GRADUAL:
                if self._limited_at is None:
                    reactions.append(await self._limit(
                        THERMAL_MAX_CONCURRENT, kind, f"{kind}: step 1, at most "
                        f"{THERMAL_MAX_CONCURRENT} request at a time", Reaction.LIMIT_CONCURRENCY))
                    continue
                persisted = now - max(since, self._limited_at)
                if persisted < self.thermal_persist_s:
                    continue
                why = f"{kind}: step 2, still raised {persisted:.0f} s after lowering concurrency"
            elif action == AlertAction.SWITCH_REMOTE:
                reactions.append(await self._to_remote(kind))
                stepped = True
                continue
            else:
                why = f"{kind} critical"
            reaction = await self._switch_smaller(kind, why, now,
                                                  action == AlertAction.SWITCH_IMMEDIATELY)
            reactions.append(reaction)
            # One switch per tick, whatever raised it.
            stepped = reaction.action != Reaction.COOLDOWN
        return reactions

    async def _limit(self, limit: int | None, kind: str, reason: str,
                     action: Reaction) -> AlertReaction:
        if self.advise_only:
            self._limited_at = None if limit is None else self._clock()  # step 2 comes next
            self._advise(reason)
            return AlertReaction(action, kind, reason)
        await self.manager.set_max_concurrent(limit)
        self._limited_at = None if limit is None else self._clock()
        logger.warning("%s", reason)
        active = self.manager.active_model or ""
        self.manager.emit(SwitchEvent(0, StateChange.CONCURRENCY, active, active, "alert", 0.0,
                                      message=reason))
        return AlertReaction(action, kind, reason, applied=True)

    async def _switch_smaller(self, kind: str, why: str, now: float,
                              unload_if_none: bool) -> AlertReaction:
        if self._last_switch is not None and now - self._last_switch < self.cooldown_s:
            left = self.cooldown_s - (now - self._last_switch)
            return AlertReaction(Reaction.COOLDOWN, kind,
                                 f"{why}; cooling down ({left:.0f} s left)")
        active = self.manager.active_model
        target = self.manager.smaller_model()
        if active is None:
            return AlertReaction(Reaction.NONE, kind, why)
        if target is None:
            if unload_if_none:
                return await self._unload(kind, f"{why}; no smaller model than {active}")
            reason = f"{why}; no smaller model than {active} is available"
            self._advise(reason)
            return AlertReaction(Reaction.NONE, kind, reason)
        reason = f"{why}: switch {active} -> {target}"
        if self.advise_only:
            self._last_switch = now  # the cooldown spaces advice as it spaces switches
            self._advise(f"{reason} (advise only)")
            return AlertReaction(Reaction.SWITCH_SMALLER, kind, reason, target)
        self._last_switch = now
        logger.warning("%s (forced: the temperature/power gate is skipped)", reason)
        result = await self.manager.switch_to(target, reason="alert", force=True)
        if not result.ok:
            reason += " failed: " + "; ".join(result.errors)
        return AlertReaction(Reaction.SWITCH_SMALLER, kind, reason, result.active,
                             applied=result.ok)

    async def _to_remote(self, kind: str) -> AlertReaction:
        active = self.manager.active_model
        remote = next((e.id for e in self.manager.catalog
                       if e.is_remote and self.manager.is_usable(e)), None)
        if remote is None:
            return await self._unload(kind, f"{kind}: no remote endpoint is configured")
        if self.manager.active_private:
            return await self._unload(kind, f"{kind}: the task is private, so it is not sent "
                                            "to the remote endpoint")
        reason = f"{kind}: hand the work from {active} to the remote endpoint {remote}"
        if self.advise_only:
            self._advise(f"{reason} (advise only)")
            return AlertReaction(Reaction.SWITCH_REMOTE, kind, reason, remote)
        logger.warning("%s", reason)
        result = await self.manager.switch_to(remote, reason="alert", force=True)
        if not result.ok:
            reason += " failed: " + "; ".join(result.errors)
        return AlertReaction(Reaction.SWITCH_REMOTE, kind, reason, result.active, applied=result.ok)

    async def _unload(self, kind: str, why: str) -> AlertReaction:
        reason = f"{why}: unloading it"
        if self.advise_only:
            self._last_switch = self._clock()
            self._advise(f"{reason} (advise only)")
            return AlertReaction(Reaction.UNLOAD, kind, reason)
        self._last_switch = self._clock()
        took = await self.manager.emergency_unload(why)
        if took is not None:
            reason = f"{why}: unloaded in {took:.1f} s"
        return AlertReaction(Reaction.UNLOAD, kind, reason, applied=took is not None)

    def smaller_model(self) -> str | None:
        """The step-down target now (the manager decides: `ModelManager.smaller_model`)."""
        return self.manager.smaller_model()

    def _advise(self, message: str) -> None:
        now = self._clock()
        last = self._advised.get(message)
        if last is not None and now - last < self.cooldown_s:
            return
        # Only advice still within its cooldown is kept (step 2's text carries the seconds).
        self._advised = {m: t for m, t in self._advised.items() if now - t < self.cooldown_s}
        self._advised[message] = now
        active = self.manager.active_model or ""
        self.manager.emit(SwitchEvent(0, StateChange.ADVICE, active, active, "alert", 0.0,
                                      message=message))
