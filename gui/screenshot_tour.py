"""Take the README's screenshots from the running app: load the demo model, chat (Auto), switch to
the second demo model, then grab each tab. Run under a display (e.g. Xvfb):

    DISPLAY=:99 .venv/bin/python -m gui.screenshot_tour resources/screenshots

Uses the simulated RTX 4090 Laptop and a temporary data dir (the demo models are linked from the
user's data dir, built there if missing), so the user's history is not touched.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

TABS = (("monitor", "Monitor"), ("models", "Models"), ("history", "Switch history"),
        ("playground", "Playground"), ("events", "Events"))


def main(out_dir: str) -> int:
    from core.facade import ensure_demo_models, paths

    ensure_demo_models()
    user_models = paths.models_dir()
    tmp = tempfile.mkdtemp(prefix="vrampilot-tour-")
    os.environ["VRAMPILOT_DATA_DIR"] = tmp
    os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
    (Path(tmp) / "models").symlink_to(user_models, target_is_directory=True)

    from PySide6.QtWidgets import QApplication

    from core.facade import Runtime
    from gui.app import AppController
    from gui.event_loop import AppEventLoop

    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    loop = AppEventLoop(app)
    asyncio.set_event_loop(loop)
    runtime = Runtime.create(simulate="rtx4090-laptop")
    controller = AppController(runtime, settings=None, tray=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    async def until(predicate: object, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError("the tour timed out")
            await asyncio.sleep(0.1)

    async def tour() -> None:
        w = controller.window
        w.resize(1360, 880)
        controller.start(autoload=True)
        manager = runtime.manager
        await until(lambda: manager.active_model == "demo-tiny-a" and manager.state.phase is None,
                    240)
        pg = controller.playground
        w.tabs.setCurrentWidget(pg)
        pg.prompt.setPlainText("Summarise the offer: base salary, equity, remote or hybrid?")
        pg.task_type.setCurrentText("salary_analysis")
        pg.max_tokens.setValue(120)
        pg.send()
        await until(lambda: not pg.busy, 120)
        models = controller.models
        w.tabs.setCurrentWidget(models)
        models.select_model("demo-tiny-b")
        models.switch_selected()
        await until(lambda: not models.busy, 240)
        models.refresh()
        models.select_model("qwen3-30b-a3b-instruct-2507")
        models.switch_selected()  # refused on this device: shows the checks and the fallback
        await asyncio.sleep(8)  # let the charts show the switch and some movement
        # The tour lasts a minute or two: show a window it fills.
        times, _values = runtime.history.window("host.cpu_percent")
        span = float(times[-1] - times[0]) if len(times) else 0.0
        w.charts.window_box.setCurrentIndex(0 if span < 75 else 1)
        for name, title in TABS:
            index = next(i for i in range(w.tabs.count()) if w.tabs.tabText(i) == title)
            w.tabs.setCurrentIndex(index)
            await asyncio.sleep(0.6)
            w.grab().save(str(out / f"{name}.png"), "PNG")
        w.close()
        await controller.finished.wait()

    with loop:
        loop.run_until_complete(tour())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "resources/screenshots"))
