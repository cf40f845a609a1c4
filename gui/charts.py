"""Live charts fed from the core's TelemetryHistory; one timer redraws every plot at most 10 Hz."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class ChartSpec:
    """One chart: which history metrics it draws, with a unit scale and threshold lines."""

    title: str
    unit: str
    metrics: tuple[str, ...]
    scale: float = 1.0
    thresholds: tuple[tuple[str, float], ...] = ()  # (label, value in display units)
    missing_text: str = "not reported by this GPU"


WINDOWS = (("1 min", 60), ("5 min", 300), ("15 min", 900), ("60 min", 3600))
PALETTE = ("#4ea1ff", "#ff9f43", "#2ecc71", "#e056fd")


class ChartPanel(QWidget):
    """A column of time-series plots over a selectable window, redrawn by one timer."""

    def __init__(self, window_query: Callable[[str, float], tuple[np.ndarray, np.ndarray]],
                 specs: list[ChartSpec], refresh_hz: float = 10.0,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._query = window_query
        self._specs = specs
        self.window_seconds = 300.0
        self.paused = False

        self.window_box = QComboBox()
        for label, seconds in WINDOWS:
            self.window_box.addItem(label, seconds)
        self.window_box.setCurrentIndex(1)
        self.window_box.currentIndexChanged.connect(
            lambda _i: self.set_window(float(self.window_box.currentData())))
        self.pause_box = QCheckBox("Pause")
        self.pause_box.toggled.connect(self.set_paused)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Window"))
        controls.addWidget(self.window_box)
        controls.addWidget(self.pause_box)
        controls.addStretch(1)

        self.graphics = pg.GraphicsLayoutWidget()
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.missing_labels: dict[str, pg.TextItem] = {}
        for row, spec in enumerate(specs):
            plot = self.graphics.addPlot(row=row, col=0,
                                         axisItems={"bottom": pg.DateAxisItem()})
            plot.setTitle(f"{spec.title} ({spec.unit})")
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setMouseEnabled(x=False, y=False)
            for i, metric in enumerate(spec.metrics):
                self.curves[metric] = plot.plot(pen=pg.mkPen(PALETTE[i % len(PALETTE)], width=1),
                                                name=metric)
            for label, value in spec.thresholds:
                color = "#e74c3c" if "critical" in label or "throttle" in label else "#f1c40f"
                plot.addItem(pg.InfiniteLine(pos=value, angle=0, label=label,
                                             pen=pg.mkPen(color, width=1, style=pg.QtCore.Qt.PenStyle.DashLine),
                                             labelOpts={"position": 0.05, "color": color}))
            text = pg.TextItem(spec.missing_text, color="#999999", anchor=(0.5, 0.5))
            plot.addItem(text, ignoreBounds=True)
            text.setVisible(False)
            self.missing_labels[spec.title] = text
            self.plots[spec.title] = plot

        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.graphics, 1)

        self.timer = QTimer(self)
        self.timer.setInterval(max(1, int(1000 / refresh_hz)))
        self.timer.timeout.connect(self.redraw)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def set_window(self, seconds: float) -> None:
        self.window_seconds = seconds
        self.redraw()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def redraw(self) -> None:
        """Pull each metric's window from the history and hand it to its curve."""
        if self.paused:
            return
        for spec in self._specs:
            any_data = False
            for metric in spec.metrics:
                times, values = self._query(metric, self.window_seconds)
                curve = self.curves[metric]
                finite = values[np.isfinite(values)] if len(values) else values
                if len(finite) == 0:
                    curve.setData([], [])
                    continue
                any_data = True
                curve.setData(times, values * spec.scale, connect="finite")
            label = self.missing_labels[spec.title]
            label.setVisible(not any_data)
            if not any_data:
                view = self.plots[spec.title].getViewBox().viewRange()
                label.setPos(sum(view[0]) / 2, sum(view[1]) / 2)

    def curve_data(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """What the curve currently shows (for tests)."""
        x, y = self.curves[metric].getData()
        return (np.asarray(x if x is not None else []), np.asarray(y if y is not None else []))


def is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
