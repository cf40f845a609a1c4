"""The Monitor tab's GPU header and process tables: clocks against their maximum, the throttle
reasons by name, who holds the VRAM (our engine marked), and the engine's processes on the host
with their resident memory.

It reads the sampler's latest sample (the sampler stays the only reader of the device) on its own
timer, so the table costs nothing between refreshes; each change of throttle reasons is logged by
name and shaded on the temperature and power charts.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.facade import (
    GpuProcess,
    GpuSnapshot,
    HostProcess,
    Sample,
    clock_events,
    engine_processes,
    gpu_metric,
)
from gui.chart_data import ChartAnnotations
from gui.charts import ChartPanel

GIB = 1024**3
MIB = 1024**2
PROCESS_COLUMNS = ("PID", "Process", "User", "GPU memory", "Owner")
HOST_COLUMNS = ("PID", "Process", "Role", "Resident memory (RSS)")
OURS = "vrampilot (ours)"
# Reasons worth a warning in the log (the rest, such as the routine power cap, are info).
WARN_REASONS = frozenset({"SwThermal", "HwThermal", "HwSlowdown", "HwPowerBrake"})


def throttle_metric(index: int, event: str) -> str:
    """The annotation metric of one GPU's throttle reason (shaded on its charts)."""
    return gpu_metric(index, f"clock_event.{event}")


def _mhz(current: int | None, maximum: int | None) -> str:
    if current is None:
        return "not reported"
    return f"{current} / {maximum} MHz" if maximum else f"{current} MHz"


def gpu_header(gpu: GpuSnapshot) -> str:
    """One line for one GPU: clocks (current / max), throttle reasons by name, fan."""
    if gpu.lost:
        return f"GPU {gpu.index} {gpu.name}: lost ({gpu.error})"
    fan = ("fan not reported" if gpu.fan_percent is None else f"fan {gpu.fan_percent:.0f} %")
    return (f"GPU {gpu.index} {gpu.name} · SM clock {_mhz(gpu.sm_clock_mhz, gpu.sm_clock_max_mhz)}"
            f" · memory clock {_mhz(gpu.mem_clock_mhz, gpu.mem_clock_max_mhz)}"
            f" · throttle: {clock_events.describe(gpu.clock_events)} · {fan}")


def _bytes(count: int | None) -> str:
    if count is None:
        return "not reported"
    return f"{count / GIB:.2f} GiB" if count >= GIB else f"{count / MIB:.0f} MiB"


def used_text(process: GpuProcess) -> str:
    return _bytes(process.used_bytes)


def host_cells(processes: tuple[HostProcess, ...]) -> list[tuple[str, ...]]:
    """This app first, then what it started: vLLM's engine core and workers, and helpers such
    as multiprocessing's resource tracker (each named as the system names it)."""
    own = processes[0].pid if processes else None
    return [(str(p.pid), p.name or "(gone or hidden)",
             "this app" if p.pid == own else f"started by it (child of {p.parent_pid})",
             _bytes(p.rss_bytes)) for p in processes]


def _table(columns: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    header = table.horizontalHeader()
    for column in range(len(columns)):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if column == 1
                                    else QHeaderView.ResizeMode.ResizeToContents)
    return table


def _set_text(table: QTableWidget, r: int, c: int, text: str) -> QTableWidgetItem:
    item = table.item(r, c)
    if item is None:
        item = QTableWidgetItem()
        table.setItem(r, c, item)
    if item.text() != text:  # unchanged cells cost nothing
        item.setText(text)
    return item


def table_rows(table: QTableWidget) -> list[tuple[str, ...]]:
    def text(r: int, c: int) -> str:
        item = table.item(r, c)
        return item.text() if item is not None else ""

    return [tuple(text(r, c) for c in range(table.columnCount()))
            for r in range(table.rowCount())]


class GpuStatusPanel(QWidget):
    """Header lines and the GPU process table, refreshed from the sampler's latest sample."""

    event_line = Signal(str, str)  # level, text

    def __init__(self, latest: Callable[[], Sample | None],
                 annotations: ChartAnnotations | None = None, refresh_ms: int = 1000,
                 parent: QWidget | None = None,
                 host: Callable[[], tuple[HostProcess, ...]] = engine_processes) -> None:
        super().__init__(parent)
        self._latest = latest
        self._host = host
        self._annotations = annotations
        self._events: dict[int, tuple[str, ...] | None] = {}  # GPU index -> last reasons
        self._shown_at: float | None = None
        self.header = QLabel("waiting for the first sample…")
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.header.setWordWrap(True)
        self.processes_title = QLabel("GPU processes")
        self.processes_note = QLabel("")
        self.processes_note.setStyleSheet("color: #999999")
        self.table = _table(PROCESS_COLUMNS)
        self.host_title = QLabel("The engine's processes on the host")
        self.host_table = _table(HOST_COLUMNS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.processes_title)
        layout.addWidget(self.processes_note)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.host_title)
        layout.addWidget(self.host_table, 1)
        self.timer = QTimer(self)
        self.timer.setObjectName("gpu-status")
        self.timer.setInterval(refresh_ms)
        self.timer.timeout.connect(self.refresh)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def refresh(self) -> None:
        """Show the newest sample (nothing to do when it was already shown)."""
        self._show_host_processes()
        sample = self._latest()
        if sample is None or sample.host.timestamp == self._shown_at:
            return
        self._shown_at = sample.host.timestamp
        if not sample.gpus:
            self.header.setText("No GPU: the engine runs on the CPU (host RAM)")
        else:
            self.header.setText("\n".join(gpu_header(g) for g in sample.gpus))
        for gpu in sample.gpus:
            self._note_throttle_changes(gpu)
        self._show_processes(sample.gpus)

    # -- throttle reasons -----------------------------------------------------------------------
    def _note_throttle_changes(self, gpu: GpuSnapshot) -> None:
        before = self._events.get(gpu.index)
        self._events[gpu.index] = gpu.clock_events
        started, ended = clock_events.changes(before, gpu.clock_events)
        for event in started:
            name = clock_events.reason_name(event)
            self.event_line.emit("warning" if event in WARN_REASONS else "info",
                                 f"GPU {gpu.index} throttling: {name} ({event}) started")
            if self._annotations is not None:
                self._annotations.alert_changed(throttle_metric(gpu.index, event), "throttle",
                                                "raised", gpu.timestamp, gpu.timestamp,
                                                label=f"throttle: {name}")
        for event in ended:
            self.event_line.emit("info", f"GPU {gpu.index} throttling: "
                                 f"{clock_events.reason_name(event)} ({event}) ended")
            if self._annotations is not None:
                self._annotations.alert_changed(throttle_metric(gpu.index, event), "throttle",
                                                "ended", gpu.timestamp, gpu.timestamp)

    # -- processes ------------------------------------------------------------------------------
    def _show_processes(self, gpus: tuple[GpuSnapshot, ...]) -> None:
        rows: list[GpuProcess] = []
        unreported = []
        for gpu in gpus:
            if gpu.processes is None:
                unreported.append(f"GPU {gpu.index}")
            else:
                rows.extend(gpu.processes)
        if not gpus:
            self.processes_note.setText("no GPU: nothing holds VRAM")
        elif unreported:
            self.processes_note.setText(
                f"{', '.join(unreported)} does not report its processes (NVML: not supported)")
        elif not rows:
            self.processes_note.setText("no process holds GPU memory")
        else:
            self.processes_note.setText("")
        rows.sort(key=lambda p: (p.used_bytes is None, -(p.used_bytes or 0), p.pid))
        self.table.setRowCount(len(rows))
        for r, proc in enumerate(rows):
            cells = (str(proc.pid), proc.name or "(gone or hidden)", proc.user or "",
                     used_text(proc), OURS if proc.ours else "")
            for c, text in enumerate(cells):
                item = _set_text(self.table, r, c, text)
                font = item.font()
                if font.bold() != proc.ours:
                    bold = QFont(font)
                    bold.setBold(proc.ours)
                    item.setFont(bold)

    def _show_host_processes(self) -> None:
        processes = self._host()
        rows = host_cells(processes)
        self.host_table.setRowCount(len(rows))
        for r, cells in enumerate(rows):
            for c, text in enumerate(cells):
                _set_text(self.host_table, r, c, text)
        total = sum(p.rss_bytes or 0 for p in processes)
        self.host_title.setText(f"The engine's processes on the host: {len(rows)}, "
                                f"{_bytes(total)} resident in all")

    def rows(self) -> list[tuple[str, ...]]:
        """The GPU process table as text (for tests and the screenshot)."""
        return table_rows(self.table)

    def host_rows(self) -> list[tuple[str, ...]]:
        """The host process table as text."""
        return table_rows(self.host_table)


class MonitorPanel(QWidget):
    """The Monitor tab: the GPU header above the charts, the process table below them."""

    def __init__(self, charts: ChartPanel, status: GpuStatusPanel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.charts = charts
        self.status = status
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(charts)
        splitter.addWidget(status)
        splitter.setStretchFactor(0, 5)
        splitter.setStretchFactor(1, 1)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addWidget(status.header)
        self._layout.addWidget(splitter, 1)

    def add_banner(self, banner: QWidget) -> None:
        """A notice above the header (the no-GPU offer)."""
        self._layout.insertWidget(0, banner)
