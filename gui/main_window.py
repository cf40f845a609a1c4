"""The main window: tabs for the monitor charts, models, switch history, playground and events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence, QPaintEvent
from PySide6.QtWidgets import QLabel, QMainWindow, QMenu, QMessageBox, QTabWidget, QWidget

from core.facade import resource
from gui.charts import ChartPanel
from gui.events_panel import EventsPanel
from gui.history_panel import HistoryPanel
from gui.model_switcher import ModelSwitcherPanel
from gui.playground import PlaygroundPanel


class MainWindow(QMainWindow):
    """Receives its panels ready-made (constructor injection); closing asks for an async
    shutdown (`shutdown_requested`) and closes for real on `finish_close()`."""

    shutdown_requested = Signal()
    # Once, when the window's first frame is on screen: the app starts its slow work then.
    first_painted = Signal()

    def __init__(self, charts: ChartPanel, models: ModelSwitcherPanel, history: HistoryPanel,
                 playground: PlaygroundPanel, events: EventsPanel,
                 settings: QSettings | None = None, title_suffix: str = "",
                 files: Sequence[tuple[str, Path]] = (),
                 monitor: QWidget | None = None) -> None:
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
        self._quitting = False
        self._painted = False
        # Whether the close button only hides the window (kept in the tray): the app decides.
        self.hide_on_close: Callable[[], bool] = lambda: False
        self._settings = settings
        self._files = tuple(files)  # (what, where) shown by Help: the logs, the history database
        self.help_box: QMessageBox | None = None

        self.tabs = QTabWidget()
        # The Monitor tab: the charts, or a page holding them (with the GPU header and processes).
        self.monitor = monitor or charts
        self.tabs.addTab(self.monitor, "Monitor")
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
        self.api_status = QLabel("API off")
        self.statusBar().addPermanentWidget(self.api_status)
        self.resize(1280, 860)
        self.actions_by_name: dict[str, QAction] = {}
        self._build_menus()
        self._restore()

    # -- menu bar -------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        """Desktop conventions: every action also has its button or tab; the menus add the
        standard shortcuts (Ctrl+Q quits through the normal shutdown, Ctrl+1..5, F1)."""
        bar = self.menuBar()
        file = self.file_menu = bar.addMenu("&File")
        self._add(file, "Export charts (PNG)…", self.charts.png_button.click)
        if self.charts.csv_button.isEnabled():
            self._add(file, "Export telemetry (CSV)…", self.charts.csv_button.click)
        file.addSeparator()
        self._add(file, "&Quit", self.quit, "Ctrl+Q")  # closeEvent runs the async shutdown

        view = bar.addMenu("&View")
        for i in range(self.tabs.count()):
            # By widget, not index: the app inserts tabs of its own (Soak test) later.
            page = self.tabs.widget(i)
            assert page is not None
            self._add(view, self.tabs.tabText(i), partial(self.tabs.setCurrentWidget, page),
                      f"Ctrl+{i + 1}")

        models = bar.addMenu("&Models")
        self._add(models, "&Load / switch to selected", self._models_action(
            self.models.switch_selected))
        self._add(models, "&Unload", self._models_action(self.models.unload))
        self._add(models, "&Cancel switch", self._models_action(self.models.cancel))
        # Enabled like the panel's buttons, read when the menu opens.
        models.aboutToShow.connect(self._sync_model_actions)

        bar.addMenu("&Server").addAction(self.serve_action)
        help_menu = bar.addMenu("&Help")
        self._add(help_menu, "vrampilot &help", self.show_help, "F1")
        self._add(help_menu, "&About vrampilot", self.show_about)

    def _add(self, menu: QMenu, text: str, slot: Callable[[], object],
             shortcut: str | QKeySequence.StandardKey | None = None) -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        self.actions_by_name[text.replace("&", "").rstrip("…")] = action
        return action

    def _models_action(self, slot: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            self.tabs.setCurrentWidget(self.models)  # the progress and any refusal are there
            slot()
        return run

    def _sync_model_actions(self) -> None:
        for name, button in (("Load / switch to selected", self.models.switch_button),
                             ("Unload", self.models.unload_button),
                             ("Cancel switch", self.models.cancel_button)):
            self.actions_by_name[name].setEnabled(button.isEnabled())

    def help_text(self) -> str:
        shortcuts = ["Ctrl+1 … Ctrl+5: " + ", ".join(
            self.tabs.tabText(i) for i in range(self.tabs.count())),
                     "Ctrl+Q: quit (the model is unloaded first)", "F1: this help"]
        where = [f"{what}: {path}" for what, path in self._files]
        return "\n".join(["Shortcuts", *shortcuts, "", "Files", *where])

    def show_help(self) -> None:
        self._message("vrampilot help", self.help_text())

    def show_about(self) -> None:
        self._message("About vrampilot",
                      "vrampilot 0.1.0: watches a laptop GPU (VRAM, temperature, power) and runs "
                      "one local LLM at a time on it, switched with safety checks.")

    def _message(self, title: str, text: str) -> None:
        """Window-modal and non-blocking: the asyncio loop keeps running behind it."""
        box = QMessageBox(QMessageBox.Icon.Information, title, text,
                          QMessageBox.StandardButton.Close, self)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.help_box = box
        box.open()

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

    @property
    def painted(self) -> bool:
        return self._painted

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            # The panels paint after the window in the same pass (and the frame is flushed):
            # the next loop turn comes after all of it.
            QTimer.singleShot(0, self.first_painted.emit)

    def set_model_status(self, text: str) -> None:
        self.model_status.setText(text)

    def set_api_status(self, text: str) -> None:
        self.api_status.setText(text)

    def set_switch_status(self, text: str) -> None:
        self.switch_status.setText(text)

    @property
    def closing(self) -> bool:
        return self._closing

    def quit(self) -> None:
        """Quit for real (File > Quit, the tray's Quit, a signal), even when closing the
        window only hides it to the tray."""
        self._quitting = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        """First close: ask for the async shutdown; close for real when it is done. With
        `hide_on_close` true (kept in the tray), the window's close button only hides it."""
        if self._closed:
            event.accept()
            return
        event.ignore()
        if not self._quitting and not self._closing and self.hide_on_close():
            self._save()
            self.hide()
            return
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
