"""Install the freedesktop .desktop file and icon for the current user."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from core.facade import resource


def install_desktop_entry(home: Path | None = None) -> list[Path]:
    """Copy the icon and a .desktop file (running this venv's vrampilot) into ~/.local/share."""
    base = home or Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    icon_dir = base / "icons" / "hicolor" / "scalable" / "apps"
    app_dir = base / "applications"
    icon_dir.mkdir(parents=True, exist_ok=True)
    app_dir.mkdir(parents=True, exist_ok=True)
    icon = icon_dir / "vrampilot.svg"
    shutil.copyfile(resource("icons", "vrampilot.svg"), icon)
    exe = Path(sys.executable).with_name("vrampilot")
    text = resource("vrampilot.desktop").read_text(encoding="utf-8")
    text = text.replace("Exec=vrampilot", f"Exec={exe}")
    entry = app_dir / "vrampilot.desktop"
    entry.write_text(text, encoding="utf-8")
    return [icon, entry]
