"""Desktop options in the settings dialog through the real controller on the simulated GPU:
keeping the app in the tray when the window closes, starting at log-in, the remote endpoint."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
import qasync
from keyring.backend import KeyringBackend
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QLabel, QLineEdit, QSystemTrayIcon
from pytestqt.qtbot import QtBot

from core import settings_file
from core.config import load_app_config
from core.config_loading import ConfigError
from core.engine.remote_engine import resolve_api_key
from core.runtime import Runtime
from gui.app import AppController
from gui.settings_dialog import SettingsDialog
from tests.gui.conftest import PROFILE, wait_until

KEEP = "startup.keep_in_tray"


@pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise",
                           "systemTrayWindowChanged")  # offscreen
def test_kept_in_the_tray_closing_hides_and_the_trays_quit_quits(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The offscreen platform has no tray; the desktop's answer is the one seam faked here.
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))
    app = AppController(runtime, settings=None, tray=True)

    async def body() -> None:
        app.start(autoload=False)
        assert app.tray.available
        app.window.show()
        # Off by default: the close button would quit. Turn it on in the dialog.
        dialog = app.open_settings()
        box = dialog.inputs[KEEP]
        assert isinstance(box, QCheckBox)
        assert box.isEnabled()
        assert not box.isChecked()
        box.click()  # as a click on its indicator does
        await wait_until(lambda: dialog.config is not None and dialog.save_button.isEnabled(),
                         5, "validated")
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert load_app_config(settings_file.default_file()).startup.keep_in_tray
        assert runtime.config.startup.keep_in_tray  # applied at once, no restart
        # The close button now only hides the window; the app goes on sampling.
        app.window.close()
        await asyncio.sleep(0.3)
        assert not app.window.isVisible()
        assert not app.finished.is_set()
        app.tray.refresh()
        assert app.tray.show_action.text() == "Show window"
        app.tray.show_action.trigger()
        assert app.window.isVisible()
        # The tray's Quit really quits.
        app.tray.quit_action.trigger()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())


def test_without_a_tray_the_option_is_disabled_with_the_reason_and_close_quits(
        data_dir: Path, loop: qasync.QEventLoop) -> None:
    config = settings_file.default_file()
    config.write_text("startup: {keep_in_tray: true}\n", encoding="utf-8")
    runtime = Runtime.create(config_file=config, simulate=PROFILE,
                             history_path=data_dir / "history.sqlite3")
    app = AppController(runtime, settings=None, tray=False)

    async def body() -> None:
        app.start(autoload=False)
        dialog = app.open_settings()
        box = dialog.inputs[KEEP]
        assert box.isChecked()
        assert not box.isEnabled()
        reason = dialog.findChild(QLabel, f"{KEEP}.unavailable")
        assert reason is not None
        assert reason.text() == "No system tray on this desktop: closing the window quits."
        dialog.reject()
        app.window.close()  # no tray to come back from: closing quits
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())
    loop.run_until_complete(runtime.close())


def test_the_autostart_toggle_writes_and_removes_the_xdg_entry(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    entry = tmp_path / "xdg" / "autostart" / "vrampilot.desktop"
    app = AppController(runtime, settings=None, tray=False)

    async def save(dialog: SettingsDialog) -> None:
        await wait_until(lambda: dialog.config is not None and dialog.save_button.isEnabled(),
                         5, "validated")
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert not dialog.isVisible()

    async def body() -> None:
        app.start(autoload=False)
        dialog = app.open_settings()
        assert not dialog.autostart.isChecked()
        assert str(entry) in dialog.autostart.toolTip()
        dialog.autostart.click()
        await save(dialog)
        text = entry.read_text(encoding="utf-8")
        assert "[Desktop Entry]" in text
        exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
        assert exec_line.endswith("/vrampilot")  # this venv's launcher, not a bare name
        assert not settings_file.default_file().exists()  # no YAML key: nothing written there
        # Opened again, the dialog reads the entry's presence; unticked, the entry goes.
        dialog = app.open_settings()
        assert dialog.autostart.isChecked()
        dialog.autostart.click()
        await save(dialog)
        assert not entry.exists()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())


class MemoryKeyring(KeyringBackend):
    """The system keyring's seam: a backend kept in memory (no Secret Service here)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.secrets.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(before)


def _type(qtbot: QtBot, dialog: SettingsDialog, key: str, text: str) -> None:
    field = dialog.inputs[key]
    assert isinstance(field, QLineEdit)
    field.selectAll()
    qtbot.keyClicks(field, text)


def _yaml_message(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_app_config(path)
    path.unlink()
    return f"{caught.value.key}: {caught.value.problem}"


def test_the_remote_endpoint_is_validated_written_and_its_key_kept_in_the_keyring(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot,
        memory_keyring: MemoryKeyring) -> None:
    path = settings_file.default_file()
    bad_url = _yaml_message(path, "remote: {base_url: 'ftp://gpu-box/v1', model: m}\n")
    app = AppController(runtime, settings=None, tray=False)

    async def validated(dialog: SettingsDialog) -> None:
        await wait_until(lambda: not dialog._timer.isActive(), 5, "validated")

    async def body() -> None:
        app.start(autoload=False)
        dialog = app.open_settings()
        assert dialog.api_key.isEnabled()
        assert dialog.api_key.echoMode() == QLineEdit.EchoMode.Password
        # A key with no endpoint to use it: the URL is asked for under its own field.
        qtbot.keyClicks(dialog.api_key, "sk-secret-123")
        await validated(dialog)
        assert dialog.error_text("remote.base_url").startswith("remote.base_url: ")
        assert not dialog.save_button.isEnabled()
        # A wrong URL gets the YAML file's own message.
        _type(qtbot, dialog, "remote.base_url", "ftp://gpu-box/v1")
        _type(qtbot, dialog, "remote.model", "m")
        await validated(dialog)
        assert dialog.error_text("remote.base_url") == bad_url
        assert not dialog.save_button.isEnabled()
        _type(qtbot, dialog, "remote.base_url", "http://gpu-box:8000/v1")
        _type(qtbot, dialog, "remote.model", "qwen3-32b")
        await validated(dialog)
        assert dialog.error_text("remote.base_url") == ""
        assert dialog.save_button.isEnabled()
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        assert not dialog.isVisible()

        text = path.read_text(encoding="utf-8")
        assert "sk-secret-123" not in text  # the key never reaches the file
        remote = load_app_config(path).remote
        assert remote is not None
        assert (remote.base_url, remote.model, remote.keyring_service) == (
            "http://gpu-box:8000/v1", "qwen3-32b", "vrampilot")
        assert memory_keyring.secrets == {("vrampilot", "qwen3-32b"): "sk-secret-123"}
        assert resolve_api_key(remote) == "sk-secret-123"  # where the remote engine reads it
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())


def test_without_a_keyring_the_key_field_says_to_use_the_environment_variable(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # as if the package were not installed
    app = AppController(runtime, settings=None, tray=False)

    async def body() -> None:
        app.start(autoload=False)
        dialog = app.open_settings()
        assert not dialog.api_key.isEnabled()
        assert dialog.api_key_note.text() == (
            "Not stored here: the keyring package is not installed. The key must come from the "
            "environment variable named in \u201cAPI key from environment variable\u201d "
            "(remote.api_key_env).")
        dialog.reject()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())
