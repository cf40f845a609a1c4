"""The per-user owner lock and its runtime dir, with real processes: exclusive, private, taken
over after the owner is SIGKILLed (also when a forked child of the owner lives on)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import paths
from core.server.control_client import ControlClient
from core.server.control_server import bind_private_socket
from core.server.instance_lock import InstanceLock

# A process that takes the lock, serves nothing but a bound, listening control socket, forks a
# child that sleeps (as vLLM's "fork" start method would), reports both pids and waits.
HOLDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from core.server.control_server import bind_private_socket
    from core.server.instance_lock import InstanceLock
    lock = InstanceLock(Path(sys.argv[1]))
    assert lock.try_acquire("test")
    sock = bind_private_socket(lock)
    sock.listen()
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(os.getpid(), child, flush=True)
    time.sleep(60)
""")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: a Unix socket path holds at most ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="vp-") as tmp:
        yield Path(tmp) / "run"


def start_holder(run_dir: Path) -> tuple[subprocess.Popen[str], int]:
    run_dir.mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], text=True,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    pid, child = map(int, proc.stdout.readline().split())
    assert pid == proc.pid
    return proc, child


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_lock_is_exclusive_and_free_again_after_release(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    first, second = InstanceLock(run_dir), InstanceLock(run_dir)
    assert first.try_acquire("app")
    assert not second.try_acquire("generate")  # another open file description: refused
    assert second.holder() == (os.getpid(), "app")
    first.release()
    assert second.try_acquire("generate")
    second.release()


def test_sigkilled_owner_is_taken_over_even_with_a_forked_child_alive(run_dir: Path) -> None:
    proc, child = start_holder(run_dir)
    try:
        lock = InstanceLock(run_dir)
        assert not lock.try_acquire("app")
        assert lock.holder() == (proc.pid, "test")
        sock_mode = os.stat(lock.socket_path).st_mode
        assert stat.S_ISSOCK(sock_mode)
        assert stat.S_IMODE(sock_mode) == 0o600
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        os.kill(child, 0)  # the forked child still runs, like an orphaned engine would
        assert lock.try_acquire("app"), "a killed owner's lock must be free"
        assert lock.holder() == (os.getpid(), "app")
        # Its socket file is left behind; nobody answers on it; the new owner replaces it.
        assert lock.socket_path.exists()
        assert ControlClient.connect(lock.socket_path) is None
        sock = bind_private_socket(lock)
        sock.close()
        assert stat.S_IMODE(os.stat(lock.socket_path).st_mode) == 0o600
        lock.release()
        assert not lock.socket_path.exists()
    finally:
        kill_quietly(proc.pid)
        kill_quietly(child)
        proc.wait(10)


def test_only_the_holder_removes_the_socket(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    with pytest.raises(RuntimeError, match="holder"):
        InstanceLock(run_dir).remove_stale_socket()


def test_runtime_dir_is_private_and_follows_the_overrides(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VRAMPILOT_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    assert paths.runtime_dir() == tmp_path / "data" / "run"

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    monkeypatch.setenv("VRAMPILOT_RUNTIME_DIR", str(loose))
    assert paths.runtime_dir() == loose
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700  # tightened

    link = tmp_path / "link"
    link.symlink_to(loose)
    assert paths.runtime_dir() == loose  # an override is followed to its target


def test_runtime_dir_refuses_a_symlink_it_did_not_choose(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "run"
    link.symlink_to(target)
    with pytest.raises(PermissionError, match="not a directory owned by this user"):
        paths._private_dir(link)


def test_too_long_socket_path_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    lock = InstanceLock(deep)
    assert lock.try_acquire("test")
    try:
        with pytest.raises(OSError, match="VRAMPILOT_RUNTIME_DIR"):
            bind_private_socket(lock)
    finally:
        lock.release()


def test_a_waiting_client_takes_the_lock_once_the_owner_is_gone(run_dir: Path) -> None:
    """attach_or_own: the owner answers nothing (only a bare socket), then dies: the waiting
    command becomes the owner instead of failing."""
    import threading

    from core.server.control_client import attach_or_own

    proc, child = start_holder(run_dir)
    kill_quietly(child)
    try:
        started = time.monotonic()
        killer = threading.Timer(1.0, proc.send_signal, (signal.SIGKILL,))
        killer.start()
        lock = InstanceLock(run_dir)
        assert attach_or_own(lock, "generate", wait_s=20) is None
        assert lock.held
        assert time.monotonic() - started < 15
        lock.release()
    finally:
        kill_quietly(proc.pid)
        proc.wait(10)
