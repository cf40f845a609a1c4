"""Qt's platform plugin, the system libraries it loads, and a display, without importing Qt.

The plugin is found as Qt finds it (QT_QPA_PLATFORM_PLUGIN_PATH, QT_PLUGIN_PATH, then PySide6's
own folder) and ``ldd`` lists what the dynamic loader cannot resolve: the libraries whose absence
makes Qt abort with "could not load the Qt platform plugin" (a core dump) at start.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from core.doctor.report import Check, Status

# soname -> (Debian/Ubuntu package, Fedora package): what Qt's xcb, wayland and GL paths load.
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
}
# Platforms that draw into memory or a device, not onto a display server.
NO_DISPLAY_PLATFORMS = frozenset({"offscreen", "minimal", "minimalegl", "vnc", "eglfs", "linuxfb",
                                  "vkkhrdisplay"})
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)


def qt_platforms(env: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order (QT_QPA_PLATFORM, else Qt 6's default)."""
    chosen = env.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return [p.split(":")[0] for p in chosen.split(";") if p.strip()]
    if env.get("XDG_SESSION_TYPE") == "wayland" and env.get("WAYLAND_DISPLAY"):
        return ["wayland", "xcb"]
    return ["xcb"]


def pyside_dir() -> Path | None:
    spec = importlib.util.find_spec("PySide6")  # locates the package without importing Qt
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def plugin_dirs(env: Mapping[str, str], pyside: Path | None) -> list[Path]:
    """Where Qt looks for platform plugins: QT_QPA_PLATFORM_PLUGIN_PATH replaces the rest."""
    if env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        return [Path(env["QT_QPA_PLATFORM_PLUGIN_PATH"])]
    dirs = [Path(p) / "platforms" for p in env.get("QT_PLUGIN_PATH", "").split(os.pathsep) if p]
    if pyside is not None:
        dirs.append(pyside / "Qt" / "plugins" / "platforms")
    return dirs


def missing_libraries(binary: Path) -> list[str]:
    """The shared libraries the dynamic loader cannot find for binary (and what it needs)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise FileNotFoundError("ldd is not installed")
    result = subprocess.run([ldd, str(binary)], capture_output=True, text=True, timeout=60,
                            check=False)
    return sorted(set(_NOT_FOUND.findall(result.stdout)))


def install_advice(missing: list[str]) -> str:
    """The packages that provide the missing libraries, for Debian/Ubuntu and Fedora."""
    qt_own = [s for s in missing if s.startswith("libQt6") or s.startswith("libpyside6")
              or s.startswith("libshiboken6")]
    known = [s for s in missing if s in PACKAGES]
    unknown = [s for s in missing if s not in PACKAGES and s not in qt_own]
    parts = []
    if known:
        debian = " ".join(sorted({PACKAGES[s][0] for s in known}))
        fedora = " ".join(sorted({PACKAGES[s][1] for s in known}))
        parts.append(f"Debian/Ubuntu: `sudo apt-get install {debian}`; "
                     f"Fedora: `sudo dnf install {fedora}`")
    for soname in unknown:
        parts.append(f"find the package holding {soname}: `apt-file search {soname}` "
                     f"(Debian/Ubuntu), `dnf provides '*/{soname}'` (Fedora)")
    if qt_own:
        parts.append("Qt's own libraries are missing: reinstall PySide6 "
                     "(`.venv/bin/pip install --force-reinstall 'PySide6-Essentials<6.12'`)")
    return "; ".join(parts)


def _find_plugin(name: str, dirs: list[Path]) -> Path | None:
    for folder in dirs:
        candidate = folder / f"libq{name}.so"
        if candidate.is_file():
            return candidate
    return None


def check_qt(env: Mapping[str, str] = os.environ, pyside: Path | None = None) -> Check:
    """Qt's widgets and the platform plugin Qt will pick load with every library they need."""
    name = "Qt platform"
    pyside = pyside if pyside is not None else pyside_dir()
    if pyside is None:
        return Check(name, Status.FAIL, "PySide6 is not installed",
                     "run `make setup` (installs PySide6-Essentials)")
    widgets = pyside / "QtWidgets.abi3.so"
    if not widgets.is_file():
        return Check(name, Status.FAIL, f"PySide6 at {pyside} has no QtWidgets module",
                     "reinstall PySide6 "
                     "(`.venv/bin/pip install --force-reinstall 'PySide6-Essentials<6.12'`)")
    platforms = qt_platforms(env)
    dirs = plugin_dirs(env, pyside)
    problems: list[str] = []
    missing: list[str] = []
    try:
        widgets_missing = missing_libraries(widgets)
        for platform in platforms:
            plugin = _find_plugin(platform, dirs)
            if plugin is None:
                problems.append(f"no '{platform}' plugin in {', '.join(map(str, dirs))}")
                continue
            lacking = missing_libraries(plugin)
            if not lacking and not widgets_missing:
                return Check(name, Status.OK, f"{platform} ({plugin}): every library found")
            missing += lacking
            problems.append(f"{platform} lacks {', '.join(lacking or widgets_missing)}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, Status.WARN, f"could not inspect Qt's libraries: {exc}",
                     "install ldd (Debian/Ubuntu: libc-bin; Fedora: glibc-common)")
    missing = sorted(set(missing + widgets_missing))
    if missing:
        fix = install_advice(missing)
    else:
        fix = ("unset QT_QPA_PLATFORM_PLUGIN_PATH / QT_PLUGIN_PATH, or reinstall PySide6 "
               "(`.venv/bin/pip install --force-reinstall 'PySide6-Essentials<6.12'`)")
    return Check(name, Status.FAIL, "; ".join(problems), fix)


def check_display(env: Mapping[str, str] = os.environ) -> Check:
    """A display server the chosen platform can draw on (none needed for offscreen)."""
    name = "display"
    platforms = qt_platforms(env)
    if platforms[0] in NO_DISPLAY_PLATFORMS:
        return Check(name, Status.OK, f"none needed (QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']})")
    problems = []
    for platform in platforms:
        found, problem = (_x11(env) if platform == "xcb" else
                          _wayland(env) if platform == "wayland" else
                          (f"{platform}: not checked", None))
        if problem is None:
            return Check(name, Status.OK, found)
        problems.append(problem)
    return Check(name, Status.FAIL, "; ".join(problems),
                 "start the app from a desktop session, or run it under a virtual display: "
                 "`xvfb-run -a vrampilot` (Debian/Ubuntu: xvfb; Fedora: xorg-x11-server-Xvfb); "
                 "QT_QPA_PLATFORM=offscreen runs it with no window at all")


def _x11(env: Mapping[str, str]) -> tuple[str, str | None]:
    display = env.get("DISPLAY", "")
    if not display:
        return "", "no X display (DISPLAY is not set)"
    match = re.fullmatch(r"(.*):(\d+)(?:\.\d+)?", display)
    if match is None:
        return "", f"DISPLAY={display!r} is not a display name"
    host, number = match.group(1), int(match.group(2))
    try:
        if host in ("", "unix"):
            _connect_unix(f"/tmp/.X11-unix/X{number}", abstract_too=True)
        else:
            socket.create_connection((host, 6000 + number), timeout=2).close()
    except OSError as exc:
        return "", f"no X server answers at DISPLAY={display} ({exc.strerror or exc})"
    return f"X server at DISPLAY={display}", None


def _wayland(env: Mapping[str, str]) -> tuple[str, str | None]:
    name = env.get("WAYLAND_DISPLAY", "")
    if not name:
        return "", "no Wayland display (WAYLAND_DISPLAY is not set)"
    path = name if name.startswith("/") else os.path.join(env.get("XDG_RUNTIME_DIR", ""), name)
    try:
        _connect_unix(path)
    except OSError as exc:
        return "", f"no Wayland compositor at {path} ({exc.strerror or exc})"
    return f"Wayland compositor at {path}", None


def _connect_unix(path: str, *, abstract_too: bool = False) -> None:
    """Connect and close; X servers also listen on the abstract name (leading NUL)."""
    last: OSError | None = None
    for address in ([path, "\0" + path] if abstract_too else [path]):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try:
                sock.connect(address)
                return
            except OSError as exc:
                last = last or exc
    assert last is not None
    raise last
