"""Where vrampilot keeps its files (per-user, via platformdirs)."""

from __future__ import annotations

import os
import warnings
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


def runtime_dir() -> Path:
    """Where the per-user owner lock and control socket live: private to this user (0700).

    VRAMPILOT_RUNTIME_DIR overrides it; with VRAMPILOT_DATA_DIR set (tests, a second set-up) it
    lies under that data dir, so separate data dirs have separate owners. Otherwise the user's
    runtime dir ($XDG_RUNTIME_DIR/vrampilot), or, where that cannot be made private to this user,
    a folder under the data dir.
    """
    override = os.environ.get("VRAMPILOT_RUNTIME_DIR")
    if override:
        return _private_dir(Path(override).resolve())
    if not os.environ.get("VRAMPILOT_DATA_DIR"):
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            candidate = Path(platformdirs.user_runtime_dir(APP_NAME))
        try:
            return _private_dir(candidate)
        except OSError:
            pass
    return _private_dir(data_dir() / "run")


def _private_dir(path: Path) -> Path:
    """Create path (mode 0700) or check that an existing one is ours, then make it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if path.is_symlink() or not path.is_dir() or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a directory owned by this user")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def config_dir() -> Path:
    """Where the user's config file lives: VRAMPILOT_CONFIG_DIR, else the data dir when
    VRAMPILOT_DATA_DIR is set (tests, a second set-up), else ~/.config/vrampilot."""
    override = os.environ.get("VRAMPILOT_CONFIG_DIR")
    if override:
        return Path(override)
    if os.environ.get("VRAMPILOT_DATA_DIR"):
        return data_dir()
    return Path(platformdirs.user_config_dir(APP_NAME))


def models_dir() -> Path:
    """Where locally built demo models live."""
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def logs_dir() -> Path:
    """The engine's log files (vLLM's output goes there, warnings also to stderr)."""
    return data_dir() / "logs"


def history_db() -> Path:
    """The SQLite switch-history database."""
    return data_dir() / "history.sqlite3"


def resource(*parts: str) -> Path:
    """A file shipped in resources/."""
    return RESOURCES.joinpath(*parts)
