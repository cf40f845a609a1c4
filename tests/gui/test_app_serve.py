"""The local API in the app: the Server menu's toggle and the status bar (in process, on the
app's qasync loop), and `--serve` on a real app process that SIGTERM closes cleanly. No engine
is loaded: these check the wiring, tests/core/test_api_vllm.py the generation."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import qasync

from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(runtime: Runtime, loop: qasync.QEventLoop) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_toggle_serves_on_the_app_loop_and_shows_the_address(
        app: AppController, loop: qasync.QEventLoop) -> None:
    port = free_port()
    app.api.settings = app.api.settings.model_copy(update={"port": port})
    app.start()

    async def body() -> None:
        assert app.window.api_status.text() == "API off"
        app.window.serve_action.setChecked(True)
        await wait_until(lambda: app.api.running, 10, "the API to listen")
        await wait_until(lambda: "127.0.0.1" in app.window.api_status.text(), 5, "the label")
        assert f"http://127.0.0.1:{port}" in app.window.api_status.text()
        assert "queue 0" in app.window.api_status.text()
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                                    max_retries=0)
        ids = [m.id async for m in client.models.list()]
        assert "auto" in ids
        await client.close()
        app.window.serve_action.setChecked(False)
        await wait_until(lambda: app.window.api_status.text() == "API off", 10,
                         "the API to stop")
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/health")

    loop.run_until_complete(body())


def test_busy_port_is_reported_and_the_toggle_turns_back_off(
        app: AppController, loop: qasync.QEventLoop) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app.api.settings = app.api.settings.model_copy(update={"port": port})
        app.start()

        async def body() -> None:
            app.window.serve_action.setChecked(True)
            await wait_until(lambda: not app.window.serve_action.isChecked(), 10,
                             "the toggle to turn back off")

        loop.run_until_complete(body())
    assert not app.api.running
    log = app.events.event_log.toPlainText()
    assert "the local API did not start: Cannot listen on 127.0.0.1:" + str(port) in log


def test_serve_option_on_the_real_app_then_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, VRAMPILOT_DATA_DIR=str(tmp_path), QT_QPA_PLATFORM="offscreen",
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "--simulate",
                             "rtx4090-laptop", "--no-autoload", "--serve", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the API did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                               max_retries=0)
        assert "demo-tiny-a" in [m.id for m in client.models.list()]
        proc.send_signal(signal.SIGTERM)  # the app's handler, not uvicorn's, must get it
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
