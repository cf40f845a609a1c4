"""Where vrampilot keeps its files (per-user, via platformdirs)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "vrampilot"
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


class DataDirError(ValueError):
    """The data directory cannot be created or is not a directory."""


def data_dir() -> Path:
    """User data dir; VRAMPILOT_DATA_DIR overrides it (tests use a temp dir)."""
    override = os.environ.get("VRAMPILOT_DATA_DIR")
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"the data directory {path} cannot be used ({exc.strerror or exc}); "
                           "set VRAMPILOT_DATA_DIR to a writable directory") from None
    return path


def models_dir() -> Path:
    """Where locally built demo models live."""
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def history_db() -> Path:
    """The SQLite switch-history database."""
    return data_dir() / "history.sqlite3"


def resource(*parts: str) -> Path:
    """A file shipped in resources/."""
    return RESOURCES.joinpath(*parts)
