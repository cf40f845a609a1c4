"""The History tab's routing page: how often the router was right per task type (by the users'
verdicts), the confusion between the model that answered and the one wanted, the task
distribution by tier against the record's estimate, and model uptime against its 95 % target."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QBrush, QColor, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QGridLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from core.facade import RoutingReport
from gui.charts import theme_plot

MEASURED_COLOR = "#4ea1ff"
ESTIMATE_COLOR = "#adb5bd"
RIGHT_COLOR = QColor(46, 160, 67, 90)
WRONG_COLOR = QColor(220, 53, 69, 90)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f} %"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


class RoutingPanel(QWidget):
    """Takes a function that builds the report; `refresh()` re-reads it."""

    def __init__(self, report: Callable[[], RoutingReport],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._build = report
        self.report: RoutingReport | None = None
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.accuracy_table = _table(["Task type", "Router right", "Right / rated", "Logged"])
        self.confusion_table = _table([])
        self.confusion_table.horizontalHeader().setStretchLastSection(False)
        self.confusion_table.setToolTip("Rows: the model that answered; columns: the model "
                                        "the user wanted. The diagonal is 'good'.")
        self.uptime_label = QLabel("")
        self.uptime_label.setWordWrap(True)
        self.uptime_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # The tier chart is built when first shown or read (_tier_chart): a pyqtgraph plot costs
        # ~20 ms of CPU, and this page is not on screen at launch.
        self.tier_plot_widget: pg.PlotWidget | None = None

        grid = self._grid = QGridLayout(self)
        grid.addWidget(self.summary, 0, 0, 1, 2)
        grid.addWidget(QLabel("How often the router was right, per task type"), 1, 0)
        grid.addWidget(QLabel("Answered (rows) against wanted (columns)"), 1, 1)
        grid.addWidget(self.accuracy_table, 2, 0)
        grid.addWidget(self.confusion_table, 2, 1)
        grid.addWidget(self.uptime_label, 3, 1, Qt.AlignmentFlag.AlignTop)
        grid.setRowStretch(2, 1)
        grid.setRowStretch(3, 1)
        self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        self._tier_chart()
        super().showEvent(event)

    def _tier_chart(self) -> pg.PlotWidget:
        if self.tier_plot_widget is not None:
            return self.tier_plot_widget
        self.tier_plot_widget = pg.PlotWidget()
        self.tier_plot = self.tier_plot_widget.getPlotItem()
        self.tier_plot.setTitle("Task distribution by tier (%): measured and the record's estimate")
        self.tier_plot.setMouseEnabled(x=False, y=False)
        self.tier_plot.showGrid(y=True, alpha=0.2)
        self.tier_plot.addLegend(offset=(-10, 10))  # top right, where the expert bars are low
        self.measured_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=MEASURED_COLOR,
                                             name="measured")
        self.estimate_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=ESTIMATE_COLOR,
                                             name="estimate")
        self.tier_plot.addItem(self.measured_bars)
        self.tier_plot.addItem(self.estimate_bars)
        self.apply_palette(self.palette())
        self._grid.addWidget(self.tier_plot_widget, 3, 0)
        if self.report is not None:
            self._fill_tiers(self.report)
        return self.tier_plot_widget

    def apply_palette(self, palette: QPalette) -> None:
        if self.tier_plot_widget is not None:
            theme_plot(self.tier_plot_widget, self.tier_plot, palette)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.apply_palette(QApplication.palette(self))
        super().changeEvent(event)

    def refresh(self) -> None:
        report = self.report = self._build()
        self.summary.setText(
            f"{report.requests} routed requests logged, {report.rated} rated with the "
            f"Playground's feedback bar; the router was right for {_pct(report.accuracy)} "
            "of the rated ones.")
        self._fill_accuracy(report)
        self._fill_confusion(report)
        self._fill_tiers(report)
        self._fill_uptime(report)

    def _fill_accuracy(self, report: RoutingReport) -> None:
        table = self.accuracy_table
        table.setRowCount(len(report.by_task))
        for row, t in enumerate(report.by_task):
            for col, text in enumerate((t.task_type, _pct(t.accuracy), f"{t.right} / {t.rated}",
                                        str(t.logged))):
                table.setItem(row, col, QTableWidgetItem(text))

    def _fill_confusion(self, report: RoutingReport) -> None:
        answered = sorted({a for a, _ in report.confusion})
        wanted = sorted({w for _, w in report.confusion} | set(answered))
        table = self.confusion_table
        table.setColumnCount(len(wanted))
        table.setHorizontalHeaderLabels(wanted)
        table.setRowCount(len(answered))
        table.setVerticalHeaderLabels(answered)
        table.verticalHeader().setVisible(bool(answered))
        for row, a in enumerate(answered):
            for col, w in enumerate(wanted):
                count = report.confusion.get((a, w), 0)
                item = QTableWidgetItem(str(count) if count else "")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if count:
                    item.setBackground(QBrush(RIGHT_COLOR if a == w else WRONG_COLOR))
                table.setItem(row, col, item)

    def _fill_tiers(self, report: RoutingReport) -> None:
        if self.tier_plot_widget is None:
            return  # filled when built
        x = np.arange(len(report.tiers), dtype=float)
        self.measured_bars.setOpts(x=x - 0.2, width=0.38,
                                   height=[(t.share or 0.0) * 100 for t in report.tiers])
        self.estimate_bars.setOpts(x=x + 0.2, width=0.38,
                                   height=[t.estimate * 100 for t in report.tiers])
        ticks = [(float(i), f"{t.tier} (n={t.count})") for i, t in enumerate(report.tiers)]
        self.tier_plot.getAxis("bottom").setTicks([ticks])
        self.tier_plot.setXRange(-0.6, len(report.tiers) - 0.4, padding=0)
        top = max([40.0, *((t.share or 0.0) * 100 for t in report.tiers)])
        self.tier_plot.setYRange(0, top * 1.15, padding=0)

    def _fill_uptime(self, report: RoutingReport) -> None:
        up = report.uptime
        verdict = {True: "meets", False: "is below", None: "has no data yet for"}[
            up.meets_target]
        lines = [f"<b>Model uptime {_pct(up.share)}</b>: {verdict} the record's "
                 f"{_pct(up.target)} target",
                 f"over {_duration(up.counted_s)} in {up.sessions} session(s): ready "
                 f"{_duration(up.seconds['ready'])}, switching "
                 f"{_duration(up.seconds['switching'])}, down {_duration(up.seconds['down'])} "
                 f"(idle {_duration(up.seconds['idle'])}, not counted)."]
        lines += [f"ready on {m}: {_duration(s)}" for m, s in up.ready_by_model.items()
                  if s >= 0.5]
        lines.append("<small>Uptime: the share of time a model was ready to answer, from a "
                     "session's first ready model to its end; switching, crashes and failed "
                     "switches count against it; time with no model because none was asked for "
                     "(or you unloaded it) does not.</small>")
        self.uptime_label.setText("<br>".join(lines))

    def tier_chart_data(self) -> dict[str, tuple[float, float]]:
        """What the tier chart shows, by tier: (measured %, estimate %) (for tests)."""
        self._tier_chart()
        assert self.report is not None
        measured = self.measured_bars.opts["height"]
        estimate = self.estimate_bars.opts["height"]
        return {t.tier: (float(measured[i]), float(estimate[i]))
                for i, t in enumerate(self.report.tiers)}
