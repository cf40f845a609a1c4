"""Install the freedesktop .desktop file and icon for the current user, and the XDG autostart
entry (the same file under $XDG_CONFIG_HOME/autostart) that the settings dialog toggles."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from core.facade import resource


def _entry_text() -> str:
    """The shipped .desktop file, running this venv's vrampilot."""
    exe = Path(sys.executable).with_name("vrampilot")
    text = resource("vrampilot.desktop").read_text(encoding="utf-8")
    return text.replace("Exec=vrampilot", f"Exec={exe}")


def install_desktop_entry(home: Path | None = None) -> list[Path]:
    """Copy the icon and a .desktop file (running this venv's vrampilot) into ~/.local/share."""
    base = home or Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    icon_dir = base / "icons" / "hicolor" / "scalable" / "apps"
    app_dir = base / "applications"
    icon_dir.mkdir(parents=True, exist_ok=True)
    app_dir.mkdir(parents=True, exist_ok=True)
    icon = icon_dir / "vrampilot.svg"
    shutil.copyfile(resource("icons", "vrampilot.svg"), icon)
    entry = app_dir / "vrampilot.desktop"
    entry.write_text(_entry_text(), encoding="utf-8")
    return [icon, entry]


def autostart_file() -> Path:
    """Where the XDG autostart spec looks: $XDG_CONFIG_HOME/autostart (default ~/.config)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "autostart" / "vrampilot.desktop"


def autostart_enabled() -> bool:
    return autostart_file().is_file()


def set_autostart(on: bool) -> Path:
    """Write the autostart entry (start at log-in) or remove it; returns its path."""
    path = autostart_file()
    if on:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_entry_text(), encoding="utf-8")
    else:
        path.unlink(missing_ok=True)
    return path
