"""The main window: tabs for the monitor charts, the playground and the event log."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from PySide6.QtCore import QSettings, Signal
from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import QLabel, QMainWindow, QPlainTextEdit, QTabWidget, QWidget

from core.paths import resource
from gui.charts import ChartPanel
from gui.playground import PlaygroundPanel


class EventLog(QPlainTextEdit):
    """Append-only log of alerts, switches and errors, with time stamps."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)

    def add(self, level: str, text: str) -> None:
        self.appendPlainText(f"{time.strftime('%H:%M:%S')}  {level.upper():8s} {text}")


class MainWindow(QMainWindow):
    """Receives its panels ready-made (constructor injection) and wires them in one place."""

    shutdown_requested = Signal()

    def __init__(self, charts: ChartPanel, playground: PlaygroundPanel,
                 on_close: Callable[[], Awaitable[None]] | None = None,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("vrampilot")
        self.setWindowIcon(QIcon(str(resource("icons", "vrampilot.svg"))))
        self.charts = charts
        self.playground = playground
        self.log = EventLog()
        self._on_close = on_close
        self._closing = False
        self._closed = False
        self._settings = settings

        self.tabs = QTabWidget()
        self.tabs.addTab(charts, "Monitor")
        self.tabs.addTab(playground, "Playground")
        self.tabs.addTab(self.log, "Events")
        self.setCentralWidget(self.tabs)
        self.model_status = QLabel("no model loaded")
        self.statusBar().addPermanentWidget(self.model_status)
        self.resize(1200, 800)
        self._connect_signals()
        self._restore()

    def _connect_signals(self) -> None:
        self.playground.log.connect(self.log.add)

    def _restore(self) -> None:
        if self._settings is None:
            return
        geometry = self._settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        tab = self._settings.value("window/tab")
        if tab is not None:
            self.tabs.setCurrentIndex(int(tab))

    def _save(self) -> None:
        if self._settings is None:
            return
        self._settings.setValue("window/geometry", self.saveGeometry())
        self._settings.setValue("window/tab", self.tabs.currentIndex())

    def set_model_status(self, text: str) -> None:
        self.model_status.setText(text)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """First close: run the async shutdown, then close for real when it is done."""
        if self._closed or self._on_close is None:
            self._save()
            event.accept()
            return
        event.ignore()
        if self._closing:
            return
        self._closing = True
        self._save()
        self.set_model_status("shutting down…")
        self.shutdown_requested.emit()

    def finish_close(self) -> None:
        self._closed = True
        self.close()
