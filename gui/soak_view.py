"""The soak charts: tokens/s, first-token time, temperature, power, clocks and throttling on one
time axis (seconds since the run started). One run, or two overlaid (the second dashed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QVBoxLayout, QWidget

from core.facade import SoakSeries


@dataclass(frozen=True)
class SoakChart:
    title: str
    unit: str
    columns: tuple[str, ...]  # SoakSeries attributes
    scale: float = 1.0


CHARTS = (
    SoakChart("Tokens/s (all requests)", "tok/s", ("tokens_per_s",)),
    SoakChart("First-token time", "ms", ("first_token_s",), 1000.0),
    SoakChart("Temperature", "°C", ("temperature_c",)),
    SoakChart("Power (draw, enforced limit)", "W", ("power_w", "power_limit_w")),
    SoakChart("Clocks (SM, memory)", "MHz", ("sm_clock_mhz", "mem_clock_mhz")),
    SoakChart("Throttling (1 = a throttle reason is set)", "", ("throttled",)),
)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
# Tokens arrive in bursts per sample; a short moving mean makes the rate readable.
SMOOTH_SAMPLES = 5


def column(series: SoakSeries, name: str) -> np.ndarray:
    """A chartable column: `throttled` is derived from the throttle reasons."""
    if name == "throttled":
        return np.array([1.0 if r else 0.0 for r in series.throttle_reasons])
    values = np.asarray(getattr(series, name), dtype=np.float64)
    if name == "tokens_per_s" and len(values) >= SMOOTH_SAMPLES:
        kernel = np.ones(SMOOTH_SAMPLES) / SMOOTH_SAMPLES
        values = np.asarray(np.convolve(np.nan_to_num(values), kernel, mode="same"),
                            dtype=np.float64)
    return values


class SoakCharts(QWidget):
    """A column of plots sharing the time axis; `show_runs` redraws everything.

    The plots are built when first shown or drawn: six pyqtgraph plots cost ~0.1 s of CPU, and
    the Soak test tab is not on screen at launch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics: pg.GraphicsLayoutWidget | None = None
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[tuple[int, str], pg.PlotDataItem] = {}  # (run, column) -> curve
        self.regions: list[pg.LinearRegionItem] = []
        self.labels: list[str] = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)

    def showEvent(self, event: QShowEvent) -> None:
        self._build()
        super().showEvent(event)

    def _build(self) -> pg.GraphicsLayoutWidget:
        if self.graphics is not None:
            return self.graphics
        self.graphics = pg.GraphicsLayoutWidget()
        first: pg.PlotItem | None = None
        for row, chart in enumerate(CHARTS):
            plot = self.graphics.addPlot(row=row, col=0)
            plot.setTitle(f"{chart.title} ({chart.unit})" if chart.unit else chart.title)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setMenuEnabled(False)
            axis = plot.getAxis("left")
            axis.enableAutoSIPrefix(False)  # clocks read 8001 MHz, not 8.001 (x1e3)
            axis.setWidth(48)  # one width for every chart keeps their time axes aligned
            if first is None:
                first = plot
                plot.addLegend(offset=(-10, 5))
            else:
                plot.setXLink(first)
            self.plots[chart.title] = plot
        self.plots[CHARTS[-1].title].setLabel("bottom", "seconds since the start")
        self._layout.addWidget(self.graphics)
        return self.graphics

    def show_runs(self, runs: list[tuple[str, SoakSeries]]) -> None:
        """Draw each run (label, series); the first solid, the next ones dashed."""
        self._build()
        for plot in self.plots.values():
            plot.clear()
            if plot.legend is not None:
                plot.legend.clear()
        self.curves.clear()
        self.regions.clear()
        self.labels = [label for label, _ in runs]
        for i, (label, series) in enumerate(runs):
            style = Qt.PenStyle.SolidLine if i == 0 else Qt.PenStyle.DashLine
            for chart in CHARTS:
                plot = self.plots[chart.title]
                for j, name in enumerate(chart.columns):
                    pen = pg.mkPen(COLORS[(i * 2 + j) % len(COLORS)], width=1.5, style=style)
                    y = column(series, name) * chart.scale
                    x = series.t_s
                    finite = ~np.isnan(y)
                    curve = plot.plot(x[finite], y[finite], pen=pen,
                                      name=label if chart is CHARTS[0] and j == 0 else None,
                                      connect="finite")
                    self.curves[(i, name)] = curve
            if i == 0:  # shade the first run's throttled stretches on every chart
                for start, end, reason in series.throttled_spans():
                    for plot in self.plots.values():
                        region = pg.LinearRegionItem((start, max(end, start + 1e-3)),
                                                     movable=False,
                                                     brush=pg.mkBrush(255, 80, 0, 40))
                        region.setToolTip(f"throttled: {reason}")
                        plot.addItem(region)
                        self.regions.append(region)

    def curve_data(self, run: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """What is drawn for one run's column (for tests)."""
        x, y = self.curves[(run, name)].getData()
        return (np.asarray(x if x is not None else [], dtype=np.float64),
                np.asarray(y if y is not None else [], dtype=np.float64))

    def export_png(self, path: Path | str) -> Path:
        path = Path(path)
        if not self._build().grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path
