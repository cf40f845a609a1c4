"""The History tab: past switches from SQLite with mean / p95 switch time per model pair, and (its
second page, gui/routing_panel.py) the routing feedback, task tiers and model uptime."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QPalette, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.facade import PHASE_COLUMNS, HistoryStore, PairStats, SwitchRecord, build_report
from gui.charts import theme_plot
from gui.routing_panel import RoutingPanel

COLUMNS = ("When", "From", "To", "Reason", *(p.replace("_", " ") for p in PHASE_COLUMNS),
           "Total s", "Load breakdown s", "Outcome", "Error")
MEAN_COLOR = "#4ea1ff"
P95_COLOR = "#ff9f43"


def pair_label(stats: PairStats) -> str:
    return f"{stats.from_model or '(none)'} → {stats.to_model}"


class HistoryPanel(QWidget):
    """Receives the history store; `refresh()` re-reads it (the window calls it after a switch)."""

    def __init__(self, history: HistoryStore, limit: int = 200,
                 parent: QWidget | None = None, live_session: str | None = None) -> None:
        super().__init__(parent)
        self._history = history
        self._limit = limit
        self.records: list[SwitchRecord] = []
        self.pairs: list[PairStats] = []

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)

        # The chart is built when first shown or read (_chart): a pyqtgraph plot costs ~20 ms of
        # CPU, and this tab is not on screen at launch.
        self.plot_widget: pg.PlotWidget | None = None
        self.empty_label = QLabel("No successful switches recorded yet.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        chart_box = QWidget()
        self._chart_layout = QVBoxLayout(chart_box)
        self._chart_layout.setContentsMargins(0, 0, 0, 0)
        self._chart_layout.addWidget(self.empty_label)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(chart_box)
        split.setSizes([350, 300])
        # live_session: this app's own uptime session, counted up to now.
        self.routing = RoutingPanel(lambda: build_report(history, live_session=live_session))
        self.pages = QTabWidget()
        self.pages.addTab(split, "Switches")
        self.pages.addTab(self.routing, "Routing feedback && uptime")
        layout = QVBoxLayout(self)
        layout.addWidget(self.pages)
        self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        self._chart()
        # Feedback and uptime change without a switch: show them as they are now.
        self.routing.refresh()
        super().showEvent(event)

    def _chart(self) -> pg.PlotWidget:
        if self.plot_widget is not None:
            return self.plot_widget
        self.plot_widget = pg.PlotWidget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setTitle("Successful switch time per model pair (s): mean and p95")
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.addLegend(offset=(10, 10))
        self.mean_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=MEAN_COLOR,
                                         name="mean")
        self.p95_bars = pg.BarGraphItem(x=[], height=[], width=0.38, brush=P95_COLOR, name="p95")
        self.plot.addItem(self.mean_bars)
        self.plot.addItem(self.p95_bars)
        self.apply_palette(self.palette())
        self._chart_layout.addWidget(self.plot_widget, 1)
        self._fill_chart()
        return self.plot_widget

    def apply_palette(self, palette: QPalette) -> None:
        """Chart background and text follow the window palette (light or dark)."""
        if self.plot_widget is not None:
            theme_plot(self.plot_widget, self.plot, palette)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.apply_palette(QApplication.palette(self))
        super().changeEvent(event)

    def refresh(self) -> None:
        """Re-read the switches and the pair statistics from the store."""
        self.records = self._history.recent(self._limit)
        self.pairs = self._history.pair_stats()
        self._fill_table()
        self._fill_chart()
        self.routing.refresh()

    def _fill_table(self) -> None:
        self.table.setRowCount(len(self.records))
        for row, r in enumerate(self.records):
            phases = [f"{r.phases[p]:.2f}" if p in r.phases else "" for p in PHASE_COLUMNS]
            breakdown = ", ".join(f"{p.replace('_', ' ')} {s:.2f}"
                                  for p, s in r.load_phases.items())
            if breakdown and r.engine_start:  # spawned or forked: why loads differ tenfold
                breakdown = f"{r.engine_start.replace('_', ' ')}: {breakdown}"
            cells = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at)),
                     r.from_model or "", r.to_model, r.reason_label, *phases, f"{r.total_s:.2f}",
                     breakdown, r.outcome, r.error or ""]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if r.error and col == len(cells) - 1:
                    item.setToolTip(r.error)
                self.table.setItem(row, col, item)

    def _fill_chart(self) -> None:
        n = len(self.pairs)
        self.empty_label.setVisible(n == 0)
        if self.plot_widget is None:
            return  # filled when built
        x = np.arange(n, dtype=float)
        self.mean_bars.setOpts(x=x - 0.2, height=[p.mean_s for p in self.pairs], width=0.38)
        self.p95_bars.setOpts(x=x + 0.2, height=[p.p95_s for p in self.pairs], width=0.38)
        ticks = [(float(i), f"{pair_label(p)} (n={p.count})") for i, p in enumerate(self.pairs)]
        self.plot.getAxis("bottom").setTicks([ticks])
        if n:
            self.plot.setXRange(-0.6, n - 0.4, padding=0)
            self.plot.setYRange(0, max(p.p95_s for p in self.pairs) * 1.15, padding=0)

    def chart_data(self) -> dict[str, tuple[float, float]]:
        """What the chart shows, by pair label: (mean, p95) (for tests)."""
        self._chart()
        means = self.mean_bars.opts["height"]
        p95s = self.p95_bars.opts["height"]
        return {pair_label(p): (float(means[i]), float(p95s[i]))
                for i, p in enumerate(self.pairs)}
