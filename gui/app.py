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
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import psutil
from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from core.manager.events import TERMINAL_PHASES, SwitchEvent, SwitchPhase
from core.paths import logs_dir, resource
from core.runtime import Runtime
from core.telemetry.alerts import AlertEvent
from gui.bridge import CoreBridge
from gui.charts import ChartAnnotations, ChartPanel, ChartSpec
from gui.event_loop import AppEventLoop
from gui.events_panel import EventsPanel, TrayNotifier
from gui.history_panel import HistoryPanel
from gui.main_window import MainWindow
from gui.model_switcher import ModelSwitcherPanel, phase_label
from gui.playground import PlaygroundPanel

if TYPE_CHECKING:
    from core.server.control_server import ControlServer
    from core.server.instance_lock import InstanceLock

GIB = 1024**3
# Closing must end within 10 s: the engine gets this long to shut down cleanly, then its
# processes are ended by force.
SHUTDOWN_TIMEOUT_S = 6.0
REAP_DEADLINE_S = 9.0
ENGINE_THREAD_PREFIX = "vllm-engine"  # core.engine.vllm_engine's executor threads


def engine_threads_alive() -> bool:
    """Is an engine executor thread still busy (e.g. starting vLLM for a cancelled load)?"""
    return any(t.name.startswith(ENGINE_THREAD_PREFIX) and t.is_alive()
               for t in threading.enumerate())


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
                 tray: bool = True) -> None:
        super().__init__()
        self.runtime = runtime
        self.bridge = CoreBridge()
        self.annotations = ChartAnnotations()
        self.charts = ChartPanel(runtime.history.window, chart_specs(runtime), self.annotations,
                                 export_csv=runtime.history.export_csv)
        self.models = ModelSwitcherPanel(runtime.manager, runtime.history_store,
                                         runtime.config.router.selection.local_tier)
        self.history = HistoryPanel(runtime.history_store)
        self.playground = PlaygroundPanel(runtime.chat, demo_active=self.models.demo_active)
        icon = QIcon(str(resource("icons", "vrampilot.svg")))
        self.notifier = TrayNotifier(icon) if tray else None
        self.events = EventsPanel(runtime.alert_policy, runtime.set_alert_policy, self.notifier)
        self.window = MainWindow(self.charts, self.models, self.history, self.playground,
                                 self.events, settings,
                                 " (simulated GPU)" if runtime.simulated else "",
                                 files=[("history database", runtime.history_store.path),
                                        ("engine logs", logs_dir())])
        self.finished = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._wake_timer: QTimer | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._previous_excepthook: Callable[..., Any] | None = None
        self._connect_signals()

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
        self.playground.generation_finished.connect(lambda _last: self.models.refresh())
        self.window.shutdown_requested.connect(self._on_shutdown_requested)

    def _annotate_alerts(self, events: list[AlertEvent]) -> None:
        for e in events:
            self.annotations.alert_changed(e.metric, e.level, e.change, e.started_at, e.at)

    def _on_switch_event(self, event: SwitchEvent) -> None:
        if event.phase == SwitchPhase.ADVICE:
            return
        self.window.set_switch_status(
            "" if event.phase == SwitchPhase.READY else phase_label(event))
        if event.phase == SwitchPhase.READY:
            self.annotations.switch(time.time(), event.target)
        if event.phase in TERMINAL_PHASES:
            self.history.refresh()
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
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self.runtime.start()
        self.charts.start()
        self.window.show()
        if os.environ.get("VRAMPILOT_REPORT_WINDOW_SHOWN"):
            # For the launch benchmark: the first loop turn after show() has laid the window
            # out and painted it.
            QTimer.singleShot(0, lambda: (sys.stdout.write("vrampilot: window shown\n"),
                                          sys.stdout.flush()))
        if self.runtime.simulated:
            self.events.add("info", "the GPU is simulated (profile from resources/profiles)")
        if autoload:
            self.keep(self.runtime.autoload(model), "autoload")

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

    def _on_shutdown_requested(self) -> None:
        # Held apart from self._tasks, which the shutdown cancels.
        self._shutdown_task = asyncio.ensure_future(self.shutdown())
        self._shutdown_task.set_name("shutdown")

    async def shutdown(self) -> None:
        """Cancel what runs, shut the engine down (by force after SHUTDOWN_TIMEOUT_S), close.

        A load cancelled mid-start keeps starting vLLM in its executor thread for a while; its
        processes are ended as they appear until that thread gives up (or the deadline)."""
        started = time.monotonic()
        self.events.add("info", "shutting down: cancelling generation and switches")
        self.charts.stop()
        core = asyncio.ensure_future(self._shutdown_core())
        core.set_name("shutdown-core")
        loop = asyncio.get_running_loop()
        try:
            done, _ = await asyncio.wait({core}, timeout=SHUTDOWN_TIMEOUT_S)
            if not done:
                self.events.add("error", "the engine did not shut down in time: ending it by force")
            await loop.run_in_executor(None, end_child_processes)
            while time.monotonic() - started < REAP_DEADLINE_S and (
                    not core.done() or engine_threads_alive()):
                await asyncio.wait({core}, timeout=0.2)
                await loop.run_in_executor(None, end_child_processes, 0.5)
            if core.done() and not core.cancelled() and core.exception() is not None:
                self.events.add("error", f"shutdown: {core.exception()}")
            # Let tasks that were just cancelled (the engine's stream handlers) unwind.
            current = asyncio.current_task()
            unwinding = [t for t in asyncio.all_tasks() if t is not current and t.cancelling()]
            if unwinding:
                await asyncio.wait(unwinding, timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - closing goes on whatever failed; shown
            self.events.add("error", f"shutdown failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        finally:
            if not core.done():
                core.cancel()
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
            self.window.finish_close()
            self.finished.set()

    async def _shutdown_core(self) -> None:
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current and not t.done()]
        for task in others:
            task.cancel()
        await self.playground.shutdown()
        await self.models.shutdown()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.runtime.close()


def end_child_processes(timeout_s: float = 2.0) -> None:
    """Terminate (then kill) any process this one started that is still running."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _gone, alive = psutil.wait_procs(children, timeout=timeout_s)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout_s)


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
    controller = AppController(runtime, settings=QSettings("vrampilot", "vrampilot"))
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
    return 0
