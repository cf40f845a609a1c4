"""The download dialog of the Models tab: fit first, then the files with bytes, rate, ETA, cancel.

The work is core.models.pull's (the same as `vrampilot pull`), run in one worker thread at a time;
its results reach the dialog through queued Qt signals. Opening the dialog asks the Hub for the
file list and config.json only and shows the estimator's verdict and the disk check; the weights
are fetched when the user presses Download (a model that does not fit says so on the button).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.facade import (
    Catalog,
    HardwareState,
    ModelEntry,
    Progress,
    PullCancelled,
    PullError,
    PullPlan,
    check_disk,
    download,
    fit_verdict,
    fmt_bytes,
    plan_pull,
)


def progress_text(p: Progress) -> str:
    eta = "?" if p.eta_s is None else f"{int(p.eta_s) // 60}m{int(p.eta_s) % 60:02d}s"
    return (f"{fmt_bytes(p.done_bytes)} of {fmt_bytes(p.total_bytes)} · "
            f"{fmt_bytes(p.rate_bytes_per_s)}/s · ETA {eta} · {p.file} "
            f"({p.files_done}/{p.files_total} files)")


class DownloadDialog(QDialog):
    """Fetch one repository. `downloaded` carries the snapshot path when every file is in."""

    downloaded = Signal(str)
    _planned = Signal(object)  # PullPlan, or PullError
    _progressed = Signal(object)  # Progress
    _finished = Signal(object)  # Path, or PullError

    def __init__(self, repo_id: str, entry: ModelEntry | None, catalog: Catalog,
                 device: Callable[[], HardwareState], buffer_bytes: int,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Download {repo_id}")
        self.repo_id = repo_id
        self._entry = entry
        self._catalog = catalog
        self._device = device
        self._buffer = buffer_bytes
        self._plan: PullPlan | None = None
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self._running = False
        self.result_path: Path | None = None

        self.summary = QLabel(f"Asking the Hub for {repo_id}'s files…")
        self.summary.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.download_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        for b in (self.download_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        for w in (self.summary, self.verdict, self.bar, self.status):
            layout.addWidget(w)
        layout.addLayout(buttons)
        self.resize(620, 220)

        # Emitted from the worker thread: always queued to this (the GUI) thread.
        queued = Qt.ConnectionType.QueuedConnection
        self._planned.connect(self._on_planned, queued)
        self._progressed.connect(self._on_progress, queued)
        self._finished.connect(self._on_finished, queued)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        self._run(self._plan_work, "plan")

    # -- worker thread --------------------------------------------------------------------------
    def _run(self, target: Callable[[], None], what: str) -> None:
        if self._worker is not None:
            self._worker.join()  # it has posted its result: it is only returning
        self._running = True
        self._worker = threading.Thread(target=target, name=f"vrampilot-download-{what}",
                                        daemon=True)
        self._worker.start()

    def _plan_work(self) -> None:
        try:
            plan = plan_pull(self.repo_id)
            check_disk(plan)
            self._planned.emit(plan)
        except PullError as exc:
            self._planned.emit(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never a crash
            self._planned.emit(PullError(f"{self.repo_id}: {exc}"))

    def _download_work(self, plan: PullPlan) -> None:
        try:
            self._finished.emit(download(plan, self._progressed.emit, self._cancel))
        except PullError as exc:
            self._finished.emit(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never a crash
            self._finished.emit(PullError(f"{self.repo_id}: {exc}"))

    # -- GUI thread -----------------------------------------------------------------------------
    @property
    def plan(self) -> PullPlan | None:
        """What the Hub listed and what is still missing (None until the Hub answers)."""
        return self._plan

    @property
    def busy(self) -> bool:
        """A plan or a download is under way (its result not yet shown)."""
        return self._running

    def _on_planned(self, result: object) -> None:
        self._running = False
        if isinstance(result, PullError):
            self.summary.setText(str(result))
            self.cancel_button.setEnabled(False)
            return
        assert isinstance(result, PullPlan)
        self._plan = result
        self.summary.setText(f"{self.repo_id} @ {result.commit[:12]}: {len(result.files)} files, "
                             f"{fmt_bytes(result.total_bytes)}; "
                             f"{fmt_bytes(result.missing_bytes)} to fetch into "
                             f"{result.cache_dir}")
        try:
            est = fit_verdict(result, self._entry, self._catalog, self._device(), self._buffer)
        except (ValueError, TypeError) as exc:
            self.verdict.setText(f"Fit: unknown ({exc})")
        else:
            self.verdict.setText(f"Fit on {self._device().label}: "
                                 f"{'yes' if est.fits else 'NO'} — {est.reason}")
            if not est.fits:
                self.download_button.setText("Download anyway (it will not fit)")
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def start_download(self) -> None:
        if self._plan is None or self.busy:
            return
        self._cancel.clear()
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("starting…")
        plan = self._plan
        self._run(lambda: self._download_work(plan), "files")

    def _on_progress(self, p: Progress) -> None:
        if p.total_bytes:
            self.bar.setValue(int(1000 * p.done_bytes / p.total_bytes))
        self.status.setText(progress_text(p))

    def _on_finished(self, result: object) -> None:
        self._running = False
        self.cancel_button.setEnabled(False)
        if isinstance(result, Path):
            self.result_path = result
            self.bar.setValue(1000)
            self.status.setText(f"On disk: {result}")
            self.downloaded.emit(str(result))
            return
        if isinstance(result, PullCancelled):
            self.status.setText("Cancelled. Files already complete are kept: Download again "
                                "fetches the rest.")
        else:
            self.status.setText(str(result))
        self._plan = None
        self.download_button.setEnabled(False)
        self._run(self._plan_work, "plan")  # re-plan: what is missing now

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float = 30.0) -> None:
        """Join the worker (tests, shutdown): cancel first to make it quick."""
        if self._worker is not None:
            self._worker.join(timeout)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Closing cancels; the worker stops at its next chunk without holding up the window.
        self._cancel.set()
        super().closeEvent(event)
