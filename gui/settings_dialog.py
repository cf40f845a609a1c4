"""File > Settings: the thresholds, sampling, switch gate, memory buffer, local API and start-up
options, validated as you type by the YAML's own rules, written to the user's config file
(which stays hand-editable: comments and other keys are kept) and applied live where possible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from ruamel.yaml.comments import CommentedMap

from core.facade import (
    FIELDS,
    KEYRING_SERVICE,
    AppConfig,
    ConfigError,
    SettingField,
    keyring_problem,
    settings_file,
    store_api_key,
)
from gui.desktop_entry import autostart_enabled, autostart_file, set_autostart

ERROR_STYLE = "color: #e74c3c"


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


class SettingsDialog(QDialog):
    """One widget per field, an error line under each; Save writes and applies."""

    saved = Signal(object)  # the new AppConfig, after the file was written

    def __init__(self, path: Path, running: AppConfig, parent: QWidget | None = None,
                 validate_delay_ms: int = 250, unavailable: Mapping[str, str] | None = None
                 ) -> None:
        super().__init__(parent)
        self.setWindowTitle("vrampilot settings")
        self.path = path
        # Fields this desktop cannot honour (key -> why): shown disabled with the reason.
        self.unavailable = dict(unavailable or {})
        self.inputs: dict[str, QLineEdit | QCheckBox | QComboBox] = {}
        self.errors: dict[str, QLabel] = {}
        self.config: AppConfig | None = None
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(ERROR_STYLE)
        self.banner.setVisible(False)
        self._data: CommentedMap | None
        try:
            self._data = settings_file.read(path)
            shown, problems = settings_file.validate(path, self._data, {})
        except ConfigError as exc:
            self._data, shown, problems = None, None, {"": str(exc)}
        self.initial = settings_file.current_values(shown or running)
        if problems:  # the file itself is wrong: say so, write nothing over it
            self._show_banner(problems[""] + " (fix the file by hand; nothing is written)")

        where = QLabel(f"Written to {path} (kept hand-editable: other keys and comments stay)")
        where.setWordWrap(True)
        body = QWidget()
        body_layout = QVBoxLayout(body)
        groups: dict[str, QFormLayout] = {}
        for f in FIELDS:
            form = groups.get(f.group)
            if form is None:
                box = QGroupBox(f.group)
                form = groups[f.group] = QFormLayout(box)
                body_layout.addWidget(box)
            form.addRow(self._label(f), self._row(f))
        # Not a YAML key: the autostart entry's presence is the setting.
        self.autostart = QCheckBox()
        self.autostart.setObjectName("autostart")
        self.autostart.setChecked(autostart_enabled())
        self.autostart.setToolTip(f"Writes or removes {autostart_file()}")
        self.autostart.toggled.connect(self._changed)
        groups["Start-up"].addRow("Start vrampilot when I log in", self.autostart)
        groups["Remote endpoint"].addRow("API key", self._api_key_row(shown or running))
        body_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(where)
        layout.addWidget(self.banner)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.buttons)
        self.resize(620, 720)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(validate_delay_ms)
        self._timer.timeout.connect(self.validate)
        self.save_button.setEnabled(self._data is not None)

    # -- building -------------------------------------------------------------------------------
    @staticmethod
    def _label(f: SettingField) -> str:
        unit = f" ({f.unit})" if f.unit else ""
        later = " [next start]" if not f.live else ""
        return f"{f.label}{unit}{later}"

    def _row(self, f: SettingField) -> QWidget:
        value = self.initial[f.key]
        widget: QLineEdit | QCheckBox | QComboBox
        if f.kind == "bool":
            widget = QCheckBox()
            widget.setChecked(bool(value))
            widget.toggled.connect(self._changed)
        elif f.kind == "choice":
            widget = QComboBox()
            widget.addItems(list(f.choices))
            widget.setCurrentText(str(value))
            widget.currentIndexChanged.connect(self._changed)
        else:
            widget = QLineEdit(_text(value))
            widget.textEdited.connect(self._changed)
        widget.setObjectName(f.key)
        error = QLabel("")
        error.setStyleSheet(ERROR_STYLE)
        error.setWordWrap(True)
        error.setVisible(False)
        self.inputs[f.key] = widget
        self.errors[f.key] = error
        cell = QWidget()
        column = QVBoxLayout(cell)
        column.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(widget, 1)
        column.addLayout(row)
        why = self.unavailable.get(f.key)
        if why is not None:  # the value stays in the file; this desktop ignores it
            widget.setEnabled(False)
            widget.setToolTip(why)
            reason = QLabel(why)
            reason.setObjectName(f"{f.key}.unavailable")
            reason.setWordWrap(True)
            column.addWidget(reason)
        column.addWidget(error)
        return cell

    def _api_key_row(self, config: AppConfig) -> QWidget:
        """The key goes to the system keyring (never the file); without one, say where it must
        come from instead."""
        self._keyring_service = config.remote.keyring_service if config.remote else None
        self.api_key = QLineEdit()
        self.api_key.setObjectName("remote.api_key")
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.api_key.setPlaceholderText("kept in the system keyring, not in the file")
        self.api_key.textEdited.connect(self._changed)
        self.api_key_note = QLabel("")
        self.api_key_note.setWordWrap(True)
        problem = keyring_problem()
        if problem is not None:
            self.api_key.setEnabled(False)
            self.api_key.setPlaceholderText("")
            self.api_key_note.setText(
                f"Not stored here: {problem}. The key must come from the environment variable "
                "named in \u201cAPI key from environment variable\u201d (remote.api_key_env).")
        self.api_key_note.setVisible(problem is not None)
        cell = QWidget()
        column = QVBoxLayout(cell)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.api_key)
        column.addWidget(self.api_key_note)
        return cell

    # -- values ---------------------------------------------------------------------------------
    def value(self, key: str) -> Any:
        widget = self.inputs[key]
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if isinstance(widget, QComboBox):
            return widget.currentText()
        return settings_file.parse_text(widget.text())

    def edits(self) -> dict[str, Any]:
        """The fields whose value differs from what the file (over the defaults) holds."""
        out = {f.key: self.value(f.key) for f in FIELDS
               if self.value(f.key) != self.initial[f.key]}
        if self.api_key.text() and self._keyring_service is None:
            out["remote.keyring_service"] = KEYRING_SERVICE  # where the app will look for it
        return out

    def set_value(self, key: str, value: Any) -> None:
        """Change a field as typing would (tests, the screenshot)."""
        widget = self.inputs[key]
        if isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, QComboBox):
            widget.setCurrentText(str(value))
        else:
            widget.setText(str(value))
            widget.textEdited.emit(widget.text())

    def _changed(self, *_args: object) -> None:
        self._timer.start()

    # -- checking and saving --------------------------------------------------------------------
    def validate(self) -> bool:
        """Check the edits by the YAML's rules: a message under each refused field."""
        self._timer.stop()
        if self._data is None:
            return False
        self.config, problems = settings_file.validate(self.path, self._data, self.edits())
        for key, label in self.errors.items():
            message = problems.get(key, "")
            label.setText(message)
            label.setVisible(bool(message))
        if "" in problems:
            self._show_banner(problems[""])
        else:
            self.banner.setVisible(False)
        self.save_button.setEnabled(not problems)
        return not problems

    def save(self) -> None:
        """Write the changed keys (nothing else in the file changes) and apply them."""
        if not self.validate() or self._data is None or self.config is None:
            return
        edits = self.edits()
        try:
            if edits:
                settings_file.write(self.path, self._data, edits)
        except OSError as exc:
            self._show_banner(f"{self.path}: not written ({exc.strerror or exc})")
            return
        key = self.api_key.text()
        if key and self.config.remote is not None:
            try:
                store_api_key(self.config.remote, key)
            except Exception as exc:  # noqa: BLE001 - any keyring failure is said, not raised
                self._show_banner(f"the API key was not stored in the keyring ({exc})")
                return
            self.api_key.clear()
        if self.autostart.isChecked() != autostart_enabled():
            try:
                set_autostart(self.autostart.isChecked())
            except OSError as exc:
                self._show_banner(f"{autostart_file()}: not written ({exc.strerror or exc})")
                return
        self.saved.emit(self.config)
        self.accept()

    def error_text(self, key: str) -> str:
        return self.errors[key].text()

    def _show_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(True)


def open_settings(path: Path, running: AppConfig, parent: QWidget,
                  on_saved: Callable[[AppConfig], None],
                  unavailable: Mapping[str, str] | None = None) -> SettingsDialog:
    """Window-modal and non-blocking (the asyncio loop keeps running behind it)."""
    dialog = SettingsDialog(path, running, parent, unavailable=unavailable)
    dialog.saved.connect(on_saved)
    dialog.open()
    return dialog
