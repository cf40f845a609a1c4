"""The main window: tabs for the monitor charts, models, switch history, playground and events."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import QLabel, QMainWindow, QTabWidget

from core.paths import resource
from gui.charts import ChartPanel
from gui.events_panel import EventsPanel
from gui.history_panel import HistoryPanel
from gui.model_switcher import ModelSwitcherPanel
from gui.playground import PlaygroundPanel


class MainWindow(QMainWindow):
    """Receives its panels ready-made (constructor injection); closing asks for an async
    shutdown (`shutdown_requested`) and closes for real on `finish_close()`."""

    shutdown_requested = Signal()

    def __init__(self, charts: ChartPanel, models: ModelSwitcherPanel, history: HistoryPanel,
                 playground: PlaygroundPanel, events: EventsPanel,
                 settings: QSettings | None = None, title_suffix: str = "") -> None:
        super().__init__()
        self.setWindowTitle("vrampilot" + title_suffix)
        self.setWindowIcon(QIcon(str(resource("icons", "vrampilot.svg"))))
        self.charts = charts
        self.models = models
        self.history = history
        self.playground = playground
        self.events = events
        self._closing = False
        self._closed = False
        self._settings = settings

        self.tabs = QTabWidget()
        self.tabs.addTab(charts, "Monitor")
        self.tabs.addTab(models, "Models")
        self.tabs.addTab(history, "Switch history")
        self.tabs.addTab(playground, "Playground")
        self.tabs.addTab(events, "Events")
        self.setCentralWidget(self.tabs)
        self.switch_status = QLabel("")
        self.model_status = QLabel("no model loaded")
        self.statusBar().addWidget(self.switch_status, 1)
        self.statusBar().addPermanentWidget(self.model_status)
        # The local OpenAI-compatible API: off by default; the controller starts and stops it.
        self.serve_action = QAction("Serve the local &API", self)
        self.serve_action.setCheckable(True)
        self.menuBar().addMenu("&Server").addAction(self.serve_action)
        self.api_status = QLabel("API off")
        self.statusBar().addPermanentWidget(self.api_status)
        self.resize(1280, 860)
        self._restore()
        # Ctrl+Q quits like the close button, SIGTERM and SIGINT (AppController).
        # Spelled out: the platform's standard Quit key is unset on some (offscreen, plain X11).
        QShortcut(QKeySequence("Ctrl+Q"), self, self.close)

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
        self._settings.sync()  # written now: the process ends with os._exit (core.process_exit)

    def set_model_status(self, text: str) -> None:
        self.model_status.setText(text)

    def set_api_status(self, text: str) -> None:
        self.api_status.setText(text)

    def set_switch_status(self, text: str) -> None:
        self.switch_status.setText(text)

    @property
    def closing(self) -> bool:
        return self._closing

    def closeEvent(self, event: QCloseEvent) -> None:
        """First close: ask for the async shutdown; close for real when it is done."""
        if self._closed:
            event.accept()
            return
        event.ignore()
        if self._closing:
            return
        self._closing = True
        self._save()
        # Gone from the screen at once; the shutdown (up to 3 s) goes on behind.
        self.hide()
        self.shutdown_requested.emit()

    def finish_close(self) -> None:
        self._closed = True
        self.close()
