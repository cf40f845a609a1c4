"""The README's playground screenshots: a two-turn conversation with a system prompt on the
demo model (its Markdown transcript, the settings, the token count), then the same prompt side by
side on both demo models. Real engine, simulated RTX 4090 Laptop, a temporary data dir:

    xvfb-run -a .venv/bin/python -m gui.screenshot_playground resources/screenshots
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def main(out_dir: str) -> int:
    from core.facade import ensure_demo_models, paths

    ensure_demo_models()
    user_models = paths.models_dir()
    tmp = Path(tempfile.mkdtemp(prefix="vrampilot-playground-shot-"))
    os.environ["VRAMPILOT_DATA_DIR"] = str(tmp)
    (tmp / "models").symlink_to(user_models, target_is_directory=True)
    config = tmp / "config.yaml"
    config.write_text("model_switching:\n  switch_timeout_seconds: 600\n")

    from PySide6.QtWidgets import QApplication

    from core.facade import Runtime
    from gui.app import AppController
    from gui.event_loop import AppEventLoop

    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    loop = AppEventLoop(app)
    asyncio.set_event_loop(loop)
    runtime = Runtime.create(config_file=config, simulate="rtx4090-laptop")
    controller = AppController(runtime, settings=None, tray=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    async def until(predicate: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the screenshots timed out")
            await asyncio.sleep(0.1)

    async def shots() -> None:
        w = controller.window
        w.resize(1360, 880)
        controller.start(autoload=False)
        pg = controller.playground
        w.tabs.setCurrentWidget(pg)
        pg.model.setCurrentIndex(pg.model.findData("demo-tiny-a"))
        pg.system.setPlainText("You are a concise assistant. Answer in Markdown.")
        pg.max_tokens.setValue(48)
        pg.seed.setValue(42)
        pg.top_k.setValue(40)
        for text in ("Summarise the offer: base salary, equity, remote or hybrid?",
                     "Now as a table, with a Python snippet that computes the total."):
            pg.prompt.setPlainText(text)
            pg.send()
            await until(lambda: not pg.busy, 600)
        pg.prompt.setPlainText("And the notice period?")
        await asyncio.sleep(3)  # the token count (debounced, off the GUI thread)
        w.grab().save(str(out / "playground.png"), "PNG")

        sbs = pg.side_by_side
        pg.views.setCurrentWidget(sbs)
        sbs.pickers[0].setCurrentIndex(sbs.pickers[0].findData("demo-tiny-a"))
        sbs.pickers[1].setCurrentIndex(sbs.pickers[1].findData("demo-tiny-b"))
        sbs.pickers[2].setCurrentIndex(sbs.pickers[2].findData(None))
        pg.prompt.setPlainText("Explain the KV cache in two sentences.")
        sbs.run()
        await until(lambda: not sbs.busy, 900)
        await asyncio.sleep(0.5)
        w.grab().save(str(out / "playground-side-by-side.png"), "PNG")
        w.close()
        await controller.finished.wait()

    with loop:
        loop.run_until_complete(shots())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "resources/screenshots"))
