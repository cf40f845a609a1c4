"""PySide6 6.12.0 drops a reference to True on every Signal.emit, so a busy app aborts after a
few thousand emits ("bool_dealloc"). pyproject.toml excludes it; this test catches a build with
the same fault (run in a subprocess, since the fault kills the interpreter)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_signal_emit_keeps_the_interpreter_alive() -> None:
    script = textwrap.dedent(
        """
        import sys
        from PySide6.QtCore import QCoreApplication, QObject, Signal
        app = QCoreApplication([])
        class Emitter(QObject):
            fired = Signal(object)
        e = Emitter()
        e.fired.connect(lambda value: None)
        before = sys.getrefcount(True)
        for _ in range(20000):
            e.fired.emit(1)
        print(sys.getrefcount(True) - before)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-500:]
    assert abs(int(result.stdout.strip())) < 100
