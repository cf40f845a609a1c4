"""The window's first frame comes before the slow start-up work: a real app process with the
default autoload paints its window before vLLM (and torch, transformers, the openai SDK, FastAPI)
is imported, and the autoload then starts the load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_S = 120.0  # the window is up in seconds; the load's start follows at once
HEAVY = ("vllm", "torch", "transformers", "openai", "fastapi")
# The app, with a line at its window's first frame naming the heavy modules loaded by then.
APP = f"""
import sys
from gui import main_window
from gui.launcher import main

HEAVY = {HEAVY!r}
init = main_window.MainWindow.__init__

def noting_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    # Connected before the app's own handler: runs first, when the first frame is done.
    self.first_painted.connect(lambda: print(
        "first paint, loaded: " + ",".join(m for m in HEAVY if m in sys.modules), flush=True))

main_window.MainWindow.__init__ = noting_init
main(sys.argv[1:])
"""


@pytest.mark.vllm
def test_the_window_is_painted_before_vllm_is_imported(with_demo_models: Path) -> None:
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(with_demo_models),
               QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(with_demo_models / "config"),
               PYTHONUNBUFFERED="1", VRAMPILOT_REPORT_PHASES="1")
    proc = subprocess.Popen([sys.executable, "-c", APP, "--simulate", "rtx4090-laptop"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_S
    try:
        for line in proc.stdout:  # ends if the app exits early
            lines.append(line)
            if "switch loading demo-tiny-a" in line or time.monotonic() > deadline:
                break
        painted = [line for line in lines if line.startswith("first paint, loaded:")]
        assert painted, "".join(lines)
        assert painted[0].strip() == "first paint, loaded:", painted[0]
        # The autoload still happens, after the first frame.
        assert any("switch loading demo-tiny-a" in line for line in lines), "".join(lines)
        assert lines.index(painted[0]) < next(
            i for i, line in enumerate(lines) if "switch loading" in line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
