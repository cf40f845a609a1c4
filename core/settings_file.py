"""The user's config file as the settings dialog edits it: the fields it offers, their
validation by the same rules as the YAML (core.config), and a write that keeps everything else.

The file is read and written with ruamel.yaml's round trip, so keys the dialog does not know,
comments and the order of the file stay as the user wrote them; only changed values are set.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from core import paths
from core.config import AppConfig, build_app_config
from core.config_loading import ConfigError


@dataclass(frozen=True)
class SettingField:
    """One value the dialog edits: its dotted key in the YAML file and how it is shown."""

    key: str
    label: str
    kind: str  # "number", "bool", "choice" or "text"
    group: str
    unit: str = ""
    choices: tuple[str, ...] = ()
    live: bool = True  # applied to the running app at once; False: at the next start


def _thresholds(metric: str, name: str, unit: str) -> tuple[SettingField, ...]:
    base = f"hardware_monitoring.thresholds.{metric}"
    return tuple(SettingField(f"{base}.{part}", f"{name} {label}", "number", "Alerts", u)
                 for part, label, u in (("warning", "warning", unit),
                                        ("critical", "critical", unit),
                                        ("hysteresis", "hysteresis", unit),
                                        ("min_duration_seconds", "minimum duration", "s")))


FIELDS: tuple[SettingField, ...] = (
    *_thresholds("vram_usage", "VRAM", "fraction"),
    *_thresholds("temperature", "Temperature", "°C"),
    *_thresholds("power", "Power", "W"),
    SettingField("hardware_monitoring.policy", "On alerts", "choice", "Alerts",
                 choices=("act", "advise")),
    SettingField("hardware_monitoring.interval_seconds", "Sampling interval", "number",
                 "Monitoring", "s"),
    SettingField("hardware_monitoring.history_seconds", "History window", "number",
                 "Monitoring", "s", live=False),
    SettingField("model_switching.max_temperature_c", "Switch only below", "number",
                 "Switching", "°C"),
    SettingField("model_switching.max_power_w", "Switch only below", "number", "Switching", "W"),
    # One setting for the switch check and the router (router.selection.buffer_gib is its old
    # name: writing both would make the file ambiguous).
    SettingField("model_switching.vram_buffer_gb", "Memory kept free (switch and router)",
                 "number", "Switching", "GB"),
    SettingField("server.enabled", "Serve the local API", "bool", "Local API"),
    SettingField("server.host", "Address", "text", "Local API"),
    SettingField("server.port", "Port", "number", "Local API"),
    # Applied live: the catalog's remote entry follows them. A cleared URL removes the endpoint
    # (the whole `remote:` section: its model and key settings belong to it).
    SettingField("remote.base_url", "URL", "text", "Remote endpoint"),
    SettingField("remote.model", "Model", "text", "Remote endpoint"),
    SettingField("remote.api_key_env", "API key from environment variable", "text",
                 "Remote endpoint"),
    SettingField("startup.minimised", "Start minimised (in the tray where there is one)", "bool",
                 "Start-up", live=False),
    SettingField("startup.load_last_model", "Load the last model at start-up", "bool",
                 "Start-up", live=False),
    SettingField("startup.keep_in_tray", "Keep running in the tray when the window closes",
                 "bool", "Start-up"),
)
BY_KEY = {f.key: f for f in FIELDS}
REMOTE_URL = "remote.base_url"


def removes_remote(edits: Mapping[str, Any]) -> bool:
    """The endpoint's URL was cleared: the `remote:` section goes (there is no endpoint without
    a URL, and a blank URL would only be refused by the same rule as in the file)."""
    return REMOTE_URL in edits and edits[REMOTE_URL] in (None, "")


def _without_remote(edits: Mapping[str, Any]) -> dict[str, Any]:
    """The edits left once the `remote:` section is removed (its own fields go with it)."""
    return {k: v for k, v in edits.items() if not k.startswith("remote.")}


def default_file() -> Path:
    """The user's config file: read at start when no --config is given, written by the
    settings dialog."""
    return paths.config_dir() / "config.yaml"


def _yaml() -> YAML:
    y = YAML()  # round trip: comments, order and quoting are kept
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def read(path: Path) -> CommentedMap:
    """The file's mapping as written (empty when the file does not exist yet).
    ConfigError naming the file when it cannot be read or is not a YAML mapping."""
    if not path.exists():
        return CommentedMap()
    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file ({exc.strerror or exc})") from exc
    except Exception as exc:
        raise ConfigError(path, "", f"not valid YAML: {exc}") from exc
    if data is None:
        return CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError(path, "", f"expected a mapping at the top level, "
                                    f"got {type(data).__name__}")
    return data


def current_values(config: AppConfig) -> dict[str, Any]:
    """Every field's value in effect (the user's file over the shipped defaults)."""
    roots: dict[str, Any] = {"hardware_monitoring": config.monitoring,
                             "model_switching": config.monitoring}
    out: dict[str, Any] = {}
    for f in FIELDS:
        node: Any = roots.get(f.key.split(".", 1)[0], config)
        for part in f.key.split("."):
            # None: an absent optional section (remote:), whose fields are then blank.
            node = None if node is None else getattr(node, part)
        out[f.key] = node
    return out


def parse_text(text: str) -> Any:
    """A field's text as YAML reads a scalar: "87" is a number, "abc" stays text (and is then
    refused by the same rule as in the file)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict | list) else value


def _plain(data: Any) -> Any:
    """ruamel's mapping and scalar types as plain Python (for validation)."""
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def _set(data: dict[str, Any] | CommentedMap, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, Mapping):
            child = CommentedMap() if isinstance(node, CommentedMap) else {}
            node[part] = child
        node = child
    node[last] = value


def _field_of(error: ConfigError, candidates: Mapping[str, Any]) -> str | None:
    """The edited field a validation error is about: its own key, or, for a rule between
    fields (warning above critical), the edited field in the section it names."""
    if error.key in candidates:
        return error.key
    under = [k for k in candidates if k.startswith(error.key + ".")] if error.key else []
    if not under and error.key in BY_KEY:  # a field left blank that an edited one needs
        section = error.key.split(".", 1)[0] + "."
        under = [k for k in candidates if k.startswith(section)]
    return under[-1] if under else None


def validate(path: Path, data: Mapping[str, Any], edits: Mapping[str, Any]
             ) -> tuple[AppConfig | None, dict[str, str]]:
    """The config the file would hold with these edits, and one message per refused field.

    The rules are core.config's, so a value is refused here with the message the same value
    gets in the YAML file. A refused field is put back to the file's value and the rest is
    checked again, so each bad field gets its own message.
    """
    errors: dict[str, str] = {}
    removing = removes_remote(edits)
    pending = _without_remote(edits) if removing else dict(edits)
    while True:
        candidate = _plain(data)
        if removing:
            candidate.pop("remote", None)
        for key, value in pending.items():
            _set(candidate, key, value)
        try:
            config = build_app_config(candidate, path, log_warnings=False)
            return (None if errors else config), errors
        except ConfigError as exc:
            field = _field_of(exc, pending)
            if field is None:  # about a key the dialog does not edit: the file itself is wrong
                errors[""] = str(exc)
                return None, errors
            # Said under the field it names (a blank one an edit needs), else the edited one.
            # (its first problem: what the rest would say once it is put back is not news).
            errors.setdefault(exc.key if exc.key in BY_KEY else field,
                              f"{exc.key}: {exc.problem}")
            del pending[field]


def write(path: Path, data: CommentedMap, edits: Mapping[str, Any]) -> None:
    """Set the edited keys in the file's own mapping and replace the file atomically
    (a crash leaves the old file or the new one, never half of one). A cleared endpoint URL
    removes the `remote:` section (removes_remote)."""
    if removes_remote(edits):
        data.pop("remote", None)
        edits = _without_remote(edits)
    for key, value in edits.items():
        _set(data, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    _yaml().dump(data, buffer)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
