"""One owner of the model per user: an flock on a file in the user's runtime dir.

The first vrampilot process that runs an engine takes the lock and serves the control socket
beside it; every later one finds the lock held and talks to that owner instead. The kernel drops
an flock when its holder dies, even by SIGKILL, so a killed owner's lock is free at once; the
socket file it leaves behind is removed by whoever takes the lock next.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from core import paths

LOCK_NAME = "owner.lock"
SOCKET_NAME = "control.sock"
# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
MAX_SOCKET_PATH = 103


class InstanceLock:
    """The per-user owner lock. Holding it means: this process runs the engine."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else paths.runtime_dir()
        self._fd: int | None = None
        self._fork_hook = False

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_NAME

    @property
    def socket_path(self) -> Path:
        return self.directory / SOCKET_NAME

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, kind: str) -> bool:
        """Take the lock if no live process holds it (never blocks). kind says who holds it
        ("app", "generate"); it is written with the pid into the lock file for messages."""
        if self._fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {kind}\n".encode(), 0)
        if not self._fork_hook:
            # A child forked without exec (vLLM's "fork" method on CUDA) would share the lock
            # and keep it after a SIGKILLed owner; it drops its copy (closing, not unlocking).
            os.register_at_fork(after_in_child=self._forget_in_child)
            self._fork_hook = True
        return True

    def _forget_in_child(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def holder(self) -> tuple[int, str] | None:
        """(pid, kind) the current or last holder wrote, for messages; None if unreadable."""
        try:
            pid, kind = self.lock_path.read_text(encoding="ascii").split()
            return int(pid), kind
        except (OSError, ValueError):
            return None

    def remove_stale_socket(self) -> None:
        """Remove a socket file a dead owner left (only call while holding the lock)."""
        if self._fd is None:
            raise RuntimeError("only the lock's holder may remove the control socket")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def release(self) -> None:
        """Remove the socket and drop the lock (idempotent). Exiting drops it as well."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
