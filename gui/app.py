"""Entry point of the desktop app: one QApplication, one qasync loop, all wiring in one place
(`AppController._connect_signals`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from core.manager.events import STATE_PHASES, TERMINAL_PHASES, SwitchEvent, SwitchPhase
from core.models.added_dirs import add_dir
from core.models.catalog import ModelEntry
from core.paths import data_dir, logs_dir, resource
from core.recent_runs import RecentRuns
from core.runtime import CLOSE_DEADLINE_S, Runtime
from core.server.service import ApiService
from core.server.settings import ServerConfigError, ServerSettings, resolve_api_key
from core.telemetry.alerts import AlertEvent
from core.telemetry.recording import TelemetryRecorder
from gui.bridge import CoreBridge
from gui.charts import ChartAnnotations, ChartPanel, ChartSpec
from gui.download_dialog import DownloadDialog
from gui.event_loop import AppEventLoop
from gui.events_panel import EventsPanel, TrayNotifier
from gui.history_panel import HistoryPanel
from gui.main_window import MainWindow
from gui.model_switcher import ModelSwitcherPanel, phase_label
from gui.playground import PlaygroundPanel
from gui.recording_controls import RecordingControls
from gui.soak_panel import SoakPanel, runner_factory

if TYPE_CHECKING:
    from core.server.control_server import ControlServer
    from core.server.instance_lock import InstanceLock

GIB = 1024**3
# Quitting ends within 3 s: the panels' tasks get CANCEL_WAIT_S to unwind, the core's close the
# rest of CLOSE_DEADLINE_S.
CANCEL_WAIT_S = 0.3
# Test hooks (tests/test_quit_vllm.py): report switch phases on stdout; switch to a second model
# once the first is loaded.
REPORT_PHASES_ENV = "VRAMPILOT_REPORT_PHASES"
SWITCH_AFTER_AUTOLOAD_ENV = "VRAMPILOT_SWITCH_AFTER_AUTOLOAD"


def report(line: str) -> None:
    """A line for a test or benchmark watching the app from outside."""
    sys.stdout.write(f"vrampilot: {line}\n")
    sys.stdout.flush()


def chart_specs(runtime: Runtime) -> list[ChartSpec]:
    """The charts: each GPU's VRAM / temperature / power / utilisation, plus host RAM and CPU."""
    t = runtime.config.monitoring.hardware_monitoring.thresholds
    specs: list[ChartSpec] = []
    for gpu in runtime.gpu_snapshots():
        p = f"gpu{gpu.index}"
        total_gib = (gpu.vram_total_bytes or 0) / GIB
        lost = (f"{p}.lost",)
        specs += [
            ChartSpec(f"{gpu.name} VRAM used of {total_gib:.0f} GiB", "GiB",
                      (f"{p}.vram_used_bytes",), 1 / GIB,
                      (("warning", t.vram_usage.warning * total_gib),
                       ("critical", t.vram_usage.critical * total_gib)),
                      alert_metrics=(f"{p}.vram_usage", *lost)),
            ChartSpec(f"{gpu.name} temperature", "°C", (f"{p}.temperature_c",), 1.0,
                      (("warning", t.temperature.warning), ("critical", t.temperature.critical))
                      + ((("throttle", gpu.throttle_temperature_c),)
                         if gpu.throttle_temperature_c else ()),
                      alert_metrics=(f"{p}.temperature_c", f"{p}.thermal_throttle", *lost)),
            ChartSpec(f"{gpu.name} power (draw, enforced limit)", "W",
                      (f"{p}.power_w", f"{p}.power_limit_w"), 1.0,
                      (("warning", t.power.warning), ("critical", t.power.critical)),
                      alert_metrics=(f"{p}.power_w", *lost)),
            ChartSpec(f"{gpu.name} utilisation", "%", (f"{p}.gpu_util_percent",),
                      alert_metrics=lost),
        ]
    specs += [
        ChartSpec("Host RAM used", "GiB", ("host.ram_used_bytes",), 1 / GIB),
        ChartSpec("Host CPU", "%", ("host.cpu_percent",)),
    ]
    return specs


class AppController(QObject):
    """Builds the panels from the runtime's core objects and wires them; owns start and the
    graceful shutdown (cancel generation and switches, shut the engine down, close)."""

    def __init__(self, runtime: Runtime, settings: QSettings | None = None,
                 tray: bool = True, server: ServerSettings | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        self.api = ApiService(runtime, server or runtime.config.server,
                              routers=[self._control_router])
        self.bridge = CoreBridge()
        self.annotations = ChartAnnotations()
        self.charts = ChartPanel(runtime.history.window, chart_specs(runtime), self.annotations,
                                 export_csv=runtime.history.export_csv)
        self.models = ModelSwitcherPanel(runtime.manager, runtime.history_store)
        self.models.download_handler = self.open_download
        self.download_dialog: DownloadDialog | None = None
        self.history = HistoryPanel(runtime.history_store)
        self.playground = PlaygroundPanel(runtime.chat, demo_active=self.models.demo_active,
                                          recent=RecentRuns(data_dir()))
        icon = QIcon(str(resource("icons", "vrampilot.svg")))
        self.notifier = TrayNotifier(icon) if tray else None
        self.events = EventsPanel(runtime.alert_policy, runtime.set_alert_policy, self.notifier)
        self.window = MainWindow(self.charts, self.models, self.history, self.playground,
                                 self.events, settings,
                                 " (simulated GPU)" if runtime.simulated else "",
                                 files=[("history database", runtime.history_store.path),
                                        ("engine logs", logs_dir())])
        # Into the window's File menu, first: adding a model folder is a File action.
        file_menu = self.window.file_menu
        add_dir_action = QAction("Add model directory…", self.window)
        add_dir_action.triggered.connect(self._choose_model_directory)
        file_menu.insertAction(file_menu.actions()[0], add_dir_action)
        self.soak = SoakPanel(runner_factory(runtime), runtime.chat.model_choices,
                              lambda: runtime.manager.active_model)
        self.window.tabs.insertTab(self.window.tabs.count() - 1, self.soak, "Soak test")
        # Parented at construction: setCornerWidget alone leaves the widget owned by Python,
        # which deletes it under the tab bar when the controller goes (a crash at exit).
        self.recording = RecordingControls(lambda: TelemetryRecorder(runtime.sampler),
                                           lambda: chart_specs(runtime), self.window.tabs)
        self.window.tabs.setCornerWidget(self.recording)
        self.finished = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._wake_timer: QTimer | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._previous_excepthook: Callable[..., Any] | None = None
        self._connect_signals()

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
                   f"fits here: {fit.needed_bytes / 1024**3:.2f} GiB at context {fit.context}"
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

    def open_download(self, entry: ModelEntry) -> DownloadDialog:
        """The Models tab's Download button: fit first, then the files (gui/download_dialog.py)."""
        assert entry.hf_repo is not None
        buffer = int(self.runtime.config.router.selection.buffer_gib * 1024**3)
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
        b.log.connect(self.events.add)
        self.models.log.connect(self.events.add)
        self.playground.log.connect(self.events.add)
        self.playground.side_by_side.log.connect(self.events.add)
        self.playground.side_by_side.finished.connect(lambda _runs: self.history.refresh())
        self.soak.log.connect(self.events.add)
        self.recording.log.connect(self.events.add)
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
            if event.phase in (SwitchPhase.CRASHED, SwitchPhase.UNLOADED):
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
            text += " (demo: random weights, its text is noise)"
        self.window.set_model_status(text)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, autoload: bool = False, model: str | None = None) -> None:
        """Subscribe to the core, start sampling and the charts, show the window."""
        self._unsubscribe.append(self.runtime.sampler.subscribe(self.bridge.on_sample))
        self._unsubscribe.append(self.runtime.manager.subscribe(self.bridge.on_switch_event))
        self.runtime.add_log_listener(self.bridge.on_log)
        self.runtime.add_log_listener(self.soak.note)  # alert actions go into a soak's report
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self.runtime.start()
        self.charts.start()
        self.window.show()
        if os.environ.get("VRAMPILOT_REPORT_WINDOW_SHOWN"):
            # For the launch benchmark: the first loop turn after show() has laid the window
            # out and painted it.
            QTimer.singleShot(0, lambda: report("window shown"))
        if os.environ.get(REPORT_PHASES_ENV):
            # For the quit test: it signals the app in a known switch phase.
            self.bridge.switch_event.connect(
                lambda e: report(f"switch {e.phase.value} {e.target}"))
        if self.runtime.simulated:
            self.events.add("info", "the GPU is simulated (profile from resources/profiles)")
        if self.api.settings.enabled:
            self.window.serve_action.setChecked(True)  # starts it (toggled -> set_serving)
        if autoload:
            self.keep(self._autoload(model), "autoload")

    async def _autoload(self, model: str | None) -> None:
        await self.runtime.autoload(model)
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
            QTimer.singleShot(0, self.window.close)

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
        from core.server.control_routes import Owner, control_router

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
        await loop.run_in_executor(None, importlib.import_module, "core.server.control_server")
        from core.server.control_routes import Owner
        from core.server.control_server import ControlServer

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

    runtime = Runtime.create(config_file=args.config, simulate=args.simulate)
    server = server_settings(runtime.config.server, getattr(args, "serve", None))
    if server.enabled:
        try:
            resolve_api_key(server)  # refuse before any window opens; the key is not kept
        except ServerConfigError as exc:
            sys.stderr.write(f"vrampilot: {exc}\n")
            return 2
    controller = AppController(runtime, settings=QSettings("vrampilot", "vrampilot"),
                               server=server)
    controller.install_signal_handlers()
    config = str(Path(args.config).resolve()) if args.config else None

    async def main() -> None:
        controller.start(autoload=not args.no_autoload, model=args.model)
        control = (None if lock is None
                   else await serve_control(controller, lock, args.simulate, config))
        await controller.finished.wait()
        if control is not None:
            await control.close()

    with loop:
        loop.run_until_complete(main())
    if os.environ.get(REPORT_PHASES_ENV):
        report("event loop closed")
    return 0
