"""The one way into core for the front ends (the GUI; the CLI and the local API where it helps).

gui/ imports core only from here (ruff's banned-api rule in gui/ruff.toml enforces it), so what a
front end may rely on is this list, and the modules behind it can move without touching gui/.

The operations are `Runtime`'s members; no wrappers are added on top of them:

    build everything            Runtime.create(config_file, simulate)
    switch / unload / cancel    runtime.manager.switch_to(id, reason=...), .unload(),
                                .cancel_switches(); plan first (pure): .plan_switch(id)
    what the manager is doing   runtime.manager.state (ManagerState), .active_model
    generate                    runtime.chat (ChatSession): route + switch + stream, one place
    route (explain a choice)    runtime.router.route(...) -> RoutingDecision
    status                      runtime.sampler.latest (Sample), runtime.history (charts' data)
    history queries             runtime.history_store.switches() / .pair_stats() / .throughput()
    subscribe to events         runtime.manager.subscribe(fn) (SwitchEvent),
                                runtime.sampler.subscribe(fn) (Sample, AlertEvent list)
    quit                        await runtime.close(deadline_s)

The control socket's server and routes import FastAPI (0.3-1 s), so they are loaded on first use
(`import_control_server`, or the first access to one of their names), not with this module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from core import paths, settings_file
from core.cli.estimate import profile_state
from core.config import AppConfig
from core.config_loading import ConfigError
from core.conversation import Conversation, ConversationFileError, Reply, Sampling, reply_stats
from core.engine.base import (
    ChatMessage,
    EngineError,
    GenerationDelta,
    GenerationRequest,
    ModelDirectoryError,
)
from core.engine.demo_model import DEMO_NOTICE, build_demo_model, ensure_demo_models
from core.engine.model_dir import check_model_dir
from core.engine.remote_engine import (
    KEYRING_SERVICE,
    RemoteConfig,
    keyring_problem,
    store_api_key,
)
from core.engine.remote_health import RemoteHealth, RemoteState, check_remote_health
from core.history_store import PHASE_COLUMNS, HistoryStore, PairStats, SwitchRecord
from core.manager.events import STATE_PHASES, TERMINAL_PHASES, StateChange, SwitchEvent, SwitchPhase
from core.manager.manager import ManagerState, ModelManager, SwitchResult
from core.manager.plan import DeviceReading, SwitchPlan
from core.models.added_dirs import add_dir
from core.models.catalog import Catalog, ModelEntry, load_catalog
from core.models.estimator import fmt_bytes
from core.models.pull import (
    Progress,
    PullCancelled,
    PullError,
    PullPlan,
    check_disk,
    download,
    fit_verdict,
    plan_pull,
)
from core.paths import data_dir, logs_dir, resource
from core.prompt_tokens import PromptCounter
from core.recent_runs import RecentRuns
from core.router.selection import HardwareState, RoutingDecision
from core.routing_log import RoutedRequest
from core.routing_report import RoutingReport, build_report
from core.runtime import CLOSE_DEADLINE_S, Runtime
from core.server.instance_lock import InstanceLock
from core.server.service import ApiService
from core.server.settings import ServerConfigError, ServerSettings, resolve_api_key
from core.settings_file import FIELDS, SettingField
from core.side_by_side import MAX_MODELS, ModelRun
from core.soak.report import CHART_FILE, SoakRun, load_run, save_run, soak_dir
from core.soak.report import describe as describe_soak_run
from core.soak.runner import MAX_CONCURRENCY, SoakInputError, SoakRunner, SoakSettings
from core.soak.series import SoakSeries, series_of
from core.telemetry import clock_events
from core.telemetry.alerts import AlertEvent
from core.telemetry.gpu_processes import others_holding
from core.telemetry.history import TelemetryHistory
from core.telemetry.host_processes import HostProcess, engine_processes
from core.telemetry.recording import TelemetryRecorder, recordings_dir
from core.telemetry.snapshot import GpuProcess, GpuSnapshot, Sample, gpu_metric
from core.units import GIB

if TYPE_CHECKING:
    from core.server.control_routes import Owner, control_router
    from core.server.control_server import ControlServer

# Loaded on first access (FastAPI): name -> module.
_ON_FIRST_USE = {
    "ControlServer": "core.server.control_server",
    "Owner": "core.server.control_routes",
    "control_router": "core.server.control_routes",
}


def import_control_server() -> None:
    """Import the control server and its routes now (in a worker thread: it takes a while)."""
    importlib.import_module("core.server.control_server")
    importlib.import_module("core.server.control_routes")


def __getattr__(name: str) -> Any:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CHART_FILE",
    "CLOSE_DEADLINE_S",
    "DEMO_NOTICE",
    "FIELDS",
    "GIB",
    "KEYRING_SERVICE",
    "MAX_CONCURRENCY",
    "MAX_MODELS",
    "PHASE_COLUMNS",
    "STATE_PHASES",
    "TERMINAL_PHASES",
    "AlertEvent",
    "ApiService",
    "AppConfig",
    "Catalog",
    "ChatMessage",
    "ConfigError",
    "ControlServer",
    "Conversation",
    "ConversationFileError",
    "DeviceReading",
    "EngineError",
    "GenerationDelta",
    "GenerationRequest",
    "GpuProcess",
    "GpuSnapshot",
    "HardwareState",
    "HistoryStore",
    "HostProcess",
    "InstanceLock",
    "ManagerState",
    "ModelDirectoryError",
    "ModelEntry",
    "ModelManager",
    "ModelRun",
    "Owner",
    "PairStats",
    "Progress",
    "PromptCounter",
    "PullCancelled",
    "PullError",
    "PullPlan",
    "RecentRuns",
    "RemoteConfig",
    "RemoteHealth",
    "RemoteState",
    "Reply",
    "RoutedRequest",
    "RoutingDecision",
    "RoutingReport",
    "Runtime",
    "Sample",
    "Sampling",
    "ServerConfigError",
    "ServerSettings",
    "SettingField",
    "SoakInputError",
    "SoakRun",
    "SoakRunner",
    "SoakSeries",
    "SoakSettings",
    "StateChange",
    "SwitchEvent",
    "SwitchPhase",
    "SwitchPlan",
    "SwitchRecord",
    "SwitchResult",
    "TelemetryHistory",
    "TelemetryRecorder",
    "add_dir",
    "build_demo_model",
    "build_report",
    "check_disk",
    "check_model_dir",
    "check_remote_health",
    "clock_events",
    "control_router",
    "data_dir",
    "describe_soak_run",
    "download",
    "engine_processes",
    "ensure_demo_models",
    "fit_verdict",
    "fmt_bytes",
    "gpu_metric",
    "import_control_server",
    "keyring_problem",
    "load_catalog",
    "load_run",
    "logs_dir",
    "others_holding",
    "paths",
    "plan_pull",
    "profile_state",
    "recordings_dir",
    "reply_stats",
    "resolve_api_key",
    "resource",
    "save_run",
    "series_of",
    "settings_file",
    "soak_dir",
    "store_api_key",
]
