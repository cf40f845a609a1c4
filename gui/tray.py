"""The system-tray icon: the GPU temperature on the icon, the active model and VRAM in the
tooltip, and a menu to show or hide the window, switch to any model that fits, unload, and quit.

The menu exists even where there is no tray (offscreen, some desktops): the icon is only shown
where Qt finds a system tray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, QRect, Qt, QTimer
from PySide6.QtGui import QAction, QColor, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget

from core.facade import Sample

GIB = 1024**3


@dataclass(frozen=True)
class TrayModels:
    """What the tray needs from the models: the active one, those a switch would accept now,
    and the two actions (the Models tab's own, so progress and refusals show there)."""

    active: Callable[[], str | None]
    switchable: Callable[[], list[str]]
    switch: Callable[[str], object]
    unload: Callable[[], object]


def temperature_icon(base: QIcon, temperature_c: float | None) -> QIcon:
    """The app icon with the GPU temperature written over its lower half."""
    pixmap = base.pixmap(64, 64)
    if pixmap.isNull():
        pixmap = QPixmap(64, 64)
        pixmap.fill(QColor("#2c3e50"))
    if temperature_c is None:
        return QIcon(pixmap)
    painter = QPainter(pixmap)
    color = ("#e74c3c" if temperature_c >= 85 else "#f39c12" if temperature_c >= 75
             else "#2ecc71")
    painter.fillRect(QRect(0, 34, 64, 30), QColor(0, 0, 0, 190))
    painter.setPen(QColor(color))
    font = QFont()
    font.setPixelSize(26)
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(QRect(0, 34, 64, 30), Qt.AlignmentFlag.AlignCenter, f"{temperature_c:.0f}")
    painter.end()
    return QIcon(pixmap)


def tooltip_text(model: str | None, sample: Sample | None) -> str:
    lines = [f"vrampilot: {model or 'no model loaded'}"]
    for gpu in sample.gpus if sample is not None else ():
        vram = ("VRAM not reported" if gpu.vram_used_bytes is None or not gpu.vram_total_bytes
                else f"VRAM {gpu.vram_used_bytes / GIB:.1f} / {gpu.vram_total_bytes / GIB:.0f} GiB")
        temp = "" if gpu.temperature_c is None else f", {gpu.temperature_c:.0f} °C"
        lines.append(f"GPU {gpu.index}: {vram}{temp}")
    return "\n".join(lines)


class AppTray(QObject):
    """The tray icon and its menu, refreshed from the sampler's latest sample every 2 s."""

    def __init__(self, icon: QIcon, window: QWidget, models: TrayModels,
                 latest: Callable[[], Sample | None], quit_app: Callable[[], object],
                 parent: QObject | None = None, show_icon: bool = True) -> None:
        super().__init__(parent)
        self._base_icon = icon
        self._window = window
        self._models = models
        self._latest = latest
        self._shown_temperature: int | None = None
        self.menu = QMenu()
        self.show_action = self.menu.addAction("Hide window")
        self.show_action.triggered.connect(lambda _c=False: self.toggle_window())
        self.menu.addSeparator()
        self.model_action = self.menu.addAction("no model loaded")
        self.model_action.setEnabled(False)
        self.switch_menu = self.menu.addMenu("Switch to")
        self.switch_menu.aboutToShow.connect(self.fill_switch_menu)
        self.unload_action = self.menu.addAction("Unload the model")
        self.unload_action.triggered.connect(lambda _c=False: self._models.unload())
        self.menu.addSeparator()
        self.quit_action = self.menu.addAction("Quit")
        self.quit_action.triggered.connect(lambda _c=False: quit_app())
        self.menu.aboutToShow.connect(self.refresh)

        self.icon: QSystemTrayIcon | None = None
        if show_icon and QSystemTrayIcon.isSystemTrayAvailable():
            self.icon = QSystemTrayIcon(icon)
            self.icon.setContextMenu(self.menu)
            self.icon.activated.connect(self._activated)
            self.icon.show()
        self.timer = QTimer(self)
        self.timer.setObjectName("tray-status")
        self.timer.setInterval(2000)
        self.timer.timeout.connect(self.refresh)

    @property
    def available(self) -> bool:
        return self.icon is not None

    def start(self) -> None:
        self.refresh()
        self.timer.start()

    def refresh(self) -> None:
        """Tooltip, icon temperature and the menu's labels from the current state."""
        model = self._models.active()
        sample = self._latest()
        self.model_action.setText(f"Model: {model}" if model else "no model loaded")
        self.unload_action.setEnabled(model is not None)
        self.show_action.setText("Hide window" if self._window.isVisible() else "Show window")
        self.tooltip = tooltip_text(model, sample)
        if self.icon is not None:
            self.icon.setToolTip(self.tooltip)
            gpu = sample.gpus[0] if sample is not None and sample.gpus else None
            temperature = (None if gpu is None or gpu.temperature_c is None
                           else round(gpu.temperature_c))
            if temperature != self._shown_temperature:  # repaint the icon only on a change
                self._shown_temperature = temperature
                self.icon.setIcon(temperature_icon(self._base_icon, temperature))

    def fill_switch_menu(self) -> None:
        """Every model a switch would accept now (fits, on disk); the active one checked."""
        self.switch_menu.clear()
        active = self._models.active()
        names = self._models.switchable()
        if active is not None and active not in names:
            names = [active, *names]
        if not names:
            none = self.switch_menu.addAction("no model fits now")
            none.setEnabled(False)
        for name in names:
            action: QAction = self.switch_menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(name == active)
            action.setEnabled(name != active)
            action.triggered.connect(lambda _c=False, n=name: self._models.switch(n))

    def toggle_window(self) -> None:
        if self._window.isVisible():
            self._window.hide()
        else:
            self.show_window()
        self.refresh()

    def show_window(self) -> None:
        if self._window.isMinimized():
            self._window.showNormal()
        else:
            self._window.show()
        self._window.raise_()
        self._window.activateWindow()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a left click
            self.toggle_window()

    def close(self) -> None:
        self.timer.stop()
        if self.icon is not None:
            self.icon.hide()
            self.icon.deleteLater()
            self.icon = None
