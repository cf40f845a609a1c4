"""Run every check in order; --quick leaves out the slow ones (vLLM import, remote endpoint)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import paths
from core.doctor import engine_checks, network_checks, qt_checks, storage_checks
from core.doctor.report import Check, Report, Status
from core.telemetry.nvml_device import read_driver_report


@dataclass(frozen=True)
class DoctorOptions:
    config_file: str | None = None
    quick: bool = False  # skip the ~8 s vLLM import and the network request
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    nvml: Any = None  # the pynvml module (tests pass a fake)
    python: str = sys.executable
    import_timeout_s: float = 180.0
    remote_timeout_s: float = 2.0


def run_checklist(options: DoctorOptions) -> Report:
    checks: list[Check] = [engine_checks.check_python()]
    driver = read_driver_report(options.nvml)
    checks.append(engine_checks.check_nvidia(driver))
    builds = engine_checks.installed_builds()
    checks.append(engine_checks.check_vllm_build(builds, has_gpu=bool(driver.gpu_names),
                                                 tested=engine_checks.pinned_vllm_ranges()))
    if options.quick:
        checks += [Check("vLLM import", Status.SKIP, "not checked (--quick)"),
                   Check("torch", Status.SKIP, "not checked (--quick)")]
    else:
        probe = engine_checks.probe_engine_imports(python=options.python,
                                                   timeout_s=options.import_timeout_s,
                                                   env=options.env)
        checks += [engine_checks.check_vllm_import(probe),
                   engine_checks.check_torch(probe, builds)]
    checks += [qt_checks.check_qt(options.env), qt_checks.check_display(options.env)]
    history = storage_checks.check_history_db()
    checks += [storage_checks.check_disk(_models_folder()), history]
    checks += _config_checks(options)
    return Report(tuple(checks))


def _models_folder() -> Path:
    try:
        return paths.models_dir()
    except OSError as exc:  # the history row names the error; measure the disk it would be on
        return Path(exc.filename) if exc.filename else Path.home()
    except paths.DataDirError:  # the same, said by paths: measure the configured folder's disk
        override = os.environ.get("VRAMPILOT_DATA_DIR")
        return Path(override) if override else Path.home()


def _config_checks(options: DoctorOptions) -> list[Check]:
    from core.config import load_app_config
    from core.config_loading import ConfigError

    try:
        config = load_app_config(options.config_file)
    except ConfigError as exc:
        return [Check("configuration", Status.FAIL, str(exc), "fix the key named above")]
    found = options.config_file or "defaults only (no --config)"
    checks = [Check("configuration", Status.OK, found)]
    if options.quick:
        checks.append(Check("remote endpoint", Status.SKIP, "not checked (--quick)"))
    else:
        checks.append(network_checks.check_remote(config.remote,
                                                  timeout_s=options.remote_timeout_s))
    checks.append(network_checks.check_api_address(network_checks.server_address(config)))
    return checks
