"""The `vrampilot` command's bad-input paths: clear message, exit code 2, no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_vrampilot(*args: str,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gui.launcher", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def test_help_lists_the_options() -> None:
    result = run_vrampilot("--help")
    assert result.returncode == 0
    for option in ("--simulate", "--config", "--model", "--install-desktop-entry"):
        assert option in result.stdout
    assert "status" in result.stdout  # the headless commands are named


def test_missing_model_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_vrampilot("--model", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_model_directory_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    result = run_vrampilot("--model", str(tmp_path))
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr
    assert "config.json" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="display detection is for X11/Wayland")
def test_no_display_says_how_to_fix_it() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = run_vrampilot("--no-autoload", env=env)
    assert result.returncode == 2
    assert "QT_QPA_PLATFORM=offscreen" in result.stderr
    assert "Traceback" not in result.stderr


def test_desktop_entry_installs_icon_and_launcher(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path))
    result = run_vrampilot("--install-desktop-entry", env=env)
    assert result.returncode == 0, result.stderr
    entry = tmp_path / "applications" / "vrampilot.desktop"
    assert (tmp_path / "icons" / "hicolor" / "scalable" / "apps" / "vrampilot.svg").is_file()
    text = entry.read_text(encoding="utf-8")
    exec_path = next(line for line in text.splitlines() if line.startswith("Exec="))[5:]
    assert Path(exec_path).name == "vrampilot"


def test_serve_on_a_network_address_without_a_key_exits_2(tmp_path: Path) -> None:
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(tmp_path), QT_QPA_PLATFORM="offscreen",
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    result = run_vrampilot("--no-autoload", "--serve", "0.0.0.0:8765", env=env)
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_needs_host_port() -> None:
    result = run_vrampilot("--serve", "localhost")
    assert result.returncode == 2
    assert "[HOST:]PORT" in result.stderr


def _desktop_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "QT_QPA_PLATFORM_PLUGIN_PATH", "WAYLAND_DISPLAY")}
    return dict(env, DISPLAY=":0", VRAMPILOT_DATA_DIR=str(tmp_path / "data"), **extra)


def _assert_names_packages_without_core_dump(result: subprocess.CompletedProcess[str],
                                             soname: str) -> None:
    from core.doctor.qt_checks import PACKAGES

    assert result.returncode == 2, result.stderr
    debian, fedora = PACKAGES[soname]
    assert "Qt cannot open a window: xcb lacks" in result.stderr
    assert soname in result.stderr
    apt = re.search(r"sudo apt-get install ([^`]+)`", result.stderr)
    dnf = re.search(r"sudo dnf install ([^`]+)`", result.stderr)
    assert apt is not None
    assert debian in apt.group(1).split()
    assert dnf is not None
    assert fedora in dnf.group(1).split()
    assert "Traceback" not in result.stderr
    assert "could not load the Qt platform plugin" not in result.stderr  # Qt never started


@pytest.mark.skipif(sys.platform != "linux", reason="Qt's xcb plugin is for X11")
def test_xcb_plugin_lacking_a_library_names_the_packages(tmp_path: Path) -> None:
    """A prepared xcb plugin linked against a library not installed (as in the doctor's test)."""
    from core.doctor.qt_checks import PACKAGES
    from tests.core.test_doctor_qt import _ldconfig_sonames, _plugin_needing

    installed = _ldconfig_sonames()
    soname = next((s for s in PACKAGES if s not in installed), None)
    if soname is None:
        pytest.skip("every library Qt may need is installed here")
    platforms = _plugin_needing(soname, tmp_path)
    env = _desktop_env(tmp_path, QT_QPA_PLATFORM="xcb", QT_QPA_PLATFORM_PLUGIN_PATH=str(platforms))
    _assert_names_packages_without_core_dump(run_vrampilot("--no-autoload", env=env), soname)


@pytest.mark.skipif(sys.platform != "linux", reason="Qt's xcb plugin is for X11")
def test_this_machine_without_xcb_libraries_says_what_to_install(tmp_path: Path) -> None:
    """QT_QPA_PLATFORM unset, DISPLAY set: Qt would pick xcb, whose libraries lack here."""
    from core.doctor.qt_checks import PACKAGES, missing_libraries, pyside_dir

    pyside = pyside_dir()
    assert pyside is not None
    missing = missing_libraries(pyside / "Qt" / "plugins" / "platforms" / "libqxcb.so")
    if not missing:
        pytest.skip("Qt's xcb plugin has every library here")
    result = run_vrampilot("--no-autoload", env=_desktop_env(tmp_path))
    for soname in missing:
        if soname in PACKAGES:
            _assert_names_packages_without_core_dump(result, soname)
    assert result.returncode == 2
