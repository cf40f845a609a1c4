"""vLLM process setup: the teardown noise vLLM's imports bring stays off stderr at exit, while
the program's own exit output and an uncaught exception's traceback still show."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import atexit, os, sys
        from core.engine.vllm_process import quiet_teardown

        class TornDown:
            # Stands for nanobind's leak report and AsyncLLM.__del__: written while the
            # interpreter tears its modules down, after every atexit callback.
            def __del__(self):
                os.write(2, b"nanobind: leaked 4 instances!\\n")

        torn_down = TornDown()
        """
    ) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


def test_without_it_the_teardown_writes_to_stderr() -> None:
    """Guard against a check that cannot fail: the stand-in's report does reach stderr."""
    result = _run("")
    assert "leaked" in result.stderr


def test_teardown_noise_is_silenced_and_exit_output_kept() -> None:
    result = _run(
        """
        quiet_teardown()
        quiet_teardown()  # idempotent: one callback
        atexit.register(lambda: print("closed cleanly", file=sys.stderr))
        """
    )
    assert result.returncode == 0
    assert "leaked" not in result.stderr, result.stderr
    assert "closed cleanly" in result.stderr  # an exit callback registered later still prints


def test_an_uncaught_exception_still_shows_its_traceback() -> None:
    result = _run(
        """
        quiet_teardown()
        raise RuntimeError("a real failure")
        """
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "a real failure" in result.stderr
    assert "leaked" not in result.stderr
