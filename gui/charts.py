"""Live charts fed from the core's TelemetryHistory; one timer redraws every plot at most 10 Hz.
The widget only: what it draws (specs, annotations) and the decimation are gui/chart_data.py.

Alert periods are shaded on the time axis, model switches are labelled vertical lines, a crosshair
shows the values under the mouse. Each frame reads only the history's new rows (an idle redraw
costs a few comparisons, a new row the newest bucket), and everything drawn inside the plots is
a plain Qt item (curves, lines, shades): moving the time axis runs no Python per item.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
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
    ChartSource,
    ChartSpec,
    PeakBuckets,
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

    def __init__(self, source: ChartSource, specs: list[ChartSpec],
                 annotations: ChartAnnotations | None = None, refresh_hz: float = 10.0,
                 export_csv: Callable[[Path], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._source = source
        self._specs = list(specs)
        self._export_csv = export_csv
        self.annotations = annotations or ChartAnnotations()
        self._drawn_version = -1
        self._peaks: dict[str, PeakBuckets] = {}  # metric -> its buckets, fed the new rows
        self._rows: dict[str, int] = {}  # metric -> history rows read so far
        self._newest: dict[str, float] = {}  # metric -> time of its newest row
        self._drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # metric -> curve's points
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
        self.curves: dict[str, QGraphicsPathItem] = {}
        self.missing_labels: dict[str, pg.TextItem] = {}
        # chart title -> (label's place across the width, value, line, label) per threshold
        self.thresholds: dict[str, list[tuple[float, float, QGraphicsLineItem,
                                              QGraphicsSimpleTextItem]]] = {}
        self.vlines: dict[str, pg.InfiniteLine] = {}
        self._regions: dict[str, list[tuple[AlertPeriod, QGraphicsRectItem]]] = {}
        self._switch_lines: dict[str, list[tuple[float, QGraphicsLineItem,
                                                 QGraphicsSimpleTextItem]]] = {}
        for row, spec in enumerate(self._specs):
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
            # Hidden axes still follow every range change (and re-lay out their labels) while
            # linked to the view: only the shown ones stay linked. No axis has a unit label,
            # so the SI prefix (recomputed on every range change) is off.
            hidden = ["top", "right"] + (["bottom"] if row < len(self._specs) - 1 else [])
            for name in hidden:
                plot.hideAxis(name)
                plot.getAxis(name).unlinkFromView()
            for name in ("left", "bottom"):
                plot.getAxis(name).enableAutoSIPrefix(False)
            # Decimated here (PeakBuckets) to about one min/max pair per pixel, before
            # pyqtgraph sees the data: its own auto-downsampling re-scans every point per frame
            # (PlotDataItem with peak downsampling, clipToView and skipFiniteCheck: ~20 ms of
            # CPU per frame with the time axis moving, 2026-12-06, against ~6 ms here).
            plot.setClipToView(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            for i, metric in enumerate(spec.metrics):
                # A Qt path item, not pyqtgraph's PlotCurveItem: that one recomputes its bounds
                # and paints in Python on every move of the time axis. Pen width 0 is Qt's
                # cosmetic one-pixel line (as drawn before), whose bounds need no stroking.
                curve = QGraphicsPathItem()
                pen = QPen(QColor(PALETTE[i % len(PALETTE)]))
                pen.setWidth(0)
                curve.setPen(pen)
                plot.addItem(curve, ignoreBounds=True)
                self.curves[metric] = curve
            self.thresholds[spec.title] = []
            self._add_thresholds(spec, plot.getViewBox())
            plot.getViewBox().sigResized.connect(
                lambda _vb, title=spec.title: self._place_thresholds(title))
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

    # -- threshold lines ------------------------------------------------------------------------
    def _add_thresholds(self, spec: ChartSpec, view: pg.ViewBox) -> None:
        """A dashed line and its label per threshold, in the view's pixel coordinates: placed
        again only when the value range or the size changes (pyqtgraph's InfiniteLine works
        out its bounds, and re-lays out its label, in Python on every move of the time axis)."""
        cache = QGraphicsItem.CacheMode.DeviceCoordinateCache
        for label, value in spec.thresholds:
            color = QColor("#e74c3c" if "critical" in label or "throttle" in label
                           else "#e0a800")
            line = QGraphicsLineItem(view)
            line.setPen(QPen(color, 0, Qt.PenStyle.DashLine))
            line.setZValue(4)
            text = QGraphicsSimpleTextItem(label, view)
            text.setBrush(color)
            text.setZValue(5)
            text.setCacheMode(cache)
            fraction = {"warning": 0.01, "critical": 0.07}.get(label, 0.13)
            self.thresholds[spec.title].append((fraction, value, line, text))

    def set_thresholds(self, specs: list[ChartSpec]) -> None:
        """New threshold values (Settings saved): each chart of the same title draws the new
        spec's lines, and its value range is worked out again around them."""
        by_title = {s.title: s for s in specs}
        for i, old in enumerate(self._specs):
            new = by_title.get(old.title)
            if new is None or new.thresholds == old.thresholds:
                continue
            self._specs[i] = old = replace(old, thresholds=new.thresholds)
            for _f, _v, line, text in self.thresholds[old.title]:
                for item in (line, text):
                    if item.scene() is not None:
                        item.scene().removeItem(item)  # also from its parent, the view
            self.thresholds[old.title] = []
            self._add_thresholds(old, self.plots[old.title].getViewBox())
            self._y_ranges.pop(old.title, None)  # the range must hold the new lines
        self._apply_ranges(max(self._newest.values(), default=-math.inf))
        for spec in self._specs:
            self._place_thresholds(spec.title)

    def threshold_values(self, title: str) -> list[tuple[str, float, float]]:
        """Each threshold line of one chart: (label, value, height in the view's pixels)."""
        return [(text.text(), value, line.line().y1())
                for _f, value, line, text in self.thresholds[title]]

    # -- drawing --------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Feed each curve the history's rows that are new; curves with none are left alone."""
        if self.paused:
            return
        missing: dict[str, bool] = {}
        for spec in self._specs:
            width = int(self.plots[spec.title].getViewBox().width()) or 1000
            buckets = max(100, width // 2)  # about one min/max pair per pixel
            any_data = False
            changed = False
            for metric in spec.metrics:
                if not self._feed(metric, spec.scale, self.window_seconds / buckets):
                    any_data = any_data or self._has_data(metric)
                    continue
                changed = True
                any_data = self._draw_curve(spec, metric, buckets) or any_data
            if changed or self.missing_labels[spec.title].isVisible() == any_data:
                missing[spec.title] = not any_data
        newest = max(self._newest.values(), default=-math.inf)
        ranges_changed = self._apply_ranges(newest)
        for spec in self._specs:
            label = self.missing_labels[spec.title]
            if spec.title in missing or (label.isVisible() and ranges_changed):
                self._show_missing(spec, missing.get(spec.title, label.isVisible()))
        if newest > -math.inf:
            self._draw_annotations(newest)

    def _feed(self, metric: str, scale: float, width_s: float) -> bool:
        """The metric's new rows into its buckets (all stored rows again when the bucket width
        changed: a new window or size); False when nothing changed."""
        peaks = self._peaks.get(metric)
        rebuilt = peaks is None or peaks.width_s != width_s
        if rebuilt:
            peaks = self._peaks[metric] = PeakBuckets(width_s)
            self._rows[metric] = 0
        assert peaks is not None
        try:
            times, values, self._rows[metric] = self._source.rows_since(
                metric, self._rows[metric])
        except KeyError:  # the metric was never sampled (e.g. before the first tick)
            return rebuilt
        if len(times):
            peaks.extend(times, values * scale if scale != 1.0 else values)
            self._newest[metric] = float(times[-1])
        elif not rebuilt:
            return False
        if metric in self._newest:
            peaks.trim(self._newest[metric] - self.window_seconds)
        return True

    def _draw_curve(self, spec: ChartSpec, metric: str, buckets: int) -> bool:
        """Hand the curve its points: the buckets when the window holds about two rows per
        pixel or more, else the rows themselves (few: cheap). False when nothing is finite."""
        peaks = self._peaks[metric]
        if peaks.rows >= 2 * buckets:
            x, y = peaks.xs, peaks.ys
        else:
            try:
                times, values = self._source.window(metric, self.window_seconds)
            except KeyError:
                times, values = np.empty(0), np.empty(0)
            # Copies: the history hands out views of its ring buffer, overwritten later.
            x, y = np.array(times), values * spec.scale
        curve = self.curves[metric]
        finite = np.isfinite(y)
        all_finite = bool(finite.all())
        if not len(y) or not (all_finite or finite.any()):
            curve.setPath(QPainterPath())
            self._drawn[metric] = (np.empty(0), np.empty(0))
            self._y_bounds.pop(metric, None)
            return False
        self._drawn[metric] = (x, y)
        if all_finite:
            self._y_bounds[metric] = (float(y.min()), float(y.max()))
        else:
            self._y_bounds[metric] = (float(np.nanmin(y)), float(np.nanmax(y)))
        curve.setPath(pg.arrayToQPath(x, y, connect="all" if all_finite else "finite",
                                      finiteCheck=not all_finite))
        return True

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
                self._place_thresholds(spec.title)
                for at, line, text in self._switch_lines[spec.title]:
                    self._place_switch_line(line, text, at, y_range)
                for period, region in self._regions[spec.title]:
                    self._place_region(region, period.start, period.end or newest, y_range)
        self._x_range = x_range
        return changed

    def _has_data(self, metric: str) -> bool:
        data = self._drawn.get(metric)
        return data is not None and len(data[0]) > 0

    def _show_missing(self, spec: ChartSpec, missing: bool) -> None:
        label = self.missing_labels[spec.title]
        label.setVisible(missing)
        if missing:
            view = self.plots[spec.title].getViewBox().viewRange()
            label.setPos(sum(view[0]) / 2, sum(view[1]) / 2)

    def _draw_annotations(self, now: float) -> None:
        """Shaded alert periods and labelled switch lines, as Qt items in data coordinates
        (they follow the time axis without Python); rebuilt only when they change, and open
        periods stretched to the newest sample."""
        rebuild = self._drawn_version != self.annotations.version
        for spec in self._specs:
            plot = self.plots[spec.title]
            y_range = self._y_ranges.get(spec.title, (0.0, 1.0))
            if rebuild:
                for _p, region in self._regions[spec.title]:
                    plot.removeItem(region)
                for _at, line, text in self._switch_lines[spec.title]:
                    plot.removeItem(line)
                    plot.removeItem(text)
                self._regions[spec.title] = []
                self._switch_lines[spec.title] = []
                for period in self.annotations.alerts:
                    if period.metric not in spec.alert_metrics:
                        continue
                    region = QGraphicsRectItem()
                    region.setPen(QPen(Qt.PenStyle.NoPen))
                    region.setBrush(QBrush(QColor(*ALERT_BRUSH.get(period.level,
                                                                   ALERT_BRUSH["warning"]))))
                    region.setZValue(-10)
                    region.setToolTip(period.label)
                    plot.addItem(region, ignoreBounds=True)
                    self._place_region(region, period.start, period.end or now, y_range)
                    self._regions[spec.title].append((period, region))
                for at, label in self.annotations.switches:
                    line = QGraphicsLineItem()
                    line.setPen(QPen(QColor("#9b59b6"), 0))
                    plot.addItem(line, ignoreBounds=True)
                    # Unscaled Qt text at a point in data coordinates: follows the time axis
                    # without any Python per frame (unlike pyqtgraph's InfiniteLine label).
                    text = QGraphicsSimpleTextItem(label)
                    text.setBrush(QColor("#9b59b6"))
                    text.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
                    text.setZValue(5)
                    text.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
                    plot.addItem(text, ignoreBounds=True)
                    self._place_switch_line(line, text, at, y_range)
                    self._switch_lines[spec.title].append((at, line, text))
            for period, region in self._regions[spec.title]:
                if period.end is None:
                    self._place_region(region, period.start, now, y_range)
        self._drawn_version = self.annotations.version

    def region_spans(self, title: str) -> list[tuple[float, float]]:
        """The shaded alert periods drawn on one chart (for tests)."""
        return [(r.rect().left(), r.rect().right()) for _p, r in self._regions[title]]

    def region_tooltips(self, title: str) -> list[str]:
        """The tooltips of the shaded periods drawn on one chart (for tests)."""
        return [r.toolTip() for _p, r in self._regions[title]]

    def switch_labels(self, title: str) -> list[tuple[float, str]]:
        """The model-switch lines drawn on one chart: (time, label) (for tests)."""
        return [(at, text.text()) for at, _line, text in self._switch_lines[title]]

    @staticmethod
    def _place_region(region: QGraphicsRectItem, start: float, end: float,
                      y_range: tuple[float, float]) -> None:
        """The period's span in time, the chart's whole value range in height."""
        rect = QRectF(start, y_range[0], end - start, y_range[1] - y_range[0])
        if rect != region.rect():
            region.setRect(rect)

    @staticmethod
    def _place_switch_line(line: QGraphicsLineItem, text: QGraphicsSimpleTextItem, at: float,
                           y_range: tuple[float, float]) -> None:
        """The line across the value range; its label just right of it, near the top of the
        chart, centred on that height."""
        line.setLine(at, y_range[0], at, y_range[1])
        text.setPos(at, y_range[0] + 0.92 * (y_range[1] - y_range[0]))
        text.setTransform(text.transform().fromTranslate(3, -text.boundingRect().height() / 2))

    def _place_thresholds(self, title: str) -> None:
        """Each threshold's line across the view, its label just below it, a fraction of the
        width from the left."""
        y_range = self._y_ranges.get(title)
        if y_range is None:
            return
        view = self.plots[title].getViewBox()
        width, height = view.width(), view.height()
        span = (y_range[1] - y_range[0]) or 1.0
        for fraction, value, line, text in self.thresholds[title]:
            y_px = (y_range[1] - value) / span * height
            shown = 0 <= y_px <= height
            line.setVisible(shown)
            text.setVisible(shown)
            line.setLine(0, y_px, width, y_px)
            text.setPos(fraction * width, y_px)

    def curve_data(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """The points the curve currently draws (for tests)."""
        return self._drawn.get(metric, (np.empty(0), np.empty(0)))

    # -- crosshair ------------------------------------------------------------------------------
    def _mouse_moved(self, pos: Any) -> None:
        for spec in self._specs:
            plot = self.plots[spec.title]
            if plot.sceneBoundingRect().contains(pos):
                x = plot.getViewBox().mapSceneToView(pos).x()
                self.show_crosshair(x)
                return

    def show_crosshair(self, x: float) -> str:
        """Put the crosshair at time x on every chart; the label shows each value there (read
        from the history now: the curves hold buckets, not every row)."""
        parts: list[str] = []
        for spec in self._specs:
            self.vlines[spec.title].setPos(x)
            self.vlines[spec.title].setVisible(True)
            for metric in spec.metrics:
                try:
                    times, values = self._source.window(metric, self.window_seconds)
                except KeyError:
                    continue
                if not len(times):
                    continue
                i = int(np.clip(np.searchsorted(times, x), 0, len(times) - 1))
                if i > 0 and abs(times[i - 1] - x) < abs(times[i] - x):
                    i -= 1
                v = values[i] * spec.scale
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
