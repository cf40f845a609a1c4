"""The Models tab: the catalog as it fits this device, the active model, load/unload/switch with a
progress bar by phase, cancel, and a refused switch's reason with the fallback on offer (and, when
only the temperature/power gate refused it, "Switch anyway" after a confirmation). The remote
endpoint's row shows whether it is usable now, probed in a worker thread every so often and on
Refresh."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.facade import (
    DEMO_NOTICE,
    GIB,
    STATE_PHASES,
    TERMINAL_PHASES,
    DeviceReading,
    HistoryStore,
    ManagerState,
    ModelEntry,
    ModelManager,
    RemoteConfig,
    RemoteHealth,
    RemoteState,
    StateChange,
    SwitchEvent,
    SwitchPhase,
    SwitchPlan,
    SwitchResult,
    check_remote_health,
)

COLUMNS = ("Model", "Engine / quant.", "Fits here", "On disk", "Expected tok/s",
           "Measured tok/s", "State")
STATE_COLUMN = COLUMNS.index("State")
REMOTE_CHECK_S = 30.0  # how often the remote endpoint is probed while the app runs


def is_demo(entry: ModelEntry) -> bool:
    """The locally built random-weight demo models (their output is noise)."""
    return entry.priority == "DEMO"


def describe_plan(plan: SwitchPlan) -> str:
    """Every check of a plan with its numbers, failed ones first, for people."""
    lines = [f"{'FAILED' if not c.passed else 'ok':6s} {c.name}: {c.detail}"
             for c in sorted(plan.checks, key=lambda c: c.passed)]
    return "\n".join(lines)


def phase_label(event: SwitchEvent) -> str:
    text = f"{event.phase.value.replace('_', ' ')}: {event.message or event.target}"
    if event.eta_s is not None and event.phase not in TERMINAL_PHASES:
        text += f" (about {event.eta_s:.0f} s left)"
    elif event.predicted_total_s is None and event.phase not in TERMINAL_PHASES:
        text += " (no history yet: no estimate)"
    return text


class ModelSwitcherPanel(QWidget):
    """Receives the manager and the history it shows; all work runs as named, kept tasks."""

    event_line = Signal(str, str)
    switch_finished = Signal(object)  # SwitchResult, or an Exception
    # A probe's RemoteHealth, emitted from its worker thread (queued to the GUI thread).
    remote_checked = Signal(object)

    def __init__(self, manager: ModelManager, history: HistoryStore,
                 parent: QWidget | None = None, *,
                 device: Callable[[], DeviceReading] | None = None,
                 remote: RemoteConfig | None = None,
                 remote_check_s: float = REMOTE_CHECK_S) -> None:
        super().__init__(parent)
        self._manager = manager
        self._history = history
        # The device as last sampled (Runtime.latest_reading): the fit column plans every row
        # against one reading per refresh. None: the manager reads its probe per row.
        self._device = device
        self._reading: DeviceReading | None = None
        self._remote = remote
        self.remote_health: RemoteHealth | None = None
        self._remote_worker: threading.Thread | None = None
        self.remote_timer = QTimer(self)
        self.remote_timer.setObjectName("models: remote health")
        self.remote_timer.setInterval(int(remote_check_s * 1000))
        self.remote_timer.timeout.connect(self.check_remote)
        self.remote_checked.connect(self._remote_health_arrived)
        self._tasks: set[asyncio.Task[None]] = set()
        self._measured: dict[str, float | None] = {}
        self.fallback_target: str | None = None
        self.force_target: str | None = None
        self.confirm_box: QMessageBox | None = None
        # Who else holds the GPU's memory (the app reads the sampler's latest process list):
        # named in a refusal on memory.
        self.vram_holders: Callable[[], str | None] | None = None

        self.active_label = QLabel()
        self.active_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.demo_notice = QLabel(
            f"{DEMO_NOTICE} It exercises loading, streaming and switching for real.")
        self.demo_notice.setWordWrap(True)
        self.demo_notice.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; "
                                       "padding: 6px; border-radius: 4px; }")
        self.demo_notice.setVisible(False)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.switch_selected())

        self.switch_button = QPushButton("Load / switch to selected")
        self.unload_button = QPushButton("Unload")
        self.cancel_button = QPushButton("Cancel switch")
        self.refresh_button = QPushButton("Refresh")
        # Shown when the app hands in a handler (gui/download_dialog.py does the work).
        self.download_button = QPushButton("Download…")
        self.download_button.setVisible(False)
        self.download_handler: Callable[[ModelEntry], object] | None = None
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.phase_text = QLabel("idle")
        self.refusal = QLabel()
        self.refusal.setWordWrap(True)
        self.refusal.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.refusal.setStyleSheet("QLabel { font-family: monospace; }")
        self.fallback_button = QPushButton()
        self.fallback_button.setVisible(False)
        self.force_button = QPushButton("Switch anyway…")
        self.force_button.setToolTip("Skip the temperature and power check (never the memory "
                                     "check); asks for confirmation first")
        self.force_button.setVisible(False)

        buttons = QHBoxLayout()
        for b in (self.switch_button, self.unload_button, self.cancel_button,
                  self.refresh_button, self.download_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.active_label)
        layout.addWidget(self.demo_notice)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.phase_text)
        layout.addWidget(self.refusal)
        offers = QHBoxLayout()
        offers.addWidget(self.fallback_button)
        offers.addWidget(self.force_button)
        offers.addStretch(1)
        layout.addLayout(offers)

        self.switch_button.clicked.connect(self.switch_selected)
        self.unload_button.clicked.connect(self.unload)
        self.cancel_button.clicked.connect(self.cancel)
        self.refresh_button.clicked.connect(self._refresh_clicked)
        self.download_button.clicked.connect(self.download_selected)
        self.fallback_button.clicked.connect(self._switch_to_fallback)
        self.force_button.clicked.connect(self.confirm_force)
        self.refresh()
        if remote is not None:
            self.remote_timer.start()
            self.check_remote()

    # -- display --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return any(not t.done() for t in self._tasks)

    def refresh(self) -> None:
        """Re-read the catalog, the plans on this device, and the measured throughput."""
        self._measured = {t.model: t.mean_tokens_per_s for t in self._history.throughput()}
        self._reading = self._device() if self._device is not None else None
        selected = self.selected_model()
        entries = list(self._manager.catalog)
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            self._fill_row(row, entry)
            if entry.id == selected:
                self.table.selectRow(row)
        self._show_state()

    def _fill_row(self, row: int, entry: ModelEntry) -> None:
        for col, text in enumerate(self._row(entry, self._measured.get(entry.id))):
            item = QTableWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, entry.id)
            item.setToolTip(text)
            self.table.setItem(row, col, item)
        health = self.remote_health
        state_item = self.table.item(row, STATE_COLUMN)
        if entry.is_remote and health is not None and state_item is not None:
            state_item.setToolTip(health.detail)

    def _sync_rows_with_state(self, state: ManagerState) -> None:
        """Re-draw the rows whose state changed since the table was filled: the header and the
        table read the same ManagerState, so they never disagree during a switch."""
        for row, entry in enumerate(self._manager.catalog):
            item = self.table.item(row, STATE_COLUMN)
            if item is not None and item.text() != self._state_text(entry, state):
                self._fill_row(row, entry)

    def _state_text(self, entry: ModelEntry, state: ManagerState) -> str:
        if entry.id == state.active_model:
            return "active" + (f" (context {state.max_model_len})" if state.max_model_len
                               else "")
        if entry.id == state.switching_to:
            return f"switching ({state.phase.value if state.phase else '…'})"
        if entry.id in state.crashing:
            return f"crashing: {state.crashing[entry.id]}"
        if not entry.enabled:
            return "disabled"
        return self._remote_text() if entry.is_remote else ""

    # -- the remote endpoint's health ---------------------------------------------------------
    def _remote_text(self) -> str:
        if self._remote is None:
            return ""
        health = self.remote_health
        checking = self.remote_checking
        if health is None:
            return "checking…" if checking else "not checked yet"
        text = health.state.value
        if health.state is RemoteState.NOT_SERVING:
            text = f"not serving {self._remote.model}"
        return text + (" (checking…)" if checking else
                       time.strftime(" (checked %H:%M:%S)", time.localtime(health.checked_at)))

    @property
    def remote_checking(self) -> bool:
        return self._remote_worker is not None and self._remote_worker.is_alive()

    def check_remote(self) -> bool:
        """Probe the remote endpoint in a worker thread (never on the GUI thread: DNS, TLS or a
        keyring prompt may take seconds); the answer arrives as `remote_checked`. False when no
        endpoint is configured or a probe is still running."""
        remote = self._remote
        if remote is None or self.remote_checking:
            return False

        def probe() -> None:
            health = check_remote_health(remote)
            with contextlib.suppress(RuntimeError):  # the panel was deleted meanwhile
                if self._remote is remote:  # not an endpoint removed or replaced meanwhile
                    self.remote_checked.emit(health)

        self._remote_worker = threading.Thread(target=probe, name="vrampilot-remote-health",
                                               daemon=True)
        self._remote_worker.start()
        self._show_state()
        return True

    def set_remote(self, remote: RemoteConfig | None) -> None:
        """The endpoint changed in Settings: probe the new one (none once it is removed) and
        show the catalog, whose remote entry follows it."""
        self._remote = remote
        self.remote_health = None
        self.remote_timer.stop()
        if remote is not None:
            self.remote_timer.start()
            self.check_remote()
        self.refresh()

    def _remote_health_arrived(self, health: RemoteHealth) -> None:
        before = self.remote_health
        self.remote_health = health
        if self._remote_worker is not None:
            self._remote_worker.join(0.5)  # it has emitted: it ends now
        if before is None or before.state is not health.state:
            level = "info" if health.state is RemoteState.REACHABLE else "warning"
            self.event_line.emit(level, f"remote endpoint {health.state.value}: {health.detail}")
        self._show_state()

    def _refresh_clicked(self) -> None:
        self.refresh()
        self.check_remote()

    def _row(self, entry: ModelEntry, measured: float | None) -> list[str]:
        m = self._manager
        status = self._state_text(entry, m.state)
        on_disk = "remote" if entry.is_remote else ("yes" if m.is_usable(entry) or
                                                   m.catalog.is_on_disk(entry) else "no")
        expected = ("–" if entry.expected_tokens_per_s is None
                    else "{:.0f}–{:.0f}".format(*entry.expected_tokens_per_s))
        return [entry.id,
                f"{entry.engine} / {entry.quantization}", self._fit_text(entry), on_disk,
                expected, "–" if measured is None else f"{measured:.1f}", status]

    def _fit_text(self, entry: ModelEntry) -> str:
        if entry.is_remote:
            return "remote endpoint" + ("" if self._manager.remote_configured(entry)
                                        else " (not configured)")
        try:
            plan = self._manager.plan_switch(entry.id, reading=self._reading)
        except Exception as exc:  # noqa: BLE001 - one bad entry must not blank the table
            return f"unknown: {exc}"
        fit = plan.fit
        if plan.noop:
            return "loaded"
        if fit is None:
            return plan.refusal or "–"
        memory_ok = all(c.passed for c in plan.checks if c.name == "memory")
        if memory_ok:
            return f"yes: {fit.needed_bytes / GIB:.2f} GiB, context {fit.context}"
        return f"no: needs {fit.needed_bytes / GIB:.2f} GiB" + (
            f" ({fit.detail})" if fit.detail else "")

    def _show_state(self) -> None:
        state = self._manager.state
        self._sync_rows_with_state(state)
        active = state.active_model
        text = f"Active model: <b>{active or 'none'}</b>"
        if state.switching_to:
            text += f" · switching to <b>{state.switching_to}</b>"
        if state.max_concurrent is not None:
            text += f" · at most {state.max_concurrent} request(s) at once (thermal policy)"
        self.active_label.setText(text)
        self.demo_notice.setVisible(self.demo_active())
        self._update_buttons()

    def demo_active(self) -> bool:
        active = self._manager.active_model
        return active is not None and active in self._manager.catalog and is_demo(
            self._manager.catalog.get(active))

    def selected_model(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return None if item is None else str(item.data(Qt.ItemDataRole.UserRole))

    def select_model(self, model_id: str) -> None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == model_id:
                self.table.selectRow(row)
                return
        raise KeyError(model_id)

    def _update_buttons(self) -> None:
        busy = self.busy
        self.switch_button.setEnabled(not busy and self.selected_model() is not None)
        self.unload_button.setEnabled(not busy and self._manager.active_model is not None)
        self.cancel_button.setEnabled(busy)
        self.refresh_button.setEnabled(True)
        self.download_button.setVisible(self.download_handler is not None)
        self.download_button.setEnabled(self.downloadable(self.selected_model()) is not None)

    def downloadable(self, model_id: str | None) -> ModelEntry | None:
        """The entry when it has a Hugging Face repository vLLM loads and is not on disk."""
        catalog = self._manager.catalog
        if model_id is None or model_id not in catalog:
            return None
        entry = catalog.get(model_id)
        if not entry.hf_repo or entry.is_gguf or catalog.is_on_disk(entry):
            return None
        return entry

    def download_selected(self) -> None:
        entry = self.downloadable(self.selected_model())
        if entry is not None and self.download_handler is not None:
            self.download_handler(entry)

    def on_switch_event(self, event: SwitchEvent) -> None:
        """Progress by phase: value from the history's prediction, busy bar without one."""
        if event.phase in STATE_PHASES:
            if event.phase in (StateChange.CRASHED, StateChange.UNLOADED):
                self.phase_text.setText(event.message)
            self.refresh()
            return
        progress = event.progress
        if progress is None:
            self.progress.setRange(0, 0)  # no history yet: an indeterminate bar
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(progress * 100))
        self.phase_text.setText(phase_label(event))
        if event.phase in TERMINAL_PHASES or event.phase == SwitchPhase.FALLBACK:
            if event.phase != SwitchPhase.READY:
                self.progress.setRange(0, 100)
                self.progress.setValue(0)
            self.refresh()
        else:
            self._show_state()

    # -- actions --------------------------------------------------------------------------------
    def switch_selected(self) -> None:
        target = self.selected_model()
        if target is not None:
            self.request_switch(target)

    def request_switch(self, target: str) -> bool:
        """Plan first (pure): a refusal is shown with its checks and a fallback, nothing runs.
        Returns whether a switch was started."""
        if self.busy:
            return False
        self._clear_refusal()
        try:
            plan = self._manager.plan_switch(target)
        except Exception as exc:  # noqa: BLE001 - shown, the panel stays usable
            self.event_line.emit("error", f"planning the switch to {target} failed: {exc}")
            return False
        if plan.noop:
            self.phase_text.setText(f"{target} is already active")
            return False
        if not plan.ok:
            self.show_refusal(plan)
            return False
        self._start(self._switch(target), f"switch to {target}")
        return True

    def show_refusal(self, plan: SwitchPlan) -> None:
        self.fallback_target = self._manager.first_fallback(plan.target)
        text = f"Switch to {plan.target} refused: {plan.refusal}\n{describe_plan(plan)}"
        memory_failed = any(c.name == "memory" and not c.passed for c in plan.checks)
        holders = self.vram_holders() if memory_failed and self.vram_holders else None
        if holders:
            text += f"\n{holders[0].upper()}{holders[1:]}"
        if self.fallback_target is None:
            text += "\nNo fallback model can load here now."
        self.refusal.setText(text)
        if self.fallback_target is not None:
            self.fallback_button.setText(f"Switch to the fallback {self.fallback_target} instead")
        self.fallback_button.setVisible(self.fallback_target is not None)
        # Only the temperature/power gate may be overridden, never memory, disk or a crash loop.
        self.force_target = plan.target if plan.refused_only_on_heat_or_power else None
        self.force_button.setVisible(self.force_target is not None)
        self.event_line.emit("warning", f"switch to {plan.target} refused: {plan.refusal}")

    def confirm_force(self) -> None:
        """Ask before skipping the gate. Non-modal (open(), not exec()): exec() inside the
        qasync loop fails ("Cannot enter into task"), and the window keeps painting meanwhile."""
        target = self.force_target
        if target is None or self.busy:
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "Switch anyway?",
                          f"Switch to {target} although the temperature or power check "
                          "refused it?\nThe memory check still applies. The history marks the "
                          "switch as forced.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                          self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.finished.connect(lambda result: self._force_confirmed(target, result))
        self.confirm_box = box
        box.open()

    def _force_confirmed(self, target: str, result: int) -> None:
        box, self.confirm_box = self.confirm_box, None
        if box is not None:
            box.deleteLater()
        if result != QMessageBox.StandardButton.Yes or self.busy:
            self.event_line.emit("info", f"forced switch to {target} not confirmed")
            return
        self._clear_refusal()
        self.event_line.emit("warning", f"switching to {target} anyway (temperature/power gate "
                             "skipped by the user)")
        self._start(self._switch(target, force=True), f"forced switch to {target}")

    def _clear_refusal(self) -> None:
        self.refusal.setText("")
        self.fallback_button.setVisible(False)
        self.force_button.setVisible(False)
        self.fallback_target = None
        self.force_target = None

    def _switch_to_fallback(self) -> None:
        if self.fallback_target is not None:
            self.request_switch(self.fallback_target)

    def unload(self) -> None:
        if not self.busy:
            self._start(self._unload(), "unload")

    def cancel(self) -> None:
        self._start(self._manager.cancel_switches(), "cancel")

    async def _switch(self, target: str, force: bool = False) -> None:
        result: SwitchResult | Exception
        try:
            result = await self._manager.switch_to(target, reason="manual", force=force)
        except Exception as exc:
            self.switch_finished.emit(exc)
            raise
        if result.outcome == "fallback":
            self.event_line.emit("warning", f"{target} could not load; {result.active} loaded "
                                 "instead: " + "; ".join(result.errors))
        elif not result.ok:
            self.event_line.emit("error", f"switch to {target} failed: " + "; ".join(result.errors))
            self.refusal.setText("Switch failed:\n" + "\n".join(result.errors))
        self.switch_finished.emit(result)

    async def _unload(self) -> None:
        active = self._manager.active_model
        await self._manager.unload()
        self.event_line.emit("info", f"unloaded {active}")

    def _start(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.ensure_future(self._guard(coro, what))
        task.set_name(f"models: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._update_buttons()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.refresh()

    async def _guard(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Any failure is logged for the user; the buttons come back when the task is done
        (`_task_done`), whatever the outcome."""
        try:
            await coro
        except asyncio.CancelledError:
            self.event_line.emit("info", f"{what} cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - shown in the Events tab, UI restored after
            self.event_line.emit("error", f"{what} failed: {type(exc).__name__}: {exc}")

    async def shutdown(self) -> None:
        """Cancel this panel's tasks and wait for them to unwind. A remote probe still running
        is left to end on its own (a daemon thread, bounded by its timeouts)."""
        self.remote_timer.stop()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
