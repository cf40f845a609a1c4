"""The "Soak test" tab: run sustained generation on the active model with a live view, stop it
at any time, read the report; reopen a saved run, or overlay a second one on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.facade import (
    CHART_FILE,
    MAX_CONCURRENCY,
    EngineError,
    SoakInputError,
    SoakRun,
    SoakRunner,
    SoakSettings,
    describe_soak_run,
    load_run,
    save_run,
    series_of,
    soak_dir,
)
from gui.soak_view import SoakCharts

RunnerFactory = Callable[[SoakSettings], SoakRunner]
LIVE_REFRESH_MS = 1000
SAVE_ON_EXIT_S = 3.0  # a stopped soak ends its streams and saves within this at app exit


class SoakPanel(QWidget):
    """Settings, Start / Stop, the live charts, the report; Open… and Overlay… saved runs."""

    event_line = Signal(str, str)

    def __init__(self, make_runner: RunnerFactory, model_choices: Callable[[], list[str]],
                 active_model: Callable[[], str | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._make_runner = make_runner
        self._model_choices = model_choices
        self._active_model = active_model
        self.runner: SoakRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.runs: list[SoakRun] = []  # shown now: one, or two overlaid

        self.model_box = QComboBox()
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.05, 240.0)
        self.minutes.setDecimals(2)
        self.minutes.setValue(10.0)
        self.minutes.setSuffix(" min")
        self.concurrency = QSpinBox()
        self.concurrency.setRange(1, MAX_CONCURRENCY)
        self.prompt_tokens = QSpinBox()
        self.prompt_tokens.setRange(1, 32768)
        self.prompt_tokens.setValue(256)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 32768)
        self.max_tokens.setValue(256)
        form = QFormLayout()
        form.addRow("Model", self.model_box)
        form.addRow("Duration", self.minutes)
        form.addRow("Concurrent requests", self.concurrency)
        form.addRow("Prompt tokens (about)", self.prompt_tokens)
        form.addRow("Max tokens per request", self.max_tokens)

        self.start_button = QPushButton("Start soak")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.open_button = QPushButton("Open run…")
        self.overlay_button = QPushButton("Overlay run…")
        self.overlay_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.open_button.clicked.connect(lambda: self._ask_run(overlay=False))
        self.overlay_button.clicked.connect(lambda: self._ask_run(overlay=True))
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.open_button, self.overlay_button):
            buttons.addWidget(b)
        self.status = QLabel("Sustained generation on one model: when does it throttle, how hot "
                             "does it settle, what does a token cost?")
        self.status.setWordWrap(True)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)  # the table's columns
        self.summary.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addLayout(form)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.status)
        left_layout.addWidget(self.summary, 1)
        self.charts = SoakCharts()
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.charts)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([520, 1000])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self._live = QTimer(self)
        self._live.setObjectName("soak-live")
        self._live.setInterval(LIVE_REFRESH_MS)
        self._live.timeout.connect(self.refresh_live)
        self.refresh_models()

    # -- running --------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        current = self._active_model() or self.model_box.currentText()
        self.model_box.clear()
        self.model_box.addItems(self._model_choices())
        index = self.model_box.findText(current)
        if index >= 0:
            self.model_box.setCurrentIndex(index)

    def settings(self) -> SoakSettings:
        return SoakSettings(minutes=self.minutes.value(), concurrency=self.concurrency.value(),
                            prompt_tokens=self.prompt_tokens.value(),
                            max_tokens=self.max_tokens.value(),
                            model=self.model_box.currentText() or None)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        try:
            self.runner = self._make_runner(self.settings())
        except SoakInputError as exc:
            self.status.setText(str(exc))
            return
        self.runs = []
        self.summary.clear()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.overlay_button.setEnabled(False)
        self.status.setText(f"soaking {self.runner.settings.model} (the model loads first if "
                            "it is not active)…")
        self._task = asyncio.ensure_future(self._run(self.runner))
        self._live.start()

    def stop(self) -> None:
        """End the run now; the report covers what ran."""
        if self.runner is not None and self.running:
            self.runner.stop()
            if self.runner.recording is None and self._task is not None:
                self._task.cancel()  # still loading the model: nothing to report

    def note(self, level: str, text: str) -> None:
        """The runtime's log lines (alert actions go into the running soak's report)."""
        if self.runner is not None and self.running:
            self.runner.note(level, text)

    async def _run(self, runner: SoakRunner) -> None:
        try:
            report = await runner.run()
            assert runner.recording is not None
            run = save_run(report, runner.recording)
            self.show_runs([run])
            with contextlib.suppress(OSError):
                self.charts.export_png(run.folder / CHART_FILE)
            self.status.setText(f"saved in {run.folder}")
            self.event_line.emit("info", f"soak of {report['model']}: {report['end_reason']}; "
                                 f"saved in {run.folder}")
        except asyncio.CancelledError:
            self.status.setText("soak cancelled before it started")
        except (EngineError, SoakInputError) as exc:
            self.status.setText(f"soak failed: {exc}")
            self.event_line.emit("error", f"soak failed: {exc}")
        finally:
            self._live.stop()
            self.start_button.setEnabled(True)
            self.stop_button.setEnabled(False)

    def refresh_live(self) -> None:
        runner = self.runner
        if runner is None or runner.recording is None:
            return
        recording = runner.recording.copy()
        series = series_of(recording)
        self.charts.show_runs([("live", series)])
        if len(series):
            self.status.setText(
                f"{series.t_s[-1]:.0f} s of {runner.settings.minutes * 60:.0f} s, "
                f"{int(series.tokens.sum())} tokens, {series.temperature_c[-1]:.1f} °C, "
                f"{series.power_w[-1]:.0f} W"
                + (f", throttled ({series.throttle_reasons[-1]})"
                   if series.throttle_reasons[-1] else ""))

    # -- saved runs -----------------------------------------------------------------------------
    def open_run(self, path: Path | str) -> SoakRun:
        """Show a saved run alone (ValueError names a file that is not a soak run)."""
        run = load_run(path)
        self.show_runs([run])
        return run

    def overlay_run(self, path: Path | str) -> SoakRun:
        """Draw a second saved run over the one shown (dashed)."""
        if not self.runs:
            raise ValueError("open a run first, then overlay another on it")
        run = load_run(path)
        self.show_runs([self.runs[0], run])
        return run

    def show_runs(self, runs: list[SoakRun]) -> None:
        self.runs = runs
        self.charts.show_runs([(r.label, r.series) for r in runs])
        self.summary.setPlainText("\n\n".join(describe_soak_run(r.report) for r in runs))
        self.overlay_button.setEnabled(bool(runs))

    def _ask_run(self, overlay: bool) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a soak run", str(soak_dir()))
        if not folder:
            return
        try:
            (self.overlay_run if overlay else self.open_run)(folder)
        except ValueError as exc:
            self.status.setText(str(exc))

    async def shutdown(self) -> None:
        """Stop a running soak and let it save its report (app exit), briefly."""
        task = self._task
        if task is not None and not task.done():
            self.stop()
            await asyncio.wait({task}, timeout=SAVE_ON_EXIT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def runner_factory(runtime: Any) -> RunnerFactory:
    """SoakRunners on the app's runtime (its ChatSession and sampler)."""
    def make(settings: SoakSettings) -> SoakRunner:
        gpus = runtime.gpu_snapshots()
        label = gpus[0].name if gpus else "host (CPU engine)"
        return SoakRunner(runtime.chat, runtime.sampler, settings, device_label=label,
                          simulated=runtime.simulated)
    return make
