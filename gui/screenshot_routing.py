"""The README's screenshot of the History tab's routing page, from the running app: load the demo
model, send prompts of several task types with model = Auto from the Playground, give feedback on
each reply with the feedback bar, then grab the History tab. No display needed:

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m gui.screenshot_routing \
        resources/screenshots/routing.png

Uses the simulated RTX 4090 Laptop and a temporary data dir (the demo models are linked from the
user's data dir, built there if missing), so the user's history is not touched. Only the demo
models are on disk, so the router answers every task with the local tier; the verdicts name the
catalog model the task should have had (the record's tiers: 8B standard, 14B complex).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

# (task type, prompt, verdict: None = good, else the model that should have answered)
PROMPTS = (
    ("simple_extraction", "Extract the job title: Senior Data Engineer, Berlin.", None),
    ("simple_extraction", "Extract the city: Data Engineer, Lisbon, hybrid.", None),
    ("simple_extraction", "Extract the company: Acme GmbH is hiring.", None),
    ("standard_parsing", "Parse title, city and salary from: Analyst, Paris, 60k.", None),
    ("standard_parsing", "Parse the requirements from this offer into a list.", "qwen3-8b"),
    ("salary_analysis", "Is 70k base plus equity fair for a senior role in Munich?",
     "qwen3-8b"),
    ("complex_reasoning", "Compare these two offers over four years, with stock options.",
     "qwen3-14b"),
    ("unknown", "Summarise this offer in one line.", None),
)


def main(out: str) -> int:
    from core.facade import ensure_demo_models, paths

    ensure_demo_models()
    user_models = paths.models_dir()
    tmp = tempfile.mkdtemp(prefix="vrampilot-routing-shot-")
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

    async def until(predicate: object, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError("the screenshot run timed out")
            await asyncio.sleep(0.1)

    async def run() -> None:
        w = controller.window
        w.resize(1360, 880)
        # No autoload: the first routed prompt loads the router's model (start-up, not counted
        # in uptime); a load of another model first would be a switch, counted against it.
        controller.start(autoload=False)
        from core.facade import ensure_demo_models

        await asyncio.get_running_loop().run_in_executor(None, ensure_demo_models)
        pg = controller.playground
        w.tabs.setCurrentWidget(pg)
        pg.max_tokens.setValue(8)
        for task_type, prompt, wanted in PROMPTS:
            pg.prompt.setPlainText(prompt)
            pg.task_type.setCurrentText(task_type)
            pg.send()
            await until(lambda: not pg.busy, 300)
            bar = pg.feedback_bar
            if not bar.isVisibleTo(pg):
                raise RuntimeError(f"no feedback bar after {task_type!r}: {pg.stats.text()}")
            if wanted is None:
                bar.good_button.click()
            else:
                bar.wanted.setCurrentIndex(bar.wanted.findText(wanted))
                bar.wrong_button.click()
            await asyncio.sleep(2)  # a user reads the reply before the next prompt
        history = controller.history
        w.tabs.setCurrentWidget(history)
        history.pages.setCurrentWidget(history.routing)
        await asyncio.sleep(0.6)
        w.grab().save(out, "PNG")
        w.close()
        await controller.finished.wait()

    with loop:
        loop.run_until_complete(run())
    sys.stderr.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else
                          "resources/screenshots/routing.png"))
