"""Dependency direction: core/ never imports Qt (checked by importing every core module), and gui/
reaches core only through core.facade (ruff's banned-api rule in gui/ruff.toml)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

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


# -- gui/ reaches core only through core.facade (gui/ruff.toml) ------------------------------------
ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).with_name("ruff")


def _ruff_on_gui_file(source: str) -> subprocess.CompletedProcess[str]:
    """ruff on `source` as if it were a file in gui/ (so gui/ruff.toml applies)."""
    return subprocess.run([str(RUFF), "check", "--no-cache", "--select", "TID251",
                           "--stdin-filename", "gui/probe.py", "-"],
                          input=source, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=False)


def test_every_core_module_but_the_facade_is_banned_in_gui() -> None:
    config = tomllib.loads((ROOT / "gui" / "ruff.toml").read_text(encoding="utf-8"))
    banned = set(config["lint"]["flake8-tidy-imports"]["banned-api"])
    modules = {f"core.{info.name}" for info in pkgutil.iter_modules([str(ROOT / "core")])}
    assert "core.facade" in modules
    assert modules - {"core.facade"} == banned


@pytest.mark.parametrize("line", ["from core.runtime import Runtime", "from core import paths",
                                  "import core.manager.plan",
                                  "from core.history_store import HistoryStore"])
def test_ruff_refuses_a_gui_import_of_core_internals(line: str) -> None:
    result = _ruff_on_gui_file(f"{line}\n")
    assert result.returncode == 1
    assert "TID251" in result.stdout
    assert "core.facade" in result.stdout


def test_ruff_accepts_the_facade_in_gui_and_still_bans_qt_in_core() -> None:
    assert _ruff_on_gui_file("from core.facade import Runtime\n").returncode == 0
    in_core = subprocess.run([str(RUFF), "check", "--no-cache", "--select", "TID251",
                              "--stdin-filename", "core/probe.py", "-"],
                             input="import PySide6\n", capture_output=True, text=True, cwd=ROOT,
                             timeout=60, check=False)
    assert in_core.returncode == 1
    assert "Qt-free" in in_core.stdout


def test_the_facade_names_resolve_and_fastapi_loads_only_on_first_use() -> None:
    script = textwrap.dedent(
        """
        import sys
        import core.facade as facade
        before = "fastapi" in sys.modules
        missing = [n for n in facade.__all__ if getattr(facade, n, None) is None]
        print(before, "fastapi" in sys.modules, missing)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "[]"]
