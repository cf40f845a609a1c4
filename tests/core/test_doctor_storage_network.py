"""Doctor checks for disk space, the history database, the remote endpoint and the API address.

Real files, a real SQLite database (the app's own HistoryStore), real sockets and a real HTTP
server on loopback; prepared failures: a data folder that cannot be made, a read-only folder, a
damaged or locked database, a closed loopback port, a key the endpoint refuses, a taken port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from core import paths
from core.doctor import Status
from core.doctor.network_checks import check_api_address, check_remote, server_address
from core.doctor.storage_checks import GIB, check_disk, check_history_db
from core.engine.remote_engine import RemoteConfig
from core.history_store import HistoryStore


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(folder))
    return folder


# -- disk --------------------------------------------------------------------------------------

def test_disk_reports_the_real_free_space(tmp_path: Path) -> None:
    check = check_disk(tmp_path / "not-yet" / "models")  # measured on the nearest parent
    free = shutil.disk_usage(tmp_path).free / GIB
    reported = float(check.found.split(" GiB")[0])
    assert abs(reported - free) < 0.5
    assert check.status is (Status.OK if free >= 10 else Status.WARN)


def test_a_nearly_full_disk_fails_and_a_small_one_warns(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    full = check_disk(tmp_path, fail_below=free + GIB, warn_below=free + 2 * GIB)
    assert full.status is Status.FAIL
    assert full.fix is not None
    assert "VRAMPILOT_DATA_DIR" in full.fix
    small = check_disk(tmp_path, fail_below=1, warn_below=free + GIB)
    assert small.status is Status.WARN


# -- history database --------------------------------------------------------------------------

def test_a_fresh_data_folder_is_writable(data_dir: Path) -> None:
    check = check_history_db()
    assert check.status is Status.OK
    assert check.found.startswith(str(data_dir / "history.sqlite3"))
    assert list(data_dir.iterdir()) == []  # the probe file is gone


def test_the_app_history_database_takes_a_write(data_dir: Path) -> None:
    store = HistoryStore()
    store.close()
    check = check_history_db()
    assert check.status is Status.OK
    assert check.found == f"{paths.history_db()} (writable)"


def test_a_data_folder_that_cannot_be_made_fails(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(blocker / "data"))
    check = check_history_db()
    assert check.status is Status.FAIL
    assert check.found.startswith("cannot create the data folder")
    assert check.fix is not None
    assert "VRAMPILOT_DATA_DIR" in check.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_data_folder_fails(data_dir: Path) -> None:
    data_dir.mkdir()
    data_dir.chmod(0o555)
    try:
        check = check_history_db()
    finally:
        data_dir.chmod(0o755)
    assert check.status is Status.FAIL
    assert "Permission denied" in check.found


def test_a_damaged_database_fails_with_the_fix(data_dir: Path) -> None:
    data_dir.mkdir()
    db = data_dir / "history.sqlite3"
    db.write_bytes(b"this is not SQLite" * 100)
    check = check_history_db()
    assert check.status is Status.FAIL
    assert "not a database" in check.found
    assert check.fix == f"move the damaged file aside (`mv {db} {db}.bad`): a new one is created"


def test_a_database_path_that_is_a_folder_fails(data_dir: Path) -> None:
    (data_dir / "history.sqlite3").mkdir(parents=True)
    assert check_history_db().status is Status.FAIL


def test_a_database_locked_by_another_writer_warns(data_dir: Path) -> None:
    HistoryStore().close()
    holder = sqlite3.connect(paths.history_db(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        check = check_history_db()
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert check.status is Status.WARN
    assert "locked" in check.found
    assert waited < 10


# -- remote endpoint ---------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def openai_server() -> Iterator[str]:
    """A real HTTP server on loopback answering /v1/models like vLLM's, with key 'sesame'."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != "Bearer sesame":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"object": "list", "data": [{"id": "qwen3-30b"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_no_remote_section_is_skipped() -> None:
    assert check_remote(None).status is Status.SKIP


def test_an_unreachable_endpoint_warns_quickly() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.monotonic()
    check = check_remote(RemoteConfig(base_url=url, model="qwen3-30b"), timeout_s=2)
    assert time.monotonic() - started < 5
    assert check.status is Status.WARN
    assert check.found.startswith("unreachable: ")
    assert "cannot be reached (Connection refused)" in check.found
    assert check.fix is not None
    assert "remote.base_url" in check.fix


def test_a_reachable_endpoint_serving_the_model(openai_server: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTOR_TEST_KEY", "sesame")
    remote = RemoteConfig(base_url=openai_server, model="qwen3-30b", api_key_env="DOCTOR_TEST_KEY")
    check = check_remote(remote)
    assert check.status is Status.OK
    assert check.found == f"{openai_server} serves 'qwen3-30b'."
    other = check_remote(remote.model_copy(update={"model": "qwen3-8b"}))
    assert other.status is Status.WARN
    assert other.found.startswith("not serving the model: ")
    assert "does not serve 'qwen3-8b' (it serves: qwen3-30b)" in other.found
    assert other.fix == "set remote.model to one of the served names"


def test_a_refused_key_warns(openai_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTOR_TEST_KEY", "wrong")
    check = check_remote(RemoteConfig(base_url=openai_server, model="qwen3-30b",
                                      api_key_env="DOCTOR_TEST_KEY"))
    assert check.status is Status.WARN
    assert "refused the API key (HTTP 401)" in check.found
    assert check.fix == "set the endpoint's API key in $DOCTOR_TEST_KEY"


# -- local API address -------------------------------------------------------------------------

def test_the_server_section_is_optional() -> None:
    assert server_address(SimpleNamespace()) is None  # configs from before the section
    assert server_address(SimpleNamespace(server=None)) is None
    off = SimpleNamespace(server=SimpleNamespace(enabled=False, host="127.0.0.1", port=8765))
    assert server_address(off) is None
    on = SimpleNamespace(server=SimpleNamespace(host="127.0.0.1", port=8765))
    assert server_address(on) == ("127.0.0.1", 8765)
    assert check_api_address(None).status is Status.SKIP


def test_a_free_address_is_ok() -> None:
    port = _closed_port()
    check = check_api_address(("127.0.0.1", port))
    assert check.status is Status.OK
    assert check.found == f"127.0.0.1:{port} is free"


def test_a_taken_address_names_who_listens() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        check = check_api_address(("127.0.0.1", port))
    assert check.status is Status.WARN
    assert f"127.0.0.1:{port} cannot be bound" in check.found
    assert f"(pid {os.getpid()}) listens there" in check.found
