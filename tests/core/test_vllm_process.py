"""vLLM process setup: the teardown noise vLLM's imports bring stays off stderr at exit, while
the program's own exit output and an uncaught exception's traceback still show; the import
preloads torch's native library and leaves the garbage collector as it found it."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def test_torch_native_library_is_loaded_before_torch_is_imported() -> None:
    """The preload finds the library it names (a torch that renames it would make the preload
    silently do nothing), and torch then imports on top of it."""
    script = textwrap.dedent(
        """
        import sys
        from core.engine.vllm_process import _preload_torch_libraries

        _preload_torch_libraries()
        maps = open("/proc/self/maps").read()
        print("before torch:", "torch" in sys.modules, "libtorch_cpu.so" in maps)
        import torch
        print("tensor:", int(torch.ones(3).sum()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "before torch: False True" in result.stdout, result.stdout
    assert "tensor: 3" in result.stdout


@pytest.mark.vllm
def test_import_vllm_leaves_the_collector_as_it_was() -> None:
    """Full collections are off only during the imports; the heap they made is frozen."""
    from core.engine.vllm_process import import_vllm

    before = gc.get_threshold()
    import_vllm()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() > 100_000
