"""The README's screenshots of the Monitor's GPU header and process table, and of the settings
dialog. The real demo model is loaded and generates on the simulated RTX 4090 Laptop with a 3 s
thermal time constant (tests/data/soak_fast_thermal.yaml), so the card heats under that real load
until it throttles within seconds; no display needed:

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m gui.screenshot_monitor resources/screenshots

Writes monitor-gpu.png and settings.png. Uses a temporary data dir (the demo models are linked from
the user's data dir, built there if missing), so the user's history and config are not touched.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

FAST_THERMAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "soak_fast_thermal.yaml"


def main(out_dir: str) -> int:
    from core.facade import ensure_demo_models, paths

    ensure_demo_models()
    user_models = paths.models_dir()
    tmp = tempfile.mkdtemp(prefix="vrampilot-monitor-shot-")
    os.environ["VRAMPILOT_DATA_DIR"] = tmp
    (Path(tmp) / "models").symlink_to(user_models, target_is_directory=True)
    (Path(tmp) / "config.yaml").write_text(
        "# written by hand: File > Settings keeps this comment\n"
        "hardware_monitoring:\n  interval_seconds: 0.25\n", encoding="utf-8")

    from PySide6.QtWidgets import QApplication

    from core.facade import Runtime
    from gui.app import AppController
    from gui.event_loop import AppEventLoop

    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    loop = AppEventLoop(app)
    asyncio.set_event_loop(loop)
    runtime = Runtime.create(config_file=Path(tmp) / "config.yaml", simulate=str(FAST_THERMAL))
    controller = AppController(runtime, settings=None, tray=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    async def until(predicate: Callable[[], object], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the screenshot run timed out")
            await asyncio.sleep(0.1)

    async def shoot() -> None:
        w = controller.window
        w.resize(1360, 960)
        controller.start(autoload=True)
        manager = runtime.manager
        await until(lambda: manager.active_model == "demo-tiny-a" and manager.state.phase is None,
                    600)
        pg = controller.playground
        pg.max_tokens.setValue(900)
        pg.temperature.setValue(1.0)
        pg.prompt.setPlainText("Write a long story about a laptop GPU.")
        w.tabs.setCurrentWidget(controller.monitor)
        controller.charts.window_box.setCurrentIndex(0)  # 1 min
        started = time.monotonic()
        # Real generation heats the card; it goes on until the card throttles (it cools as soon
        # as generation stops, and the slowdown then ends).
        while "thermal slowdown" not in controller.gpu_status.header.text():
            if time.monotonic() - started > 120:
                raise TimeoutError("the card never throttled")
            if not pg.busy:
                pg.send()
            await asyncio.sleep(0.2)
        await until(lambda: any(r[4] for r in controller.gpu_status.rows()), 30)
        await asyncio.sleep(1.5)
        w.grab().save(str(out / "monitor-gpu.png"), "PNG")
        pg.stop()

        dialog = controller.open_settings()
        dialog.resize(660, 1480)
        dialog.set_value("hardware_monitoring.thresholds.temperature.warning", "90")
        dialog.set_value("server.port", "80a")
        dialog.validate()
        await asyncio.sleep(0.5)
        dialog.grab().save(str(out / "settings.png"), "PNG")
        dialog.reject()
        w.close()
        await controller.finished.wait()

    with loop:
        loop.run_until_complete(shoot())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "resources/screenshots"))
