"""Live charts fed from the core's TelemetryHistory; one timer redraws every plot at most 10 Hz.
The widget only: what it draws (specs, annotations) and the decimation are gui/chart_data.py.

Alert periods are shaded on the time axis, model switches are labelled vertical lines, a crosshair
shows the values under the mouse. Curves get new data only when the history has a new row (or
the window changed), so an idle redraw costs a few comparisons.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGraphicsItem,
    QGraphicsSimpleTextItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gui.chart_data import (
    WINDOWS,
    AlertPeriod,
    ChartAnnotations,
    ChartSpec,
    PeakBuckets,
    WindowQuery,
    nice_range,
)

PALETTE = ("#4ea1ff", "#ff9f43", "#2ecc71", "#e056fd")
ALERT_BRUSH = {"warning": (241, 196, 15, 50), "critical": (231, 76, 60, 60),
               "throttle": (52, 152, 219, 45)}


def theme_plot(widget: pg.PlotWidget, plot: pg.PlotItem, palette: QPalette) -> None:
    """A plot's background, title and axes follow the window palette (light or dark)."""
    foreground = palette.color(QPalette.ColorRole.Text)
    widget.setBackground(palette.color(QPalette.ColorRole.Base))
    plot.setTitle(plot.titleLabel.text, color=foreground.name())
    for axis in ("left", "bottom"):
        ax = plot.getAxis(axis)
        ax.setPen(pg.mkPen(foreground, width=1))
        ax.setTextPen(pg.mkPen(foreground))


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


class ChartPanel(QWidget):
    """A column of time-series plots over a selectable window, redrawn by one timer."""

    def __init__(self, window_query: WindowQuery, specs: list[ChartSpec],
                 annotations: ChartAnnotations | None = None, refresh_hz: float = 10.0,
                 export_csv: Callable[[Path], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._query = window_query
        self._specs = specs
        self._export_csv = export_csv
        self.annotations = annotations or ChartAnnotations()
        self._drawn_version = -1
        self._last_key: dict[str, tuple[float, float, int]] = {}  # metric -> (newest, window, n)
        self._latest: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._peaks: dict[str, PeakBuckets] = {}
        self._y_bounds: dict[str, tuple[float, float]] = {}  # metric -> drawn (min, max)
        self._x_range: tuple[float, float] | None = None
        self._y_ranges: dict[str, tuple[float, float]] = {}  # chart title -> value range shown
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
        self.png_button = QPushButton("Export view (PNG)…")
        self.csv_button = QPushButton("Export data (CSV)…")
        self.png_button.clicked.connect(self._ask_png)
        self.csv_button.clicked.connect(self._ask_csv)
        self.csv_button.setEnabled(export_csv is not None)
        self.crosshair_label = QLabel("")
        self.crosshair_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Window"))
        controls.addWidget(self.window_box)
        controls.addWidget(self.pause_box)
        controls.addWidget(self.crosshair_label, 1)
        controls.addWidget(self.png_button)
        controls.addWidget(self.csv_button)

        self.graphics = pg.GraphicsLayoutWidget()
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, pg.PlotCurveItem] = {}
        self.missing_labels: dict[str, pg.TextItem] = {}
        self.threshold_labels: dict[str, list[tuple[float, float, QGraphicsSimpleTextItem]]] = {}
        self.vlines: dict[str, pg.InfiniteLine] = {}
        self._regions: dict[str, list[tuple[AlertPeriod, pg.LinearRegionItem]]] = {}
        self._switch_lines: dict[str, list[tuple[pg.InfiniteLine, QGraphicsSimpleTextItem]]] = {}
        for row, spec in enumerate(specs):
            plot = self.graphics.addPlot(row=row, col=0,
                                         axisItems={"bottom": pg.DateAxisItem()})
            plot.setTitle(f"{spec.title} ({spec.unit})")
            # Painting axes dominates a frame (pyqtgraph replays each axis' QPicture): the value
            # axis, with the horizontal grid, is cached as a pixmap and redrawn only when its
            # range changes; only the last chart shows the (shared) time axis.
            plot.showGrid(x=False, y=True, alpha=0.15)
            # Axes, titles and labels are cached as pixmaps (blitted, not re-rendered, per frame):
            # only the curves are painted each time.
            cache = QGraphicsItem.CacheMode.DeviceCoordinateCache
            plot.getAxis("left").setCacheMode(cache)
            plot.getAxis("bottom").setCacheMode(cache)
            plot.titleLabel.setCacheMode(cache)
            # Ranges are set by redraw (time: the window; values: round numbers around the data
            # and the threshold lines): pyqtgraph's auto-range re-scans every item's bounds and
            # re-lays out every line and label on each frame.
            plot.disableAutoRange()
            if row < len(specs) - 1:
                plot.hideAxis("bottom")
            # Decimated here (PeakBuckets) to about one min/max pair per pixel, before
            # pyqtgraph sees the data: its own auto-downsampling re-scans every point per frame.
            plot.setClipToView(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            for i, metric in enumerate(spec.metrics):
                # A bare PlotCurveItem: PlotDataItem's per-setData bookkeeping (display
                # dataset, data rect, scatter item) costs more than drawing the line.
                curve = pg.PlotCurveItem(pen=pg.mkPen(PALETTE[i % len(PALETTE)], width=1),
                                         name=metric, antialias=False)
                plot.addItem(curve)
                self.curves[metric] = curve
            thresholds: list[tuple[float, float, QGraphicsSimpleTextItem]] = []
            for label, value in spec.thresholds:
                color = "#e74c3c" if "critical" in label or "throttle" in label else "#e0a800"
                plot.addItem(pg.InfiniteLine(
                    pos=value, angle=0,
                    pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine)))
                # A plain Qt text item in the ViewBox's pixel coordinates, placed again only
                # when the value range or the size changes (pyqtgraph's InfiniteLine label is
                # re-laid out in Python on every move of the time axis).
                text_item = QGraphicsSimpleTextItem(label, plot.getViewBox())
                text_item.setBrush(QColor(color))
                text_item.setZValue(5)
                text_item.setCacheMode(cache)
                fraction = {"warning": 0.01, "critical": 0.07}.get(label, 0.13)
                thresholds.append((fraction, value, text_item))
            self.threshold_labels[spec.title] = thresholds
            plot.getViewBox().sigResized.connect(
                lambda _vb, title=spec.title: self._place_threshold_labels(title))
            text = pg.TextItem(spec.missing_text, color="#999999", anchor=(0.5, 0.5))
            plot.addItem(text, ignoreBounds=True)
            text.setVisible(False)
            vline = pg.InfiniteLine(angle=90, movable=False,
                                    pen=pg.mkPen("#888888", width=1, style=Qt.PenStyle.DotLine))
            vline.setVisible(False)
            plot.addItem(vline, ignoreBounds=True)
            self.vlines[spec.title] = vline
            self.missing_labels[spec.title] = text
            self.plots[spec.title] = plot
            self._regions[spec.title] = []
            self._switch_lines[spec.title] = []
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)

        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(self.graphics, 1)

        self.timer = QTimer(self)
        self.timer.setObjectName("chart-redraw")
        self._min_interval_ms = max(1, int(1000 / refresh_hz))
        self.timer.setInterval(self._min_interval_ms)
        self.timer.timeout.connect(self.redraw)
        self.apply_palette(self.palette())

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def set_window(self, seconds: float) -> None:
        """Show the last `seconds`; the redraw rate follows what can move on screen: at most
        10 Hz, and no faster than one pixel's worth of time (60 min on ~1200 px: every 1 s)."""
        self.window_seconds = seconds
        width_px = max(200, self.graphics.width())
        per_pixel_ms = seconds / width_px * 1000
        self.timer.setInterval(int(min(1000, max(self._min_interval_ms, per_pixel_ms))))
        self.redraw()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    # -- drawing --------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Pull each metric's window from the history; curves with no new row are left alone."""
        if self.paused:
            return
        newest = -math.inf
        missing: dict[str, bool] = {}
        for spec in self._specs:
            any_data = False
            changed = False
            for metric in spec.metrics:
                try:
                    times, values = self._query(metric, self.window_seconds)
                except KeyError:  # the metric was never sampled (e.g. before the first tick)
                    times, values = np.empty(0), np.empty(0)
                key = (float(times[-1]) if len(times) else -math.inf, self.window_seconds,
                       len(times))
                if len(times):
                    newest = max(newest, key[0])
                if self._last_key.get(metric) == key:
                    any_data = any_data or self._has_data(metric)
                    continue
                self._last_key[metric] = key
                changed = True
                curve = self.curves[metric]
                finite = np.isfinite(values)
                if not finite.any():
                    curve.setData([], [])
                    self._latest[metric] = (np.empty(0), np.empty(0))
                    self._y_bounds.pop(metric, None)
                    continue
                any_data = True
                # Copies: the history hands out views of its ring buffer, overwritten later.
                x = np.array(times)
                y = values * spec.scale
                self._latest[metric] = (x, y)
                all_finite = bool(finite.all())
                if all_finite:
                    width = int(self.plots[spec.title].getViewBox().width()) or 1000
                    buckets = max(100, width // 2)
                    if len(x) >= 2 * buckets:  # about one min/max pair per pixel
                        peaks = self._peaks.setdefault(metric, PeakBuckets())
                        x, y = peaks.update(x, y, self.window_seconds / buckets)
                    self._y_bounds[metric] = (float(y.min()), float(y.max()))
                else:
                    self._y_bounds[metric] = (float(np.nanmin(y)), float(np.nanmax(y)))
                curve.setData(x, y, connect="all" if all_finite else "finite",
                              skipFiniteCheck=all_finite)
            if changed or self.missing_labels[spec.title].isVisible() == any_data:
                missing[spec.title] = not any_data
        ranges_changed = self._apply_ranges(newest)
        for spec in self._specs:
            label = self.missing_labels[spec.title]
            if spec.title in missing or (label.isVisible() and ranges_changed):
                self._show_missing(spec, missing.get(spec.title, label.isVisible()))
        if newest > -math.inf:
            self._draw_annotations(newest)

    def _apply_ranges(self, newest: float) -> bool:
        """Time axis: the window ending at the newest row; value axes: round numbers around
        the drawn data and the threshold lines, kept while the data stays inside (so the
        cached axis pictures stay valid). Only ranges that change are set."""
        changed = False
        x_range = self._x_range
        if newest > -math.inf:
            # The time axis moves in whole pixels: its end is the newest row rounded up to
            # one pixel's worth of time, so most frames repaint neither the time axis nor
            # re-lay out the lines (the newest point is at most a pixel from the right edge).
            width_px = max(1.0, self.plots[self._specs[0].title].getViewBox().width())
            step = self.window_seconds / width_px
            end = math.ceil(newest / step) * step
            x_range = (end - self.window_seconds, end)
        for spec in self._specs:
            lows = [v for _label, v in spec.thresholds]
            highs = list(lows)
            for metric in spec.metrics:
                bounds = self._y_bounds.get(metric)
                if bounds is not None:
                    lows.append(bounds[0])
                    highs.append(bounds[1])
            y_range = self._y_ranges.get(spec.title)
            if lows:
                lo, hi = min(lows), max(highs)
                wanted = nice_range(lo, hi)
                if (y_range is None or lo < y_range[0] or hi > y_range[1]
                        or (y_range[1] - y_range[0]) > 2 * (wanted[1] - wanted[0])):
                    y_range = wanted
            elif y_range is None:
                y_range = (0.0, 1.0)
            x_changed = x_range is not None and x_range != self._x_range
            y_changed = y_range != self._y_ranges.get(spec.title)
            if x_changed or y_changed:
                self.plots[spec.title].getViewBox().setRange(
                    xRange=x_range, yRange=y_range, padding=0)
                self._y_ranges[spec.title] = y_range
                changed = True
            if y_changed:
                self._place_threshold_labels(spec.title)
                for line, text in self._switch_lines[spec.title]:
                    self._place_switch_label(text, float(line.value()), y_range)
        self._x_range = x_range
        return changed

    def _has_data(self, metric: str) -> bool:
        data = self._latest.get(metric)
        return data is not None and len(data[0]) > 0

    def _show_missing(self, spec: ChartSpec, missing: bool) -> None:
        label = self.missing_labels[spec.title]
        label.setVisible(missing)
        if missing:
            view = self.plots[spec.title].getViewBox().viewRange()
            label.setPos(sum(view[0]) / 2, sum(view[1]) / 2)

    def _draw_annotations(self, now: float) -> None:
        """Shaded alert periods and labelled switch lines; rebuilt only when they change, and
        open periods stretched to the newest sample."""
        rebuild = self._drawn_version != self.annotations.version
        for spec in self._specs:
            plot = self.plots[spec.title]
            if rebuild:
                for _p, item in self._regions[spec.title]:
                    plot.removeItem(item)
                for line, text in self._switch_lines[spec.title]:
                    plot.removeItem(line)
                    plot.removeItem(text)
                self._regions[spec.title] = []
                self._switch_lines[spec.title] = []
                for period in self.annotations.alerts:
                    if period.metric not in spec.alert_metrics:
                        continue
                    region = pg.LinearRegionItem(
                        values=(period.start, period.end or now), movable=False,
                        brush=pg.mkBrush(*ALERT_BRUSH.get(period.level, ALERT_BRUSH["warning"])),
                        pen=pg.mkPen(None))
                    region.setZValue(-10)
                    region.setToolTip(period.label)
                    plot.addItem(region, ignoreBounds=True)
                    self._regions[spec.title].append((period, region))
                y_range = self._y_ranges.get(spec.title, (0.0, 1.0))
                for at, label in self.annotations.switches:
                    line = pg.InfiniteLine(pos=at, angle=90, movable=False,
                                           pen=pg.mkPen("#9b59b6", width=1))
                    plot.addItem(line, ignoreBounds=True)
                    # Unscaled Qt text at a point in data coordinates: follows the time axis
                    # without any Python per frame (unlike pyqtgraph's InfiniteLine label).
                    text = QGraphicsSimpleTextItem(label)
                    text.setBrush(QColor("#9b59b6"))
                    text.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
                    text.setZValue(5)
                    text.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
                    plot.addItem(text, ignoreBounds=True)
                    self._place_switch_label(text, at, y_range)
                    self._switch_lines[spec.title].append((line, text))
            for period, region in self._regions[spec.title]:
                if period.end is None:
                    region.setRegion((period.start, now))
        self._drawn_version = self.annotations.version

    def region_spans(self, title: str) -> list[tuple[float, float]]:
        """The shaded alert periods drawn on one chart (for tests)."""
        return [tuple(r.getRegion()) for _p, r in self._regions[title]]

    def region_tooltips(self, title: str) -> list[str]:
        """The tooltips of the shaded periods drawn on one chart (for tests)."""
        return [r.toolTip() for _p, r in self._regions[title]]

    def switch_labels(self, title: str) -> list[tuple[float, str]]:
        """The model-switch lines drawn on one chart: (time, label) (for tests)."""
        return [(float(line.value()), text.text()) for line, text in self._switch_lines[title]]

    @staticmethod
    def _place_switch_label(text: QGraphicsSimpleTextItem, at: float,
                            y_range: tuple[float, float]) -> None:
        """Just right of the line, near the top of the chart, centred on that height."""
        text.setPos(at, y_range[0] + 0.92 * (y_range[1] - y_range[0]))
        text.setTransform(text.transform().fromTranslate(3, -text.boundingRect().height() / 2))

    def _place_threshold_labels(self, title: str) -> None:
        """Each threshold's label just below its line, a fraction of the width from the left."""
        y_range = self._y_ranges.get(title)
        if y_range is None:
            return
        view = self.plots[title].getViewBox()
        width, height = view.width(), view.height()
        span = (y_range[1] - y_range[0]) or 1.0
        for fraction, value, text in self.threshold_labels[title]:
            y_px = (y_range[1] - value) / span * height
            text.setVisible(0 <= y_px <= height)
            text.setPos(fraction * width, y_px)

    def curve_data(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """What the curve currently holds (for tests)."""
        x, y = self.curves[metric].getData()
        return (np.asarray(x if x is not None else []), np.asarray(y if y is not None else []))

    # -- crosshair ------------------------------------------------------------------------------
    def _mouse_moved(self, pos: Any) -> None:
        for spec in self._specs:
            plot = self.plots[spec.title]
            if plot.sceneBoundingRect().contains(pos):
                x = plot.getViewBox().mapSceneToView(pos).x()
                self.show_crosshair(x)
                return

    def show_crosshair(self, x: float) -> str:
        """Put the crosshair at time x on every chart; the label shows each value there."""
        parts: list[str] = []
        for spec in self._specs:
            self.vlines[spec.title].setPos(x)
            self.vlines[spec.title].setVisible(True)
            for metric in spec.metrics:
                times, values = self._latest.get(metric, (np.empty(0), np.empty(0)))
                if not len(times):
                    continue
                i = int(np.clip(np.searchsorted(times, x), 0, len(times) - 1))
                if i > 0 and abs(times[i - 1] - x) < abs(times[i] - x):
                    i -= 1
                v = values[i]
                if np.isfinite(v):
                    short = metric.split(".", 1)[-1]
                    parts.append(f"{short} {v:.1f} {spec.unit}")
        text = time.strftime("%H:%M:%S", time.localtime(x)) + "  " + " · ".join(parts)
        self.crosshair_label.setText(text)
        return text

    # -- export ---------------------------------------------------------------------------------
    def export_png(self, path: Path | str) -> Path:
        """Save the charts as shown now."""
        path = Path(path)
        if not self.graphics.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path

    def _ask_png(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export charts as PNG", "vrampilot-charts.png",
                                              "PNG image (*.png)")
        if name:
            self.export_png(name)

    def _ask_csv(self) -> None:
        if self._export_csv is None:
            return
        name, _ = QFileDialog.getSaveFileName(self, "Export telemetry as CSV",
                                              "vrampilot-telemetry.csv", "CSV (*.csv)")
        if name:
            self._export_csv(Path(name))

    # -- light / dark ---------------------------------------------------------------------------
    def apply_palette(self, palette: QPalette) -> None:
        """Chart background and text follow the window palette (light or dark)."""
        background = palette.color(QPalette.ColorRole.Base)
        foreground = palette.color(QPalette.ColorRole.Text)
        self.graphics.setBackground(background)
        for spec in self._specs:
            plot = self.plots[spec.title]
            plot.setTitle(f"{spec.title} ({spec.unit})", color=foreground.name())
            for axis in ("left", "bottom"):
                ax = plot.getAxis(axis)
                ax.setPen(pg.mkPen(foreground, width=1))
                ax.setTextPen(pg.mkPen(foreground))
        self.dark = is_dark(palette)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.apply_palette(QApplication.palette(self))
        super().changeEvent(event)
