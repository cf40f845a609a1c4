"""Entry point of the desktop app: one QApplication, one qasync loop, all wiring in one place
(`AppController._connect_signals`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from core.facade import (
    CLOSE_DEADLINE_S,
    DEMO_NOTICE,
    GIB,
    STATE_PHASES,
    TERMINAL_PHASES,
    AlertEvent,
    ApiService,
    AppConfig,
    ModelEntry,
    RecentRuns,
    Runtime,
    ServerConfigError,
    ServerSettings,
    StateChange,
    SwitchEvent,
    SwitchPhase,
    TelemetryRecorder,
    add_dir,
    data_dir,
    gpu_metric,
    import_control_server,
    logs_dir,
    others_holding,
    resolve_api_key,
    resource,
    settings_file,
)
from gui.bridge import CoreBridge
from gui.chart_data import ChartAnnotations, ChartSpec
from gui.charts import ChartPanel
from gui.download_dialog import DownloadDialog
from gui.event_loop import AppEventLoop
from gui.events_panel import EventsPanel, TrayNotifier
from gui.first_run import NoGpuBanner
from gui.gpu_panel import GpuStatusPanel, MonitorPanel, throttle_metric
from gui.history_panel import HistoryPanel
from gui.main_window import MainWindow
from gui.model_switcher import ModelSwitcherPanel, phase_label
from gui.playground import PlaygroundPanel
from gui.recording_controls import RecordingControls
from gui.settings_dialog import SettingsDialog, open_settings
from gui.soak_panel import SoakPanel, runner_factory
from gui.tray import AppTray, TrayModels

if TYPE_CHECKING:
    from core.facade import ControlServer, InstanceLock

# Quitting ends within 3 s: the panels' tasks get CANCEL_WAIT_S to unwind, the core's close the
# rest of CLOSE_DEADLINE_S.
CANCEL_WAIT_S = 0.3
# Test hooks (tests/test_quit_vllm.py): report switch phases on stdout; switch to a second model
# once the first is loaded.
REPORT_PHASES_ENV = "VRAMPILOT_REPORT_PHASES"
SWITCH_AFTER_AUTOLOAD_ENV = "VRAMPILOT_SWITCH_AFTER_AUTOLOAD"
# How long start() waits for the window's first paint before doing its slow work anyway.
FIRST_PAINT_WAIT_MS = 2000


def report(line: str) -> None:
    """A line for a test or benchmark watching the app from outside."""
    sys.stdout.write(f"vrampilot: {line}\n")
    sys.stdout.flush()


def chart_specs(runtime: Runtime) -> list[ChartSpec]:
    """The charts: each GPU's VRAM / temperature / power / utilisation, plus host RAM and CPU."""
    t = runtime.config.monitoring.hardware_monitoring.thresholds
    specs: list[ChartSpec] = []
    for gpu in runtime.gpu_snapshots():
        m = partial(gpu_metric, gpu.index)  # m("power_w") -> "gpu0.power_w"
        total_gib = (gpu.vram_total_bytes or 0) / GIB
        lost = (m("lost"),)
        # Throttle reasons by name, shaded on the charts they explain.
        thermal = tuple(throttle_metric(gpu.index, e) for e in ("SwThermal", "HwThermal",
                                                               "HwSlowdown"))
        power = tuple(throttle_metric(gpu.index, e) for e in ("SwPowerCap", "HwPowerBrake"))
        specs += [
            ChartSpec(f"{gpu.name} VRAM used of {total_gib:.0f} GiB", "GiB",
                      (m("vram_used_bytes"),), 1 / GIB,
                      (("warning", t.vram_usage.warning * total_gib),
                       ("critical", t.vram_usage.critical * total_gib)),
                      alert_metrics=(m("vram_usage"), *lost)),
            ChartSpec(f"{gpu.name} temperature", "°C", (m("temperature_c"),), 1.0,
                      (("warning", t.temperature.warning), ("critical", t.temperature.critical))
                      + ((("throttle", gpu.throttle_temperature_c),)
                         if gpu.throttle_temperature_c else ()),
                      alert_metrics=(m("temperature_c"), m("thermal_throttle"), *thermal,
                                     *lost)),
            ChartSpec(f"{gpu.name} power (draw, enforced limit)", "W",
                      (m("power_w"), m("power_limit_w")), 1.0,
                      (("warning", t.power.warning), ("critical", t.power.critical)),
                      alert_metrics=(m("power_w"), *power, *lost)),
            ChartSpec(f"{gpu.name} utilisation", "%", (m("gpu_util_percent"),),
                      alert_metrics=lost),
        ]
        if gpu.fan_percent is not None:  # laptops report none: said in the header, not drawn
            specs.append(ChartSpec(f"{gpu.name} fan", "%", (m("fan_percent"),),
                                   alert_metrics=lost))
    specs += [
        ChartSpec("Host RAM used", "GiB", ("host.ram_used_bytes",), 1 / GIB),
        ChartSpec("Host CPU", "%", ("host.cpu_percent",)),
    ]
    return specs


def _at_start(config: AppConfig) -> object:
    """The start-up options that take effect only at the next start (keep_in_tray is live)."""
    return config.startup.model_copy(update={"keep_in_tray": False})


class AppController(QObject):
    """Builds the panels from the runtime's core objects and wires them; owns start and the
    graceful shutdown (cancel generation and switches, shut the engine down, close)."""

    def __init__(self, runtime: Runtime, settings: QSettings | None = None,
                 tray: bool = True, server: ServerSettings | None = None,
                 config_path: Path | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        # The user's config file: the one given with --config, else the default one; File >
        # Settings writes it.
        self.config_path = config_path or settings_file.default_file()
        self.settings_dialog: SettingsDialog | None = None
        self.api = ApiService(runtime, server or runtime.config.server,
                              routers=[self._control_router])
        self.bridge = CoreBridge()
        self.annotations = ChartAnnotations()
        self.charts = ChartPanel(runtime.history, chart_specs(runtime), self.annotations,
                                 export_csv=runtime.history.export_csv)
        self.gpu_status = GpuStatusPanel(lambda: runtime.sampler.latest, self.annotations)
        self.monitor = MonitorPanel(self.charts, self.gpu_status)
        self.models = ModelSwitcherPanel(runtime.manager, runtime.history_store,
                                         device=runtime.latest_reading,
                                         remote=runtime.config.remote)
        self.models.download_handler = self.open_download
        self.models.vram_holders = self._vram_holders
        self.download_dialog: DownloadDialog | None = None
        self.history = HistoryPanel(runtime.history_store, live_session=runtime.uptime.session)
        self.playground = PlaygroundPanel(runtime.chat, demo_active=self.models.demo_active,
                                          recent=RecentRuns(data_dir()))
        icon = QIcon(str(resource("icons", "vrampilot.svg")))
        self.notifier: TrayNotifier | None = None
        self.events = EventsPanel(runtime.alert_policy, runtime.set_alert_policy, None)
        self.window = MainWindow(self.charts, self.models, self.history, self.playground,
                                 self.events, settings,
                                 " (simulated GPU)" if runtime.simulated else "",
                                 files=[("history database", runtime.history_store.path),
                                        ("engine logs", logs_dir())],
                                 monitor=self.monitor)
        # No NVIDIA GPU: offered once, the simulated laptop card in one click (a restart).
        self.relaunch_simulated = False
        if NoGpuBanner.wanted(bool(runtime.devices), runtime.simulated, settings):
            self.monitor.add_banner(NoGpuBanner(self._restart_simulated, settings))
        # Into the window's File menu, first: adding a model folder is a File action.
        file_menu = self.window.file_menu
        add_dir_action = QAction("Add model directory…", self.window)
        add_dir_action.triggered.connect(self._choose_model_directory)
        file_menu.insertAction(file_menu.actions()[0], add_dir_action)
        settings_action = QAction("Settings…", self.window)
        settings_action.setShortcut(QKeySequence("Ctrl+,"))
        settings_action.triggered.connect(lambda _checked=False: self.open_settings())
        quit_action = self.window.actions_by_name["Quit"]
        file_menu.insertAction(quit_action, settings_action)
        file_menu.insertSeparator(quit_action)
        self.window.actions_by_name["Settings"] = settings_action
        self.soak = SoakPanel(runner_factory(runtime), runtime.chat.model_choices,
                              lambda: runtime.manager.active_model)
        self.window.tabs.insertTab(self.window.tabs.count() - 1, self.soak, "Soak test")
        # Parented at construction: setCornerWidget alone leaves the widget owned by Python,
        # which deletes it under the tab bar when the controller goes (a crash at exit).
        self.recording = RecordingControls(lambda: TelemetryRecorder(runtime.sampler),
                                           lambda: chart_specs(runtime), self.window.tabs)
        self.window.tabs.setCornerWidget(self.recording)
        # The tray menu always exists; its icon only where there is a tray (and tray=True).
        self.tray = AppTray(icon, self.window, TrayModels(
            active=lambda: runtime.manager.active_model, switchable=self.switchable_models,
            switch=self.models.request_switch, unload=self.models.unload),
            lambda: runtime.sampler.latest, self.window.quit, self, show_icon=tray)
        # Kept in the tray: the close button hides the window, but only where a tray shows it.
        self.window.hide_on_close = lambda: (self.runtime.config.startup.keep_in_tray
                                             and self.tray.available)
        if tray:  # critical alerts pop up from the tray icon; a click opens the Events tab
            self.notifier = TrayNotifier(icon, self.tray.icon)
            self.events.notifier = self.notifier
            if self.tray.icon is not None:
                self.tray.icon.messageClicked.connect(self.show_events)
        self.finished = asyncio.Event()
        # Set once the window's first frame is painted (or it is not shown): start()'s slow
        # work has begun then.
        self.first_painted = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._wake_timer: QTimer | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._previous_excepthook: Callable[..., Any] | None = None
        self._connect_signals()

    def _restart_simulated(self) -> None:
        self.relaunch_simulated = True  # run_app's caller starts it once the lock is free
        self.window.quit()

    def add_model_directory(self, directory: Path) -> str:
        """File > Add model directory: check it, keep it in the user's list (it is offered at
        every start), and say how it fits this device. Returns the sentence shown."""
        problem = add_dir(directory)
        if problem is not None:
            self.events.add("error", f"model directory not added: {problem}")
            return f"Not added: {problem}"
        self.runtime.refresh_models_on_disk()
        self.models.refresh()
        self.playground.refresh_models()
        where = directory.expanduser().resolve()
        entry = next(e for e in self.runtime.manager.catalog if e.path == where)
        fit = self.runtime.manager.plan_switch(entry.id).fit
        verdict = ("fit unknown" if fit is None else
                   f"fits here: {fit.needed_bytes / GIB:.2f} GiB at context {fit.context}"
                   if fit.fits else f"does not fit here: {fit.detail}")
        text = f"Added {entry.id} ({where}): {verdict}"
        self.events.add("info", text)
        self.models.select_model(entry.id)
        return text

    def _choose_model_directory(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self.window, "Add model directory")
        if chosen:
            QMessageBox.information(self.window, "Add model directory",
                                    self.add_model_directory(Path(chosen)))

    def _vram_holders(self) -> str | None:
        latest = self.runtime.sampler.latest
        gpus = latest.gpus if latest is not None else ()
        return others_holding(gpus[0].processes) if gpus else None

    def switchable_models(self) -> list[str]:
        """Models a switch would accept now (on disk, fits, gate passed): the tray's list."""
        manager = self.runtime.manager
        out = []
        for entry in manager.catalog.entries:
            if entry.is_remote or not entry.enabled:
                continue
            try:
                if manager.plan_switch(entry.id).ok:
                    out.append(entry.id)
            except Exception:  # noqa: BLE001 - an entry that cannot be planned is not offered
                continue
        return out

    def show_events(self) -> None:
        self.tray.show_window()
        self.window.tabs.setCurrentWidget(self.events)

    def open_settings(self) -> SettingsDialog:
        """File > Settings (Ctrl+,)."""
        unavailable = {} if self.tray.available else {
            "startup.keep_in_tray": "No system tray on this desktop: closing the window quits."}
        self.settings_dialog = open_settings(self.config_path, self.runtime.config, self.window,
                                             self.apply_settings, unavailable)
        return self.settings_dialog

    def apply_settings(self, config: AppConfig) -> None:
        """Saved settings, applied to the running app where they can be."""
        before = self.runtime.config
        self.runtime.apply_config(config)
        # The charts' warning and critical lines are drawn at the thresholds now in force.
        self.charts.set_thresholds(chart_specs(self.runtime))
        if config.remote != before.remote:  # the catalog's remote entry followed it
            self.models.set_remote(config.remote)
        self.events.policy.blockSignals(True)
        self.events.policy.setCurrentIndex(0 if self.runtime.alert_policy == "act" else 1)
        self.events.policy.blockSignals(False)
        server = config.server
        if server != before.server:
            self.api.settings = server
            if self.api.running and server.enabled:  # a new address: serve there instead
                self.keep(self._restart_api(), "api-restart")
            elif self.api.running != server.enabled:
                self.window.serve_action.setChecked(server.enabled)  # starts or stops it
        later = [name for name, changed in (
            ("the history window", config.monitoring.hardware_monitoring.history_seconds
             != before.monitoring.hardware_monitoring.history_seconds),
            ("the start-up options", _at_start(config) != _at_start(before))) if changed]
        removed = before.remote is not None and config.remote is None
        self.events.add("info", f"settings saved to {self.config_path} and applied"
                        + ("; the remote endpoint is removed" if removed else "")
                        + (f"; {' and '.join(later)} at the next start" if later else ""))

    async def _restart_api(self) -> None:
        await self.set_serving(False)
        await self.set_serving(True)

    def open_download(self, entry: ModelEntry) -> DownloadDialog:
        """The Models tab's Download button: fit first, then the files (gui/download_dialog.py)."""
        assert entry.hf_repo is not None
        buffer = self.runtime.config.buffer_bytes
        dialog = DownloadDialog(entry.hf_repo, entry, self.runtime.manager.catalog,
                                self.runtime.hardware_state, buffer, self.window)
        dialog.downloaded.connect(lambda _path: self.models.refresh())
        dialog.downloaded.connect(lambda _path: self.playground.refresh_models())
        self.download_dialog = dialog
        dialog.show()
        return dialog

    # -- wiring ---------------------------------------------------------------------------------
    def _connect_signals(self) -> None:
        b = self.bridge
        b.alerts.connect(self.events.on_alerts)
        b.alerts.connect(self._annotate_alerts)
        b.switch_event.connect(self.models.on_switch_event)
        b.switch_event.connect(self.events.on_switch_event)
        b.switch_event.connect(self.playground.on_switch_event)
        b.switch_event.connect(self._on_switch_event)
        b.event_line.connect(self.events.add)
        self.models.event_line.connect(self.events.add)
        self.playground.event_line.connect(self.events.add)
        self.playground.side_by_side.event_line.connect(self.events.add)
        self.playground.side_by_side.finished.connect(lambda _runs: self.history.refresh())
        self.soak.event_line.connect(self.events.add)
        self.gpu_status.event_line.connect(self.events.add)
        self.recording.event_line.connect(self.events.add)
        self.playground.generation_finished.connect(lambda _last: self.models.refresh())
        self.window.shutdown_requested.connect(self._on_shutdown_requested)
        self.window.serve_action.toggled.connect(self._on_serve_toggled)
        self._api_timer = QTimer(self)
        self._api_timer.setObjectName("api-status")
        self._api_timer.timeout.connect(self._show_api_status)

    # -- local API ------------------------------------------------------------------------------
    def _on_serve_toggled(self, on: bool) -> None:
        self.keep(self.set_serving(on), "api-toggle")

    async def set_serving(self, on: bool) -> None:
        """Start or stop the local API; a failure is shown and the toggle turned back off."""
        try:
            if on:
                address = await self.api.start()
                self.events.add("info", f"serving the OpenAI-compatible API on {address}/v1")
                self._api_timer.start(1000)
            else:
                await self.api.stop()
                self._api_timer.stop()
                self.events.add("info", "the local API is stopped")
        except (ServerConfigError, OSError, RuntimeError) as exc:
            self.events.add("error", f"the local API did not start: {exc}")
        self.window.serve_action.blockSignals(True)
        self.window.serve_action.setChecked(self.api.running)
        self.window.serve_action.blockSignals(False)
        self._show_api_status()

    def _show_api_status(self) -> None:
        if not self.api.running:
            self.window.set_api_status("API off")
            return
        stats = self.runtime.scheduler.stats()
        self.window.set_api_status(f"API {self.api.address} · {stats.requests_per_s * 60:.0f} "
                                   f"req/min · queue {stats.queued} · running {stats.running}")

    def _annotate_alerts(self, events: list[AlertEvent]) -> None:
        for e in events:
            self.annotations.alert_changed(e.metric, e.level, e.change, e.started_at, e.at)

    def _on_switch_event(self, event: SwitchEvent) -> None:
        if event.phase in STATE_PHASES:
            if event.phase in (StateChange.CRASHED, StateChange.UNLOADED):
                self.history.refresh()
                self._show_model()
            return
        self.window.set_switch_status(
            "" if event.phase == SwitchPhase.READY else phase_label(event))
        if event.phase == SwitchPhase.READY:
            self.annotations.switch(time.time(), event.target)
        if event.phase in TERMINAL_PHASES:
            self.history.refresh()
            self.soak.refresh_models()
        self._show_model()

    def _show_model(self) -> None:
        active = self.runtime.manager.active_model
        text = f"model: {active}" if active else "no model loaded"
        if self.models.demo_active():
            text += f" - {DEMO_NOTICE}"
        self.window.set_model_status(text)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, autoload: bool = False, model: str | None = None) -> None:
        """Subscribe to the core, start sampling and the charts, show the window."""
        self._unsubscribe.append(self.runtime.sampler.subscribe(self.bridge.on_sample))
        self._unsubscribe.append(self.runtime.manager.subscribe(self.bridge.on_switch_event))
        self.runtime.add_event_listener(self.bridge.on_event_line)
        self.runtime.add_event_listener(self.soak.note)  # alert actions go into a soak's report
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self.runtime.start()
        self.charts.start()
        self.gpu_status.start()
        self.tray.start()
        startup = self.runtime.config.startup
        if not startup.minimised:
            self.window.show()
        elif not self.tray.available:  # no tray to come back from: minimised, not hidden
            self.window.showMinimized()
        if os.environ.get("VRAMPILOT_REPORT_WINDOW_SHOWN"):
            # For the launch benchmark: the window's first frame is painted.
            self.window.first_painted.connect(lambda: report("window shown"))
        if os.environ.get(REPORT_PHASES_ENV):
            # For the quit test: it signals the app in a known switch phase.
            self.bridge.switch_event.connect(
                lambda e: report(f"switch {e.phase.value} {e.target}"))
        if self.runtime.simulated:
            self.events.add("info", "the GPU is simulated (profile from resources/profiles)")
        # The slow start-up work (vLLM's import for the autoload, the API's FastAPI) waits for
        # the first frame: in a thread it would still hold the GIL the window needs to paint.
        after = partial(self._after_first_paint, autoload, model)
        if self.window.isVisible() and not self.window.isMinimized():
            self.window.first_painted.connect(after)
            # A window the desktop does not expose (another workspace) holds nothing back.
            QTimer.singleShot(FIRST_PAINT_WAIT_MS, after)
        else:
            QTimer.singleShot(0, after)

    def _after_first_paint(self, autoload: bool, model: str | None) -> None:
        """What start() leaves until the window is on screen; runs once."""
        if self.first_painted.is_set():
            return
        self.first_painted.set()
        if self.window.closing:
            return
        if self.api.settings.enabled:
            self.window.serve_action.setChecked(True)  # starts it (toggled -> set_serving)
        if autoload:
            startup = self.runtime.config.startup
            last = (self.runtime.history_store.last_ready_model()
                    if startup.load_last_model and model is None else None)
            self.keep(self._autoload(model, last), "autoload")

    async def _autoload(self, model: str | None, last: str | None = None) -> None:
        await self.runtime.autoload(model, model_id=last)
        then = os.environ.get(SWITCH_AFTER_AUTOLOAD_ENV)
        if then:  # for the quit test: a switch to close the app in
            await self.runtime.manager.switch_to(then, reason="manual")

    def keep(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a coroutine as a named task we hold a reference to (cancelled at shutdown)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _excepthook(self, kind: type[BaseException], exc: BaseException,
                    tb: TracebackType | None) -> None:
        """An exception escaping a Qt slot: shown in the Events tab, the app keeps running."""
        self.events.add("error", f"unexpected error: {kind.__name__}: {exc}")
        traceback.print_exception(kind, exc, tb)

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM close the window like the close button. Python only runs signal
        handlers when the interpreter gets control, so a timer wakes it up regularly."""
        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            QTimer.singleShot(0, self.window.quit)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self._wake_timer = QTimer(self)
        self._wake_timer.setObjectName("signal-wakeup")
        self._wake_timer.timeout.connect(lambda: None)
        self._wake_timer.start(200)

    def bring_to_front(self) -> None:
        """Another launch asked for this window (one app per user): show it on top."""
        if self.window.isMinimized():
            self.window.showNormal()
        else:
            self.window.show()
        self.window.raise_()
        self.window.activateWindow()
        self.events.add("info", "another launch brought this window to the front")
        sys.stderr.write("vrampilot: window brought to the front\n")

    def _control_router(self) -> Any:
        # vrampilot's own routes (status, switch, unload, events...) on the API too, under
        # /vrampilot, behind the same key as the OpenAI routes.
        from core.facade import Owner, control_router

        return control_router(self.runtime, Owner("app", raise_window=self.bring_to_front))

    def _on_shutdown_requested(self) -> None:
        # Held apart from self._tasks, which the shutdown cancels.
        self._shutdown_task = asyncio.ensure_future(self.shutdown())
        self._shutdown_task.set_name("shutdown")

    async def shutdown(self) -> None:
        """Cancel what runs, then the core's close (runtime.close: bounded, ends the engine by
        force if it must); the whole takes at most about CLOSE_DEADLINE_S. The window is already
        hidden (MainWindow.closeEvent), so quitting looks instant."""
        started = time.monotonic()
        if os.environ.get(REPORT_PHASES_ENV):
            report("window hidden" if not self.window.isVisible() else "window still shown")
        self.events.add("info", "shutting down: cancelling generation and switches")
        self.charts.stop()
        self.gpu_status.stop()
        self.tray.close()
        self.recording.close_all()
        self._api_timer.stop()
        if self.download_dialog is not None:  # a download stops at its next chunk
            self.download_dialog.cancel()
            self.download_dialog.close()
        try:
            # The panels' tasks end at once unless a switch is unwinding in the manager, which
            # runtime.close() below bounds; so they get only a moment here.
            tasks = [t for t in self._tasks if not t.done()]
            for task in tasks:
                task.cancel()
            panels = asyncio.gather(self.playground.shutdown(), self.models.shutdown(),
                                    self.soak.shutdown(),
                                    *tasks, return_exceptions=True)
            await asyncio.wait({panels}, timeout=CANCEL_WAIT_S)
            # No new API requests while the engine shuts down.
            await asyncio.wait({asyncio.ensure_future(self.api.stop())}, timeout=CANCEL_WAIT_S)
            await self.runtime.close(max(0.5, CLOSE_DEADLINE_S - (time.monotonic() - started)))
        except Exception as exc:  # noqa: BLE001 - closing goes on whatever failed; shown
            self.events.add("error", f"shutdown failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        finally:
            for unsubscribe in self._unsubscribe:
                with contextlib.suppress(ValueError):
                    unsubscribe()
            self._unsubscribe.clear()
            if self._wake_timer is not None:
                self._wake_timer.stop()
            if self._previous_excepthook is not None:
                sys.excepthook = self._previous_excepthook
            if self.notifier is not None:
                self.notifier.close()
            self.events.add("info", f"shut down in {time.monotonic() - started:.1f} s")
            if os.environ.get(REPORT_PHASES_ENV):
                report(f"shut down in {time.monotonic() - started:.2f} s")
            self.window.finish_close()
            self.finished.set()


async def serve_control(controller: AppController, lock: InstanceLock, simulate: str | None,
                        config: str | None) -> ControlServer | None:
    """Serve the control socket (the CLI and later launches talk to this app). Its modules
    are imported in a worker thread once the window is up: FastAPI alone takes 0.3-1 s."""
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, import_control_server)
        from core.facade import ControlServer, Owner

        control = ControlServer(controller.runtime, lock, Owner(
            "app", simulate, config, raise_window=controller.bring_to_front))
        await control.start()
    except Exception as exc:  # noqa: BLE001 - the window works without it; shown
        controller.events.add("error", f"the control socket is not served: {exc}")
        return None
    return control


def server_settings(configured: ServerSettings,
                    serve: tuple[str | None, int] | None) -> ServerSettings:
    """The config's `server:` section, turned on at [HOST:]PORT by `--serve`."""
    if serve is None:
        return configured
    host, port = serve
    return configured.model_copy(update={"enabled": True, "port": port,
                                         "host": host or configured.host})


def run_app(args: argparse.Namespace, lock: InstanceLock | None = None) -> int:
    """Build the window and run until it is closed and everything has shut down.

    With the owner lock held, the control socket is served meanwhile (the CLI and later
    launches talk to this app)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("vrampilot")
    app.setOrganizationName("vrampilot")
    app.setDesktopFileName("vrampilot")
    app.setQuitOnLastWindowClosed(False)  # the controller's shutdown ends the loop
    app.setWindowIcon(QIcon(str(resource("icons", "vrampilot.svg"))))
    loop = AppEventLoop(app)
    asyncio.set_event_loop(loop)

    # Without --config, the user's own file (written by File > Settings) when there is one.
    config_path = Path(args.config) if args.config else settings_file.default_file()
    runtime = Runtime.create(config_file=config_path if config_path.exists() else None,
                             simulate=args.simulate)
    server = server_settings(runtime.config.server, getattr(args, "serve", None))
    if server.enabled:
        try:
            resolve_api_key(server)  # refuse before any window opens; the key is not kept
        except ServerConfigError as exc:
            sys.stderr.write(f"vrampilot: {exc}\n")
            return 2
    controller = AppController(runtime, settings=QSettings("vrampilot", "vrampilot"),
                               server=server, config_path=config_path)
    controller.install_signal_handlers()
    config = str(Path(args.config).resolve()) if args.config else None

    async def main() -> None:
        controller.start(autoload=not args.no_autoload, model=args.model)
        await controller.first_painted.wait()
        control = (None if lock is None or controller.window.closing
                   else await serve_control(controller, lock, args.simulate, config))
        await controller.finished.wait()
        if control is not None:
            await control.close()

    with loop:
        loop.run_until_complete(main())
    args.relaunch_simulated = controller.relaunch_simulated
    if os.environ.get(REPORT_PHASES_ENV):
        report("event loop closed")
    return 0
