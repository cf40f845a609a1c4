"""Doctor checks for Qt's platform plugin libraries and the display, without importing Qt.

Against this machine (the real PySide6 plugins, ldconfig's view of the system libraries) and
against prepared failures: a plugin path without the plugin, a plugin needing a library that is
not installed, a copied plugin away from Qt's own libraries, displays nobody serves.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.doctor import Status
from core.doctor.qt_checks import (
    PACKAGES,
    check_display,
    check_qt,
    missing_libraries,
    pyside_dir,
    qt_platforms,
)


def _ldconfig_sonames() -> set[str]:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def test_offscreen_works_here() -> None:
    """The test suite itself runs Qt offscreen, so its plugin must have every library."""
    check = check_qt({"QT_QPA_PLATFORM": "offscreen"})
    assert check.status is Status.OK, check
    assert "libqoffscreen.so" in check.found


def test_this_machine_xcb_libraries_agree_with_ldconfig() -> None:
    check = check_qt({"QT_QPA_PLATFORM": "xcb"})
    pyside = pyside_dir()
    assert pyside is not None
    missing = missing_libraries(pyside / "Qt" / "plugins" / "platforms" / "libqxcb.so")
    known = _ldconfig_sonames()
    for soname in missing:
        assert soname not in known, f"ldd says {soname} is missing, ldconfig knows it"
    # xcb's own system libraries: each one ldconfig lacks must be reported with its packages.
    for soname in ("libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"):
        if soname not in known:
            assert check.status is Status.FAIL
            assert soname in check.found
            assert check.fix is not None
            debian, fedora = PACKAGES[soname]
            assert debian in check.fix
            assert fedora in check.fix
    if not missing:
        assert check.status is Status.OK


def test_a_plugin_path_without_the_plugin_fails(tmp_path: Path) -> None:
    check = check_qt({"QT_QPA_PLATFORM": "offscreen", "QT_QPA_PLATFORM_PLUGIN_PATH": str(tmp_path)})
    assert check.status is Status.FAIL
    assert check.found == f"no 'offscreen' plugin in {tmp_path}"
    assert check.fix is not None
    assert "QT_QPA_PLATFORM_PLUGIN_PATH" in check.fix


def _plugin_needing(soname: str, tmp_path: Path) -> Path:
    """platforms/libqxcb.so linked against a library of that soname, which is then removed."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the prepared plugin")
    build = tmp_path / "build"
    build.mkdir()
    (build / "stub.c").write_text("int stub_symbol(void) { return 0; }\n")
    (build / "plugin.c").write_text("int stub_symbol(void);\n"
                                    "int plugin(void) { return stub_symbol(); }\n")
    stub = build / soname
    subprocess.run([gcc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(stub),
                    str(build / "stub.c")], check=True, timeout=120)
    platforms = tmp_path / "plugins" / "platforms"
    platforms.mkdir(parents=True)
    subprocess.run([gcc, "-shared", "-fPIC", "-Wl,--no-as-needed", "-o",
                    str(platforms / "libqxcb.so"), str(build / "plugin.c"), str(stub)],
                   check=True, timeout=120)
    stub.unlink()
    return platforms


def test_a_missing_system_library_names_the_packages(tmp_path: Path) -> None:
    installed = _ldconfig_sonames()
    absent = [s for s in PACKAGES if s not in installed]
    if not absent:
        pytest.skip("every library Qt may need is installed here")
    soname = absent[0]
    platforms = _plugin_needing(soname, tmp_path)
    check = check_qt({"QT_QPA_PLATFORM": "xcb", "QT_QPA_PLATFORM_PLUGIN_PATH": str(platforms)})
    assert check.status is Status.FAIL
    assert check.found == f"xcb lacks {soname}"
    debian, fedora = PACKAGES[soname]
    assert check.fix == (f"Debian/Ubuntu: `sudo apt-get install {debian}`; "
                         f"Fedora: `sudo dnf install {fedora}`")


def test_an_unknown_missing_library_says_how_to_find_its_package(tmp_path: Path) -> None:
    platforms = _plugin_needing("libvrampilot-gone.so.3", tmp_path)
    check = check_qt({"QT_QPA_PLATFORM": "xcb", "QT_QPA_PLATFORM_PLUGIN_PATH": str(platforms)})
    assert check.status is Status.FAIL
    assert "libvrampilot-gone.so.3" in check.found
    assert check.fix is not None
    assert "apt-file search" in check.fix
    assert "dnf provides" in check.fix


def test_a_plugin_away_from_qt_libraries_says_reinstall(tmp_path: Path) -> None:
    pyside = pyside_dir()
    assert pyside is not None
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    shutil.copy(pyside / "Qt" / "plugins" / "platforms" / "libqoffscreen.so", platforms)
    check = check_qt({"QT_QPA_PLATFORM": "offscreen",
                      "QT_QPA_PLATFORM_PLUGIN_PATH": str(platforms)})
    assert check.status is Status.FAIL
    assert "libQt6" in check.found  # found via $ORIGIN/../../lib, which is not there
    assert check.fix is not None
    assert "--force-reinstall" in check.fix


def test_qt_tries_wayland_then_xcb_in_a_wayland_session() -> None:
    assert qt_platforms({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}) == \
        ["wayland", "xcb"]
    assert qt_platforms({"DISPLAY": ":0"}) == ["xcb"]
    assert qt_platforms({"QT_QPA_PLATFORM": "wayland;xcb"}) == ["wayland", "xcb"]


# -- display -----------------------------------------------------------------------------------

def test_offscreen_needs_no_display() -> None:
    check = check_display({"QT_QPA_PLATFORM": "offscreen"})
    assert check.status is Status.OK


def test_no_display_fails_with_the_fix() -> None:
    check = check_display({})
    assert check.status is Status.FAIL
    assert check.found == "no X display (DISPLAY is not set)"
    assert check.fix is not None
    assert "xvfb-run" in check.fix
    assert "xorg-x11-server-Xvfb" in check.fix


def _free_display_number(start: int) -> int:
    for n in range(start, start + 100):
        if not Path(f"/tmp/.X11-unix/X{n}").exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(f"\0/tmp/.X11-unix/X{n}")
                except OSError:
                    return n
    raise RuntimeError("no free display number")


def test_a_display_nobody_serves_fails() -> None:
    n = _free_display_number(180)
    check = check_display({"DISPLAY": f":{n}"})
    assert check.status is Status.FAIL
    assert f"no X server answers at DISPLAY=:{n}" in check.found


@pytest.fixture
def listening_x_socket() -> Iterator[int]:
    """Something listening where an X server of a free display number would (abstract socket)."""
    n = _free_display_number(280)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(f"\0/tmp/.X11-unix/X{n}")
        server.listen(1)
        yield n


def test_a_served_x_display_is_found(listening_x_socket: int) -> None:
    check = check_display({"DISPLAY": f":{listening_x_socket}.0"})
    assert check.status is Status.OK
    assert check.found == f"X server at DISPLAY=:{listening_x_socket}.0"


def test_wayland_falls_back_to_x(tmp_path: Path, listening_x_socket: int) -> None:
    env = {"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-9",
           "XDG_RUNTIME_DIR": str(tmp_path), "DISPLAY": f":{listening_x_socket}"}
    assert check_display(env).status is Status.OK  # the compositor is gone, XWayland answers
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as compositor:
        compositor.bind(str(tmp_path / "wayland-9"))
        compositor.listen(1)
        check = check_display({**env, "DISPLAY": ""})
    assert check.status is Status.OK
    assert check.found == f"Wayland compositor at {tmp_path / 'wayland-9'}"
    check = check_display({**env, "DISPLAY": ""})  # socket file left, nobody listens
    assert check.status is Status.FAIL
    assert "no Wayland compositor" in check.found


def test_an_incomplete_pyside_fails(tmp_path: Path) -> None:
    check = check_qt({"QT_QPA_PLATFORM": "offscreen"}, pyside=tmp_path)
    assert check.status is Status.FAIL
    assert check.found == f"PySide6 at {tmp_path} has no QtWidgets module"
