"""Entry point of the desktop app: one QApplication, one qasync loop, all wiring in one place."""

from __future__ import annotations

import argparse
import asyncio
import sys

import qasync
from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from core.paths import resource
from core.runtime import Runtime
from gui.bridge import CoreBridge
from gui.charts import ChartPanel, ChartSpec
from gui.main_window import MainWindow
from gui.playground import PlaygroundPanel

GIB = 1024**3


def chart_specs(runtime: Runtime) -> list[ChartSpec]:
    """The charts: one GPU's VRAM / temperature / power / utilisation, plus host RAM and CPU."""
    t = runtime.config.monitoring.hardware_monitoring.thresholds
    specs: list[ChartSpec] = []
    for gpu in runtime.gpu_snapshots():
        p = f"gpu{gpu.index}"
        total_gib = (gpu.vram_total_bytes or 0) / GIB
        specs += [
            ChartSpec(f"{gpu.name} VRAM used", "GiB", (f"{p}.vram_used_bytes",), 1 / GIB,
                      (("warning", t.vram_usage.warning * total_gib),
                       ("critical", t.vram_usage.critical * total_gib))),
            ChartSpec(f"{gpu.name} temperature", "°C", (f"{p}.temperature_c",), 1.0,
                      (("warning", t.temperature.warning), ("critical", t.temperature.critical))
                      + ((("throttle", gpu.throttle_temperature_c),)
                         if gpu.throttle_temperature_c else ())),
            ChartSpec(f"{gpu.name} power", "W", (f"{p}.power_w", f"{p}.power_limit_w"), 1.0,
                      (("warning", t.power.warning), ("critical", t.power.critical))),
            ChartSpec(f"{gpu.name} utilisation", "%", (f"{p}.gpu_util_percent",)),
        ]
    specs += [
        ChartSpec("Host RAM used", "GiB", ("host.ram_used_bytes",), 1 / GIB),
        ChartSpec("Host CPU", "%", ("host.cpu_percent",)),
    ]
    return specs


def run_app(args: argparse.Namespace) -> int:
    """Build the window and run until it is closed and everything has shut down."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("vrampilot")
    app.setOrganizationName("vrampilot")
    app.setWindowIcon(QIcon(str(resource("icons", "vrampilot.svg"))))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    runtime = Runtime.create(config_file=args.config, simulate=args.simulate)
    bridge = CoreBridge()
    charts = ChartPanel(runtime.history.window, chart_specs(runtime))
    playground = PlaygroundPanel(runtime.chat)
    window = MainWindow(charts, playground, on_close=runtime.close,
                        settings=QSettings("vrampilot", "vrampilot"))
    bridge.log.connect(window.log.add)
    runtime.add_log_listener(bridge.log.emit)

    done = asyncio.Event()

    async def shutdown() -> None:
        charts.stop()
        await playground.shutdown()
        await runtime.close()
        window.finish_close()
        done.set()

    tasks: set[asyncio.Task[None]] = set()

    def on_shutdown_requested() -> None:
        task = asyncio.ensure_future(shutdown())
        tasks.add(task)

    window.shutdown_requested.connect(on_shutdown_requested)

    async def main() -> None:
        runtime.start()
        charts.start()
        window.show()
        if not args.no_autoload:
            tasks.add(asyncio.ensure_future(runtime.autoload(args.model)))
        await done.wait()

    with loop:
        loop.run_until_complete(main())
    return 0
