"""The Events tab: alerts (threshold crossings, throttling), automatic actions, switches and
errors, with time and values; the alert policy switch (act / advise only); tray notices."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from PySide6.QtCore import Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from core.facade import GIB, AlertEvent, StateChange, SwitchEvent, SwitchPhase

POLICIES = (("Act: switch or limit automatically", "act"),
            ("Advise only: never change the model", "advise"))


def format_value(metric: str, value: float) -> str:
    if metric.endswith("_bytes"):
        return f"{value / GIB:.2f} GiB"
    if metric.endswith("_c"):
        return f"{value:.0f} °C"
    if metric.endswith("_w"):
        return f"{value:.0f} W"
    if metric.endswith(("_fraction", "usage")):
        return f"{value:.0%}" if value <= 1.0 else f"{value:.2f}"
    return f"{value:g}"


def format_alert(e: AlertEvent) -> str:
    """One alert change for people: what, how bad, the reading and the line it crossed."""
    if e.kind == "thermal_throttle":  # a yes/no reading: its reasons are logged by name apart
        gpu = e.metric.split(".", 1)[0]
        if e.change == "ended":
            return f"{gpu} thermal throttling alert ended"
        return f"{gpu} thermal throttling {e.level} ({e.change}): the clocks are held down"
    if e.change == "ended":
        return f"{e.kind} alert ended ({e.metric} = {format_value(e.metric, e.value)})"
    return (f"{e.kind} {e.level} ({e.change}): {e.metric} = {format_value(e.metric, e.value)}, "
            f"line {format_value(e.metric, e.threshold)}")


def format_switch(e: SwitchEvent) -> tuple[str, str] | None:
    """The switch events worth a log line (phase starts are shown by the progress bar)."""
    if e.phase == StateChange.ADVICE:
        return "advice", e.message
    if e.phase == StateChange.CRASHED:
        return "error", e.message
    if e.phase == StateChange.UNLOADED:
        return "action", e.message
    if e.phase == SwitchPhase.READY:
        return "switch", f"{e.from_model or '(none)'} → {e.target} ready in {e.elapsed_s:.1f} s" \
            f" ({e.reason})"
    if e.phase == SwitchPhase.FAILED:
        return "error", f"switch to {e.target} failed: {e.error or e.message}"
    if e.phase == SwitchPhase.CANCELLED:
        return "switch", f"switch to {e.target} cancelled"
    if e.phase == SwitchPhase.FALLBACK:
        return "warning", f"fallback: {e.message}"
    if e.phase == SwitchPhase.PLANNING and e.attempt == 1:
        return "switch", f"switching {e.from_model or '(none)'} → {e.target} ({e.reason})"
    return None


class EventLog(QPlainTextEdit):
    """Append-only log with time stamps; keeps the last 5000 lines."""

    line_added = Signal(str, str)  # level, text

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)

    def add(self, level: str, text: str) -> None:
        self.appendPlainText(f"{time.strftime('%H:%M:%S')}  {level.upper():8s} {text}")
        self.line_added.emit(level, text)


class TrayNotifier:
    """A system-tray icon that pops up critical alerts (only where a tray exists)."""

    def __init__(self, icon: QIcon, tray: QSystemTrayIcon | None = None) -> None:
        """tray: the app's tray icon to pop up from (gui/tray.py), else one of its own."""
        self.tray: QSystemTrayIcon | None = tray
        self._own = tray is None
        self.shown: list[str] = []
        if tray is None and QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(icon)
            self.tray.setToolTip("vrampilot")
            self.tray.show()

    def notify(self, title: str, text: str) -> None:
        self.shown.append(f"{title}: {text}")
        if self.tray is not None:
            self.tray.showMessage(title, text, QSystemTrayIcon.MessageIcon.Critical, 8000)

    def close(self) -> None:
        if self.tray is not None and self._own:
            self.tray.hide()
            self.tray.deleteLater()
        self.tray = None


class EventsPanel(QWidget):
    """The log, fed by the bridge's signals; the policy box calls `set_policy` on change."""

    def __init__(self, policy: str, set_policy: Callable[[str], None],
                 notifier: TrayNotifier | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._set_policy = set_policy
        self.notifier = notifier
        self.event_log = EventLog()
        self.policy = QComboBox()
        for label, value in POLICIES:
            self.policy.addItem(label, value)
        self.policy.setCurrentIndex(0 if policy == "act" else 1)
        self.policy.currentIndexChanged.connect(self._policy_changed)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.event_log.clear)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("On critical alerts:"))
        bar.addWidget(self.policy)
        bar.addStretch(1)
        bar.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.event_log, 1)

    def add(self, level: str, text: str) -> None:
        self.event_log.add(level, text)

    def on_alerts(self, events: Sequence[AlertEvent]) -> None:
        for e in events:
            level = "info" if e.change == "ended" else e.level
            self.add(level, format_alert(e))
            if e.level == "critical" and e.change != "ended" and self.notifier is not None:
                self.notifier.notify(f"vrampilot: {e.kind} critical", format_alert(e))

    def on_switch_event(self, event: SwitchEvent) -> None:
        line = format_switch(event)
        if line is not None:
            self.add(*line)

    def _policy_changed(self, _index: int) -> None:
        value = str(self.policy.currentData())
        try:
            self._set_policy(value)
        except Exception as exc:  # noqa: BLE001 - shown; the box stays as the user left it
            self.add("error", f"changing the alert policy failed: {exc}")
            return
        self.add("info", f"alert policy: {value}")
