"""The Monitor's table of the engine's processes on the host, through the real widget: this app
and a real child process (as vLLM's engine core is), with their resident memory from psutil."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
from pytestqt.qtbot import QtBot

from gui.gpu_panel import GpuStatusPanel

MIB = 1024**2
# A child that touches 96 MiB (written, so resident) and says when it has.
HOLDER = ("import sys, time; b = bytearray(b'x' * (96 * 1024 * 1024)); "
          "print('ready', flush=True); time.sleep(60)")


def _mib(text: str) -> float:
    number, unit = text.split()
    return float(number) * (1024 if unit == "GiB" else 1)


def test_the_engines_host_processes_are_listed_with_their_rss(qtbot: QtBot) -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        panel = GpuStatusPanel(lambda: None)  # no sample yet: the host table still fills
        qtbot.addWidget(panel)
        panel.refresh()
        rows = {r[0]: r for r in panel.host_rows()}
        me, kid = rows[str(os.getpid())], rows[str(child.pid)]
        assert panel.host_rows()[0] == me  # this app first
        assert me[2] == "this app"
        assert kid[1] == psutil.Process(child.pid).name()
        assert kid[2] == f"started by it (child of {os.getpid()})"
        assert 96 <= _mib(kid[3]) < 160  # the 96 MiB it wrote, plus the interpreter
        assert "resident in all" in panel.host_title.text()
        assert panel.host_title.text().startswith(
            f"The engine's processes on the host: {len(rows)}, ")
    finally:
        child.kill()
        child.wait()
    # Once it has ended, the next refresh drops it.
    panel.refresh()
    assert str(child.pid) not in {r[0] for r in panel.host_rows()}
