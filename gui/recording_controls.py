"""Record a stretch of monitoring to a file, and open a recording read-only in the Monitor's
charts (same charts, same PNG / CSV export). Sits in the corner of the main window's tabs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from core.facade import TelemetryHistory, TelemetryRecorder, recordings_dir
from gui.chart_data import ChartSpec
from gui.charts import ChartPanel


class RecordingWindow(QWidget):
    """A recording in the Monitor's charts, read-only: the window spans the whole recording."""

    def __init__(self, path: Path, specs: list[ChartSpec], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.history = TelemetryHistory.from_csv(path)
        self.setWindowTitle(f"vrampilot recording: {path.name} (read-only)")
        self.charts = ChartPanel(self.history, specs, export_csv=self.history.export_csv)
        self.charts.pause_box.setEnabled(False)  # nothing arrives: there is nothing to pause
        metrics = self.history.metrics()
        times = self.history.window(metrics[0])[0] if metrics else None
        span = float(times[-1] - times[0]) if times is not None and len(times) > 1 else 60.0
        self.summary = QLabel(f"{len(self.history)} samples, {span:.0f} s, from {path}")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.charts, 1)
        self.resize(1100, 800)
        self.charts.set_window(max(span, 1.0))

    def closeEvent(self, event: QCloseEvent) -> None:
        self.charts.stop()
        super().closeEvent(event)


class RecordingControls(QWidget):
    """"Record" (toggles) and "Open recording…"."""

    event_line = Signal(str, str)

    def __init__(self, make_recorder: Callable[[], TelemetryRecorder],
                 specs: Callable[[], list[ChartSpec]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._make_recorder = make_recorder
        self._specs = specs
        self.recorder: TelemetryRecorder | None = None
        self.windows: list[RecordingWindow] = []
        self.record_button = QPushButton("● Record")
        self.record_button.setCheckable(True)
        self.record_button.setToolTip("Record the monitoring to a file until pressed again")
        self.record_button.toggled.connect(self.set_recording)
        self.open_button = QPushButton("Open recording…")
        self.open_button.clicked.connect(self._ask_open)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.record_button)
        layout.addWidget(self.open_button)

    def set_recording(self, on: bool) -> None:
        if on and self.recorder is None:
            self.recorder = self._make_recorder()
            path = self.recorder.start()
            self.record_button.setText("■ Stop recording")
            self.event_line.emit("info", f"recording the monitoring to {path}")
        elif not on and self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            path = recorder.stop()
            self.record_button.setText("● Record")
            self.event_line.emit("info", f"recorded {recorder.rows} samples to {path}")
        if self.record_button.isChecked() != on:
            self.record_button.setChecked(on)

    def open_recording(self, path: Path | str) -> RecordingWindow:
        """Open a recording (or any monitoring CSV export); ValueError names a bad file."""
        window = RecordingWindow(Path(path), self._specs())
        self.windows.append(window)
        window.show()
        return window

    def _ask_open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Open a monitoring recording",
                                              str(recordings_dir()), "CSV (*.csv)")
        if not name:
            return
        try:
            self.open_recording(name)
        except (OSError, ValueError) as exc:
            self.event_line.emit("error", f"cannot open {name}: {exc}")

    def close_all(self) -> None:
        """Stop recording and close the recording windows (app exit)."""
        self.set_recording(False)
        for window in self.windows:
            window.close()
        self.windows.clear()
