"""One engine per user, with real vLLM demo models and real processes: `vrampilot generate`
beside the running app (or beside another `generate`) goes through the owner's engine, and at
no moment does more than one vLLM engine core process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.engine.processes import alive
from core.server.control_client import ControlClient
from core.server.instance_lock import InstanceLock

pytestmark = pytest.mark.vllm

LOAD_S = 500.0  # a vLLM CPU start is ~20 s on a quiet machine, minutes on a loaded one
# The default 90 s switch timeout is too short for an engine start on a loaded 2-core machine.
SLOW_MACHINE_CONFIG = "model_switching:\n  switch_timeout_seconds: 400\n"
ENGINE_CORE = "VLLM::EngineCore"


class EngineCoreWatcher:
    """Polls this test's descendants for vLLM engine core processes; keeps the largest count
    seen at one moment (any process a launched app or command starts descends from here)."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-core-watcher")

    def _count(self) -> int:
        count = 0
        for proc in psutil.Process().children(recursive=True):
            try:
                text = " ".join([proc.name(), *proc.cmdline()])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if ENGINE_CORE[:15] in text and alive(proc):
                count += 1
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self._count())
            self._stop.wait(0.1)

    def __enter__(self) -> EngineCoreWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def demo_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.engine.demo_model import ensure_demo_models

    root = tmp_path_factory.mktemp("demo-models")
    ensure_demo_models(root)
    return root


@pytest.fixture
def env(tmp_path: Path, demo_models_root: Path) -> Iterator[dict[str, str]]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(demo_models_root, target_is_directory=True)
    (tmp_path / "slow.yaml").write_text(SLOW_MACHINE_CONFIG, encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="vp-") as run:  # short: a socket path is <108 bytes
        yield dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1",
                   VRAMPILOT_DATA_DIR=str(data), VRAMPILOT_RUNTIME_DIR=run,
                   XDG_CONFIG_HOME=str(tmp_path / "config"))


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def launch(env: dict[str, str], log: Path, procs: list[subprocess.Popen[str]],
           *args: str) -> subprocess.Popen[str]:
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    return proc


def vrampilot(env: dict[str, str], *args: str, timeout: float = 120
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gui.launcher", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def owner_of(env: dict[str, str]) -> dict[str, object] | None:
    client = ControlClient.connect(InstanceLock(Path(env["VRAMPILOT_RUNTIME_DIR"])).socket_path)
    if client is None:
        return None
    with client:
        return client.get("/owner")  # type: ignore[no-any-return]


def wait_for(what: str, predicate: object, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + LOAD_S
    while not predicate():  # type: ignore[operator]
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, (f"timed out waiting for {what}:\n"
                                             f"{log.read_text()[-3000:]}")
        time.sleep(0.25)


def test_generate_beside_the_app_switches_in_the_apps_engine(
        env: dict[str, str], tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    log = tmp_path / "app.log"
    with EngineCoreWatcher() as watcher:
        app = launch(env, log, started, "--simulate", "rtx4090-laptop",  # autoloads demo-tiny-a
                     "--config", str(tmp_path / "slow.yaml"))

        def a_loaded() -> bool:
            owner = owner_of(env)
            return owner is not None and owner["active_model"] == "demo-tiny-a"

        wait_for("the app to load demo-tiny-a", a_loaded, app, log)

        result = vrampilot(env, "generate", "--model", "demo-tiny-b", "--max-tokens", "8",
                           "Say hello.", timeout=LOAD_S)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"[owner] the vrampilot app (pid {app.pid})" in result.stderr
        assert "[switch] ready" in result.stderr  # the owner's switch, streamed to the CLI
        assert "[done] model demo-tiny-b: 8 tokens" in result.stderr
        assert owner_of(env)["active_model"] == "demo-tiny-b"  # type: ignore[index]

        history = vrampilot(env, "history")
        assert "demo-tiny-a -> demo-tiny-b [manual] ready" in history.stdout, history.stdout

        app.send_signal(signal.SIGTERM)
        assert app.wait(60) == 0
    assert watcher.most == 1, f"{watcher.most} engine core processes at once"


def test_generate_beside_a_running_generate_shares_its_engine(
        env: dict[str, str], tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    log = tmp_path / "first.log"
    lock = InstanceLock(Path(env["VRAMPILOT_RUNTIME_DIR"]))
    with EngineCoreWatcher() as watcher:
        first = launch(env, log, started, "generate", "--model", "demo-tiny-a",
                       "--max-tokens", "8", "--config", str(tmp_path / "slow.yaml"), "First.")

        def serving() -> bool:
            owner = owner_of(env)
            return owner is not None and owner["pid"] == first.pid

        wait_for("the first generate to serve the control socket", serving, first, log)
        assert lock.holder() == (first.pid, "generate")

        # The app cannot open meanwhile: the owner has no window; it says so and exits.
        app = vrampilot(env, "--no-autoload")
        assert app.returncode == 1
        assert f"headless `vrampilot generate` (pid {first.pid})" in app.stderr

        second = vrampilot(env, "generate", "--model", "demo-tiny-a", "--max-tokens", "8",
                           "Second.", timeout=LOAD_S)
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"[owner] `vrampilot generate` (pid {first.pid})" in second.stderr
        assert "[done] model demo-tiny-a: 8 tokens" in second.stderr

        assert first.wait(LOAD_S) == 0, log.read_text()[-3000:]
        assert "[done] model demo-tiny-a: 8 tokens" in log.read_text()
    assert watcher.most == 1, f"{watcher.most} engine core processes at once"
    assert not lock.socket_path.exists()
    assert lock.try_acquire("test")  # released by the first generate
    lock.release()
