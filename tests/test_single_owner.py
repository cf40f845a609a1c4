"""One owner per user, with real processes (no vLLM: the app runs --no-autoload on the
simulated GPU): a second launch raises the first window and exits 0 without Qt; `status`
answers through the owner in the same shape; a SIGKILLed owner is taken over."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.server.control_client import ControlClient
from core.server.instance_lock import InstanceLock

PROFILE = "rtx4090-laptop"
START_S = 120.0  # the app's start (Qt, the runtime) on a loaded 2-core machine
# Runs the launcher in-process, then says whether Qt was ever imported.
SECOND_LAUNCH = ("import sys; from gui.launcher import run; rc = run(sys.argv[1:]); "
                 "print('qt imported:', any(m.startswith('PySide6') for m in sys.modules)); "
                 "sys.exit(rc)")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="vp-") as run:  # short: a socket path is <108 bytes
        yield dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1",
                   VRAMPILOT_DATA_DIR=str(tmp_path / "data"), VRAMPILOT_RUNTIME_DIR=run,
                   XDG_CONFIG_HOME=str(tmp_path / "config"))


@pytest.fixture
def apps() -> Iterator[list[subprocess.Popen[str]]]:
    """Apps started by a test; killed at the end whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def start_app(env: dict[str, str], log: Path, apps: list[subprocess.Popen[str]]
              ) -> subprocess.Popen[str]:
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "--no-autoload",
                                 "--simulate", PROFILE], env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    apps.append(proc)
    return proc


def vrampilot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gui.launcher", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def lock_of(env: dict[str, str]) -> InstanceLock:
    return InstanceLock(Path(env["VRAMPILOT_RUNTIME_DIR"]))


def wait_for_owner(env: dict[str, str], proc: subprocess.Popen[str]) -> dict[str, object]:
    """The owner's /owner answer once proc serves the control socket."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the app exited with {proc.returncode}"
        client = ControlClient.connect(lock_of(env).socket_path)
        if client is not None:
            with client:
                if client.pid == proc.pid:
                    return client.owner
        time.sleep(0.2)
    raise AssertionError(f"pid {proc.pid} did not serve the control socket in {START_S} s")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def test_second_launch_raises_the_first_window_and_exits_without_qt(
        env: dict[str, str], tmp_path: Path, apps: list[subprocess.Popen[str]]) -> None:
    first = start_app(env, tmp_path / "first.log", apps)
    # Launch again as soon as the first holds the lock, while its window is still coming up.
    deadline = time.monotonic() + START_S
    while lock_of(env).holder() != (first.pid, "app"):
        assert time.monotonic() < deadline, "the first app never took the owner lock"
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-c", SECOND_LAUNCH, "--no-autoload"], env=env,
                            capture_output=True, text=True, timeout=START_S + 30, check=False)
    assert second.returncode == 0, second.stderr
    assert f"already runs (pid {first.pid})" in second.stdout
    assert "qt imported: False" in second.stdout
    owner = wait_for_owner(env, first)
    assert owner["raised"] == 1
    assert first.poll() is None  # the first app runs on

    assert stop(first) == 0
    log = (tmp_path / "first.log").read_text()
    assert "vrampilot: window brought to the front" in log  # its raise callback ran
    assert not lock_of(env).socket_path.exists()


def test_status_through_the_owner_and_takeover_after_sigkill(
        env: dict[str, str], tmp_path: Path, apps: list[subprocess.Popen[str]]) -> None:
    local_json = vrampilot(env, "status", "--json", "--simulate", PROFILE)
    local_text = vrampilot(env, "status", "--simulate", PROFILE)
    assert local_json.returncode == 0, local_json.stderr
    assert "Owner" not in local_text.stdout  # no owner runs yet

    first = start_app(env, tmp_path / "first.log", apps)
    wait_for_owner(env, first)
    socket_path = lock_of(env).socket_path
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700

    attached_json = vrampilot(env, "status", "--json")
    attached_text = vrampilot(env, "status")
    assert attached_json.returncode == 0, attached_json.stderr
    local, attached = json.loads(local_json.stdout), json.loads(attached_json.stdout)
    assert set(attached) == set(local) | {"owner"}
    assert attached["owner"]["pid"] == first.pid
    assert set(attached["host"]) == set(local["host"])
    assert [set(g) for g in attached["gpus"]] == [set(g) for g in local["gpus"]]
    assert attached["gpus"][0]["simulated"] is True  # the owner's (simulated) device

    def heads(text: str) -> list[str]:
        return [line.split()[0] if line.strip() else "" for line in text.splitlines()]

    assert heads(attached_text.stdout) == [*heads(local_text.stdout), "Owner"]
    assert f"Owner   pid {first.pid} (the app), model none" in attached_text.stdout

    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert socket_path.exists()  # left behind by the killed owner
    after = vrampilot(env, "status")
    assert after.returncode == 0, after.stderr
    assert "Owner" not in after.stdout  # nobody answers: computed here

    second = start_app(env, tmp_path / "second.log", apps)
    owner = wait_for_owner(env, second)
    assert owner["kind"] == "app"
    assert lock_of(env).holder() == (second.pid, "app")
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stop(second) == 0
