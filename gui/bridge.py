"""QObjects that carry core callbacks (from any thread) into Qt signals on the GUI thread."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal


class CoreBridge(QObject):
    """Typed signals for core events. Emitting from a worker thread is safe: Qt queues the
    delivery to the receiver's thread, so widgets are only touched on the GUI thread."""

    sample = Signal(object)  # core.telemetry.snapshot.Sample
    alerts = Signal(object)  # list of alert events
    switch_event = Signal(object)  # manager switch events
    log = Signal(str, str)  # level, text

    def on_sample(self, sample: Any, alert_events: Any = ()) -> None:
        """Sampler subscriber: runs on the sampler thread."""
        self.sample.emit(sample)
        if alert_events:
            self.alerts.emit(list(alert_events))

    def on_switch_event(self, event: Any) -> None:
        self.switch_event.emit(event)
