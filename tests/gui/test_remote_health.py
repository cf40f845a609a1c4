"""The remote endpoint's row in the Models tab against a real HTTP server on loopback (a stub of
an OpenAI-compatible server: /v1/models with a key check; the real vLLM server is
tests/core/test_remote_engine.py). Each state is driven by changing what the server does."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.config import REMOTE_ID
from core.engine.remote_health import RemoteState
from core.runtime import Runtime
from gui.model_switcher import STATE_COLUMN, ModelSwitcherPanel

KEY_ENV = "VRAMPILOT_TEST_REMOTE_KEY"


class _Endpoint(http.server.BaseHTTPRequestHandler):
    """GET /v1/models: 401 without the key, else the served models (after `delay_s`)."""

    key = "sk-right"
    served: tuple[str, ...] = ("big-model",)
    delay_s = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            self._answer(401, {"error": {"message": "invalid api key"}})
        elif self.path == "/v1/models":
            self._answer(200, {"object": "list",
                               "data": [{"id": m, "object": "model"} for m in self.served]})
        else:
            self._answer(404, {"error": {"message": "no route"}})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[http.server.ThreadingHTTPServer]:
    _Endpoint.key, _Endpoint.served, _Endpoint.delay_s = "sk-right", ("big-model",), 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, name="stub-endpoint", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def remote_runtime(endpoint: http.server.ThreadingHTTPServer, data_dir: Path,
                   monkeypatch: pytest.MonkeyPatch, loop: qasync.QEventLoop) -> Iterator[Runtime]:
    config = data_dir / "remote.yaml"
    config.write_text(f"remote:\n  base_url: http://127.0.0.1:{endpoint.server_address[1]}/v1\n"
                      f"  model: big-model\n  api_key_env: {KEY_ENV}\n", encoding="utf-8")
    monkeypatch.setenv(KEY_ENV, "sk-right")
    rt = Runtime.create(config, simulate="rtx4090-laptop",
                        history_path=data_dir / "history.sqlite3")
    yield rt
    loop.run_until_complete(rt.close())


def remote_cell(panel: ModelSwitcherPanel) -> str:
    panel.select_model(REMOTE_ID)  # raises when the row is missing
    row = panel.table.currentRow()
    item = panel.table.item(row, STATE_COLUMN)
    assert item is not None
    return item.text()


def test_remote_row_shows_each_state_without_blocking_the_gui(
        remote_runtime: Runtime, endpoint: http.server.ThreadingHTTPServer,
        monkeypatch: pytest.MonkeyPatch, qtbot: QtBot) -> None:
    assert remote_runtime.config.remote is not None
    panel = ModelSwitcherPanel(remote_runtime.manager, remote_runtime.history_store,
                               remote=remote_runtime.config.remote, remote_check_s=0.3)
    qtbot.addWidget(panel)
    logged: list[tuple[str, str]] = []
    panel.event_line.connect(lambda level, text: logged.append((level, text)))
    assert panel.remote_timer.isActive()

    # The first probe starts with the panel; the row says so until the answer comes.
    qtbot.waitUntil(lambda: panel.remote_health is not None, timeout=5000)
    assert panel.remote_health is not None
    assert panel.remote_health.state is RemoteState.REACHABLE
    assert remote_cell(panel).startswith("reachable (checked ")

    # A wrong key: the next periodic probe shows it; the key never appears.
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    qtbot.waitUntil(lambda: remote_cell(panel).startswith("refused key"), timeout=5000)
    assert panel.remote_health is not None
    assert "sk-wrong" not in panel.remote_health.detail
    assert "HTTP 401" in panel.table.item(panel.table.currentRow(), STATE_COLUMN).toolTip()
    assert any("refused key" in text for level, text in logged if level == "warning")

    # On demand (Refresh) while the timer is off: the right key, but another model served.
    panel.remote_timer.stop()
    monkeypatch.setenv(KEY_ENV, "sk-right")
    _Endpoint.served = ("small-model",)
    _Endpoint.delay_s = 1.5  # a slow endpoint: the GUI thread must not wait for it
    started = time.monotonic()
    qtbot.mouseClick(panel.refresh_button, Qt.MouseButton.LeftButton)
    assert time.monotonic() - started < 0.5
    assert panel.remote_checking
    assert "checking" in remote_cell(panel)
    ticks: list[float] = []
    timer_started = time.monotonic()
    qtbot.waitUntil(lambda: bool(ticks.append(time.monotonic()) or
                                 remote_cell(panel).startswith("not serving big-model")),
                    timeout=5000)
    assert time.monotonic() - timer_started >= 1.4  # the answer took the endpoint's 1.5 s...
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert gaps
    assert max(gaps) < 0.75  # ...while the GUI thread kept running its event loop
    assert "small-model" in panel.remote_health.detail  # type: ignore[union-attr]

    # The server gone: unreachable, at the next periodic probe.
    _Endpoint.delay_s = 0.0
    endpoint.shutdown()
    endpoint.server_close()
    panel.remote_timer.start()
    qtbot.waitUntil(lambda: remote_cell(panel).startswith("unreachable"), timeout=8000)
    assert "cannot be reached" in panel.remote_health.detail  # type: ignore[union-attr]
    panel.remote_timer.stop()
    qtbot.waitUntil(lambda: not panel.remote_checking, timeout=8000)


def test_no_remote_configured_no_probe(with_demo_models: Path, runtime: Runtime,
                                       qtbot: QtBot) -> None:
    panel = ModelSwitcherPanel(runtime.manager, runtime.history_store)
    qtbot.addWidget(panel)
    assert not panel.remote_timer.isActive()
    assert not panel.check_remote()
    assert remote_cell(panel) == "disabled"
