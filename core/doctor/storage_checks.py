"""The data folder (models, history) has room, and the switch history can be written."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from core import paths
from core.doctor.report import Check, Status
from core.units import GIB

# The demo models and the history need a few MB; a real model a few GB (a 4B at 4 bit: ~3 GB).
FAIL_BELOW_BYTES = 256 * 1024**2
WARN_BELOW_BYTES = 10 * GIB
DATA_DIR_FIX = "set VRAMPILOT_DATA_DIR to a folder you can write, or fix the folder's owner/mode"


def check_disk(folder: Path, *, fail_below: int = FAIL_BELOW_BYTES,
               warn_below: int = WARN_BELOW_BYTES,
               usage: Callable[[Path], int] | None = None) -> Check:
    """Free space on the file system that holds folder (or its nearest existing parent)."""
    import shutil

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = usage(probe) if usage is not None else shutil.disk_usage(probe).free
    found = f"{free / GIB:.1f} GiB free in {folder}"
    if free < fail_below:
        return Check("disk space", Status.FAIL, found,
                     f"free at least {fail_below / 1024**2:.0f} MB there, or point "
                     "VRAMPILOT_DATA_DIR to a larger disk")
    if free < warn_below:
        return Check("disk space", Status.WARN, found + " (a real model needs several GB)",
                     "free some space, or keep real models elsewhere (a catalog entry's path)")
    return Check("disk space", Status.OK, found)


def check_history_db(history_db: Callable[[], Path] = paths.history_db) -> Check:
    """The data folder exists or can be made, and the history database takes a write."""
    name = "history database"
    try:
        db = history_db()  # makes the data folder when missing
    except OSError as exc:
        where = exc.filename or "the data folder"
        return Check(name, Status.FAIL, f"cannot create the data folder {where}: "
                     f"{exc.strerror or exc}", DATA_DIR_FIX)
    except paths.DataDirError as exc:  # paths says which folder and why
        return Check(name, Status.FAIL, f"cannot create the data folder: {exc}", DATA_DIR_FIX)
    folder = db.parent
    if not db.exists():
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
                pass
        except OSError as exc:
            return Check(name, Status.FAIL, f"cannot write in {folder}: {exc.strerror or exc}",
                         DATA_DIR_FIX)
        return Check(name, Status.OK, f"{db} (created at the first switch; the folder is writable)")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=2)
        try:
            conn.execute("PRAGMA schema_version").fetchone()  # reads the header: not a db fails
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock, as a switch record would
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return Check(name, Status.WARN, f"{db} is locked by another process",
                         "another vrampilot is probably writing it; close it, or wait")
        return Check(name, Status.FAIL, f"{db}: {exc}", DATA_DIR_FIX)
    except sqlite3.DatabaseError as exc:
        return Check(name, Status.FAIL, f"{db}: {exc}",
                     f"move the damaged file aside (`mv {db} {db}.bad`): a new one is created")
    return Check(name, Status.OK, f"{db} (writable)")
