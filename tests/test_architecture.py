"""Dependency direction: core/ never imports Qt (checked by importing every core module)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

QT_MODULES = ("PySide6", "pyqtgraph", "qasync", "shiboken6")


def test_core_imports_no_qt_module() -> None:
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import core
        for info in pkgutil.walk_packages(core.__path__, "core."):
            importlib.import_module(info.name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {QT_MODULES!r})
        print(",".join(loaded))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core pulled in Qt modules: {result.stdout.strip()}"


def test_the_check_would_see_a_qt_import() -> None:
    """Guard against a check that cannot fail: importing PySide6 is visible in sys.modules."""
    script = "import sys, PySide6.QtCore; print('PySide6' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.stdout.strip() == "True"
