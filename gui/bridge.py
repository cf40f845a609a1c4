"""QObjects that carry core callbacks (from any thread) into Qt signals on the GUI thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QObject, Signal


class CoreBridge(QObject):
    """Typed signals for core events. Emitting from a worker thread is safe: Qt queues the
    delivery to the receiver's thread, so widgets are only touched on the GUI thread."""

    alerts = Signal(object)  # list[core.telemetry.alerts.AlertEvent]
    switch_event = Signal(object)  # core.manager.events.SwitchEvent
    event_line = Signal(str, str)  # level, text: a line for the Events tab

    def on_sample(self, _sample: Any, alert_events: Sequence[Any] = ()) -> None:
        """Sampler subscriber: runs on the sampler thread, so it only emits (queued)."""
        if alert_events:
            self.alerts.emit(list(alert_events))

    def on_switch_event(self, event: Any) -> None:
        """Manager subscriber (event-loop thread; a signal keeps delivery uniform)."""
        self.switch_event.emit(event)

    def on_event_line(self, level: str, text: str) -> None:
        self.event_line.emit(level, text)
