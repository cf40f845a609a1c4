"""The Models tab's Download button: fit first, progress with bytes/rate/ETA, cancel, on disk.

The real huggingface_hub client fetches from the loopback Hub of tests/hub_server.py, which serves
the demo model under the catalog's repository name for the 4B (so the entry is the catalog's own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import wait_until
from tests.hub_server import HubServer, repo_from_dir

MODEL = "qwen3-4b-instruct-2507"
REPO = "Qwen/Qwen3-4B-Instruct-2507"


@pytest.fixture
def hub(demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer().start()
    server.repos[REPO] = repo_from_dir(demo_model_dir, "5" * 40)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.stop()


@pytest.fixture
def controller(hub: HubServer, runtime: Runtime, loop: qasync.QEventLoop,
               qtbot: QtBot) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 20))


def on_disk_cell(c: AppController, model: str) -> str:
    table = c.models.table
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == model)
    return table.item(row, 3).text()


def test_download_shows_fit_then_progress_and_the_model_is_on_disk(
        hub: HubServer, controller: AppController, loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        panel = controller.models
        assert on_disk_cell(controller, MODEL) == "no"
        panel.select_model("demo-tiny-a")
        assert panel.download_button.isVisibleTo(panel)
        assert not panel.download_button.isEnabled()  # no repository: built locally
        panel.select_model(MODEL)
        assert panel.download_button.isEnabled()
        panel.download_button.click()
        dialog = controller.download_dialog
        assert dialog is not None
        await wait_until(dialog.download_button.isEnabled, 20, "the plan")
        assert dialog.verdict.text().startswith(
            "Fit on NVIDIA GeForce RTX 4090 Laptop GPU (simulated): yes — fits:")
        assert "1.4 MiB to fetch" in dialog.summary.text()
        assert hub.gets("model.safetensors") == 0  # nothing but config.json before the click
        hub.rate = 1_000_000
        dialog.download_button.click()
        await wait_until(lambda: "/s · ETA" in dialog.status.text(), 20,
                         f"progress (status: {dialog.status.text()!r})")
        await wait_until(lambda: dialog.result_path is not None, 30, "the download")
        assert dialog.bar.value() == 1000
        assert on_disk_cell(controller, MODEL) == "yes"
        panel.select_model(MODEL)
        assert not panel.download_button.isEnabled()
        dialog.close()

    loop.run_until_complete(body())


def test_cancel_in_the_dialog_keeps_the_model_off_disk(
        hub: HubServer, controller: AppController, loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        panel = controller.models
        panel.select_model(MODEL)
        dialog = controller.open_download(panel.downloadable(MODEL))  # type: ignore[arg-type]
        await wait_until(dialog.download_button.isEnabled, 20, "the plan")
        hub.rate = 200_000
        dialog.download_button.click()
        await wait_until(lambda: "model.safetensors" in dialog.status.text(), 30,
                         "the weights file")
        dialog.cancel_button.click()
        await wait_until(lambda: dialog.status.text().startswith("Cancelled"), 30, "cancel")
        await wait_until(dialog.download_button.isEnabled, 20, "the new plan")
        assert dialog.plan is not None
        assert [f.name for f in dialog.plan.missing] == ["model.safetensors"]  # the rest kept
        panel.refresh()
        assert on_disk_cell(controller, MODEL) == "no"
        dialog.close()

    loop.run_until_complete(body())


def test_missing_repository_is_one_sentence_in_the_dialog(
        hub: HubServer, controller: AppController, loop: qasync.QEventLoop,
        qtbot: QtBot) -> None:
    async def body() -> None:
        entry = controller.runtime.manager.catalog.get("qwen3-8b")  # not served here
        dialog = controller.open_download(entry)
        await wait_until(lambda: "does not exist" in dialog.summary.text(), 20, "the error")
        assert "repository Qwen/Qwen3-8B-AWQ does not exist on http://127.0.0.1" in \
            dialog.summary.text()
        assert not dialog.download_button.isEnabled()
        qtbot.mouseClick(dialog.close_button, Qt.MouseButton.LeftButton)

    loop.run_until_complete(body())


def test_add_model_directory_checks_it_shows_the_fit_and_keeps_it_for_the_next_start(
        controller: AppController, loop: qasync.QEventLoop, demo_model_dir: Path,
        tmp_path: Path) -> None:
    import shutil

    from core.models.added_dirs import load_added_dirs, remove_dir

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = controller.add_model_directory(empty)
    assert refused == f"Not added: {empty}: config.json is missing or unreadable"
    assert load_added_dirs() == []
    mine = tmp_path / "my-model"
    shutil.copytree(demo_model_dir, mine)
    text = controller.add_model_directory(mine)
    assert text.startswith(f"Added local:my-model ({mine}): fits here: ")
    assert on_disk_cell(controller, "local:my-model") == "yes"
    assert controller.models.selected_model() == "local:my-model"
    assert load_added_dirs() == [mine]
    again = Runtime.create(simulate="rtx4090-laptop", history_path=tmp_path / "again.sqlite3")
    try:
        assert again.manager.catalog.get("local:my-model").path == mine
    finally:
        loop.run_until_complete(again.close())
    assert remove_dir(mine)
    assert load_added_dirs() == []
    assert (mine / "model.safetensors").is_file()  # removing never deletes files
