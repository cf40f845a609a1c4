"""The whole application's settings: monitoring, model catalog, router, remote endpoint.

One user YAML file (``--config FILE``) may hold any of the top-level sections
hardware_monitoring, model_switching, performance_tracking (resources/monitoring.yaml), models,
router (resources/models.yaml), remote and server (the local API). Shipped defaults are merged
under it; every model name a router list or the fallback cascade holds is checked against the
catalog here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.config_loading import ConfigError, describe_error, read_yaml
from core.models.catalog import Catalog, default_models_file, load_catalog
from core.router import RouterConfig, load_router_config
from core.router.config import FROM_MODEL_SWITCHING
from core.server.settings import ServerSettings
from core.units import GIB

if TYPE_CHECKING:
    from core.engine.remote_engine import RemoteConfig
    from core.telemetry.config import MonitoringConfig

TOP_LEVEL_KEYS = ("hardware_monitoring", "model_switching", "performance_tracking", "models",
                  "router", "remote", "server", "startup")
S = TypeVar("S", bound=BaseModel)
# The name a fallback cascade uses for the remote endpoint (the catalog entry of engine "remote").
REMOTE_ID = "remote"


class StartupSettings(BaseModel):
    """The `startup:` section: what the desktop app does when it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimised: bool = False  # start hidden in the tray (or minimised where there is no tray)
    load_last_model: bool = False  # load the model last made ready, not the demo model
    # Closing the window hides it to the tray (the tray's Quit quits); ignored without a tray.
    keep_in_tray: bool = False


@dataclass(frozen=True)
class AppConfig:
    """Everything the app reads from YAML, validated and cross-checked."""

    monitoring: MonitoringConfig
    catalog: Catalog
    router: RouterConfig
    remote: RemoteConfig | None  # the `remote:` section: the endpoint's settings, or None
    sources: tuple[str, ...]  # the files read: defaults first, the user's file last
    # Loaded, but the user should know (the decision record's key names read as ours).
    warnings: tuple[str, ...] = ()
    server: ServerSettings = field(default_factory=ServerSettings)  # the local API (off)
    startup: StartupSettings = field(default_factory=StartupSettings)

    @property
    def fallback_cascade(self) -> tuple[str, ...]:
        return tuple(self.monitoring.model_switching.fallback_cascade)

    @property
    def buffer_bytes(self) -> int:
        """Free memory every fit check keeps back (model_switching.vram_buffer_gb)."""
        return int(self.monitoring.model_switching.vram_buffer_gb * GIB)


def move_router_keys(user: dict[str, Any], label: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The user's data with router.selection.buffer_gib / cascade moved to model_switching,
    and what was moved (new dotted key -> the old one). Given both ways: a ConfigError.

    These were the router's own settings; the router and the manager share them now. The
    router's cascade never named the remote endpoint (use_remote adds it), the manager's ends
    with it, so it is appended."""
    router = user.get("router")
    selection = router.get("selection") if isinstance(router, dict) else None
    if not isinstance(selection, dict) or not set(FROM_MODEL_SWITCHING) & set(selection):
        return user, {}
    user = copy.deepcopy(user)
    selection = user["router"]["selection"]
    switching = user.setdefault("model_switching", {})
    if not isinstance(switching, dict):
        raise ConfigError(label, "model_switching",
                          f"expected a mapping, got {type(switching).__name__}")
    moved: dict[str, str] = {}
    for old, new in FROM_MODEL_SWITCHING.items():
        if old not in selection:
            continue
        if new in switching:
            raise ConfigError(label, f"router.selection.{old}", f"given twice: here and as "
                              f"model_switching.{new} (one setting now); keep that one")
        value = selection.pop(old)
        if old == "cascade" and isinstance(value, list) and REMOTE_ID not in value:
            value = [*value, REMOTE_ID]
        switching[new] = value
        moved[f"model_switching.{new}"] = f"router.selection.{old}"
    return user, moved


def _remote_settings(user: dict[str, Any], user_label: str) -> RemoteConfig | None:
    """The `remote:` section, validated by the remote engine's own settings model."""
    from core.engine.remote_engine import RemoteConfig

    if "remote" not in user or user["remote"] is None:
        return None
    raw = user["remote"]
    if not isinstance(raw, dict):
        raise ConfigError(user_label, "remote", f"expected a mapping, got {type(raw).__name__}")
    try:
        return RemoteConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(["remote", *(str(p) for p in err["loc"])])
        raise ConfigError(user_label, key, describe_error(err)) from None


def _section(model: type[S], name: str, user: dict[str, Any], user_label: str) -> S:
    """One self-contained section (`server:`, `startup:`); absent: its defaults."""
    raw = user.get(name)
    if raw is None:
        return model()
    if not isinstance(raw, dict):
        raise ConfigError(user_label, name, f"expected a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join([name, *(str(p) for p in err["loc"])])
        raise ConfigError(user_label, key, describe_error(err)) from None


def _apply_remote(catalog: Catalog, remote: RemoteConfig | None) -> Catalog:
    """Point the catalog's remote entry at the configured endpoint and enable it.

    Without a `remote:` section the entry stays as the catalog has it (disabled by default).
    """
    if remote is None or REMOTE_ID not in catalog:
        return catalog
    entry = catalog.get(REMOTE_ID)
    updated = entry.model_copy(update={"base_url": remote.base_url, "remote_model": remote.model,
                                       "enabled": True})
    return catalog.with_entry(updated)


def with_remote(catalog: Catalog, remote: RemoteConfig | None) -> Catalog:
    """The catalog with its remote entry following a changed `remote:` section (Settings, while
    running): pointed at the new endpoint, or disabled once the endpoint is removed."""
    if REMOTE_ID not in catalog:
        return catalog
    if remote is not None:
        return _apply_remote(catalog, remote)
    return catalog.with_entry(catalog.get(REMOTE_ID).model_copy(update={"enabled": False}))


def load_app_config(user_file: Path | str | None = None, *,
                    models_dir: Path | None = None, log_warnings: bool = True) -> AppConfig:
    """Read the shipped defaults and the user's file (if any) into one validated AppConfig.

    ConfigError (naming the file and key) for: an unknown top-level key, a bad value in any
    section, a router list or fallback cascade naming a model missing from the catalog.
    """
    user: dict[str, Any] = read_yaml(user_file) if user_file is not None else {}
    return build_app_config(user, user_file, models_dir=models_dir, log_warnings=log_warnings)


def build_app_config(user: dict[str, Any], user_file: Path | str | None = None, *,
                     models_dir: Path | None = None, log_warnings: bool = True) -> AppConfig:
    """The AppConfig of a parsed user file (errors name user_file): the same rules whether the
    data came from a YAML file or from the settings dialog."""
    from core.telemetry.config import default_path as monitoring_defaults
    from core.telemetry.config import load_monitoring_config, log_warning

    user_label = str(user_file) if user_file is not None else "<user config>"
    for key in user:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(user_label, str(key),
                              "unknown key; expected one of " + ", ".join(TOP_LEVEL_KEYS))

    models_path = default_models_file()
    catalog = load_catalog(user.get("models"), user_file, defaults_path=models_path,
                           models_dir=models_dir)
    remote = _remote_settings(user, user_label)
    catalog = _apply_remote(catalog, remote)
    warnings: list[str] = []

    def warn(text: str) -> None:
        if log_warnings:  # a validation pass (the CLI's up-front check) stays silent
            log_warning(text)
        warnings.append(text)

    user, moved = move_router_keys(user, user_label)
    if moved:
        warn(f"{user_label}: read " + "; ".join(f"{old} as {new}" for new, old in moved.items())
             + " (the router and the manager share one setting now; rename to silence this)")
    try:
        monitoring = load_monitoring_config(user, user_file, warn=warn)
    except ConfigError as exc:  # a moved key is named as the user wrote it
        for new, old in moved.items():
            if exc.key == new or exc.key.startswith(new + "."):
                raise ConfigError(exc.path, old + exc.key[len(new):], exc.problem) from None
        raise

    cascade = monitoring.model_switching.fallback_cascade
    user_sets_cascade = isinstance(user.get("model_switching"), dict) and \
        "fallback_cascade" in user["model_switching"]
    for i, name in enumerate(cascade):
        if name not in catalog:
            where = user_label if user_sets_cascade else str(monitoring_defaults())
            key = "model_switching.fallback_cascade"
            raise ConfigError(where, f"{moved.get(key, key)}.{i}",
                              f"model {name!r} is not in the catalog "
                              f"(known: {', '.join(catalog.ids)})")
    router = load_router_config(catalog, user.get("router"), user_file,
                                defaults_path=models_path, switching=monitoring.model_switching)
    sources = (str(monitoring_defaults()), str(models_path)) + \
        ((user_label,) if user_file is not None else ())
    return AppConfig(monitoring=monitoring, catalog=catalog, router=router, remote=remote,
                     sources=sources, warnings=tuple(warnings),
                     server=_section(ServerSettings, "server", user, user_label),
                     startup=_section(StartupSettings, "startup", user, user_label))
