"""The decision record's own monitoring_config.yaml loads as written (its names as aliases of ours).

tests/data/adr029_monitoring_config.yaml is the record's YAML block copied verbatim from ADR-029.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import load_app_config
from core.config_loading import ConfigError
from core.telemetry.config import AlertAction, load_monitoring_config

RECORD = Path(__file__).parents[1] / "data" / "adr029_monitoring_config.yaml"
ROOT = Path(__file__).parents[2]
RENAMED = (
    "hardware_monitoring.thresholds.vram_usage_critical -> "
    "hardware_monitoring.thresholds.vram_usage.critical",
    "hardware_monitoring.thresholds.temperature_warning -> "
    "hardware_monitoring.thresholds.temperature.warning",
    "hardware_monitoring.thresholds.power_critical -> "
    "hardware_monitoring.thresholds.power.critical",
    "model_switching.max_switch_time_seconds -> model_switching.switch_timeout_seconds",
    "model_switching.switch_failure_retries -> model_switching.max_retries",
    "performance_tracking.track_model_efficiency -> performance_tracking.track_tokens_per_s",
    "performance_tracking.track_task_routing_accuracy -> performance_tracking.track_routing",
    "hardware_monitoring.alerts.vram_overflow: immediate -> switch_immediately",
    "hardware_monitoring.alerts.power_limit: immediate -> switch_smaller",
    "model_switching.fallback_strategy: cascade",
)


def record_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "decision record's names" in r.getMessage()]


def edited_record(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """The record's file with some of its lines changed (each replacement must apply)."""
    text = RECORD.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "monitoring_config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_record_file_loads_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = load_monitoring_config(user_path=RECORD)
    hw = config.hardware_monitoring
    assert hw.interval_seconds == 5
    th = hw.thresholds
    assert (th.vram_usage.warning, th.vram_usage.critical) == (0.85, 0.95)
    assert (th.temperature.warning, th.temperature.critical) == (80, 87)
    assert (th.power.warning, th.power.critical) == (130, 140)
    assert th.temperature.hysteresis == 2  # what the record leaves out keeps our default
    assert hw.action_for("vram_overflow") is AlertAction.SWITCH_IMMEDIATELY
    assert hw.action_for("thermal_throttle") is AlertAction.GRADUAL
    assert hw.action_for("power_limit") is AlertAction.SWITCH_SMALLER
    ms = config.model_switching
    assert (ms.switch_timeout_seconds, ms.max_retries) == (90, 3)
    assert config.performance_tracking.track_tokens_per_s is True
    assert config.performance_tracking.track_routing is True
    [warning] = record_warnings(caplog)
    assert warning.startswith(f"vrampilot: warning: {RECORD}: ")
    for rename in RENAMED:
        assert rename in warning, rename


def test_record_names_carry_their_values(tmp_path: Path) -> None:
    """The record's values equal our defaults: changed ones prove each name is really read."""
    path = edited_record(
        tmp_path,
        ("vram_usage_warning: 0.85", "vram_usage_warning: 0.8"),
        ("temperature_critical: 87", "temperature_critical: 91"),
        ("power_warning: 130", "power_warning: 100"),
        ('power_limit: "immediate"', 'power_limit: "notify"'),
        ("max_switch_time_seconds: 90", "max_switch_time_seconds: 45"),
        ("switch_failure_retries: 3", "switch_failure_retries: 1"),
        ("track_model_efficiency: true", "track_model_efficiency: false"),
        ("track_task_routing_accuracy: true", "track_task_routing_accuracy: false"),
    )
    config = load_monitoring_config(user_path=path)
    th = config.hardware_monitoring.thresholds
    assert th.vram_usage.warning == 0.8
    assert th.temperature.critical == 91
    assert th.power.warning == 100
    assert config.hardware_monitoring.action_for("power_limit") is AlertAction.NOTIFY
    assert config.model_switching.switch_timeout_seconds == 45
    assert config.model_switching.max_retries == 1
    assert config.performance_tracking.track_tokens_per_s is False
    assert config.performance_tracking.track_routing is False


def test_our_names_give_no_warning(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.WARNING)
    ours = tmp_path / "ours.yaml"
    ours.write_text("hardware_monitoring:\n  thresholds:\n    temperature: {critical: 90}\n")
    assert load_monitoring_config(user_path=ours).hardware_monitoring.thresholds \
        .temperature.critical == 90
    assert record_warnings(caplog) == []


@pytest.mark.parametrize(("replacement", "key", "problem"), [
    (("    power_warning: 130", "    power_warning: 130\n    fan_critical: 90"),
     "hardware_monitoring.thresholds.fan_critical", "unknown key"),
    (("  track_switch_times: true", "  track_switch_times: true\n  track_happiness: true"),
     "performance_tracking.track_happiness", "unknown key"),
    (("temperature_critical: 87", "temperature_critical: hot"),
     "hardware_monitoring.thresholds.temperature_critical", "valid number"),
    (("switch_failure_retries: 3", "switch_failure_retries: -1"),
     "model_switching.switch_failure_retries", "greater than or equal to 0"),
    (('fallback_strategy: "cascade"', 'fallback_strategy: "random"'),
     "model_switching.fallback_strategy", "expected 'cascade'"),
    (("    power_warning: 130", "    power_warning: 130\n    power: {warning: 120}"),
     "hardware_monitoring.thresholds.power_warning", "given twice"),
    (('vram_overflow: "immediate"', 'vram_overflow: "eventually"'),
     "hardware_monitoring.alerts.vram_overflow", "switch_immediately"),
])
def test_errors_name_file_and_the_key_as_written(tmp_path: Path, replacement: tuple[str, str],
                                                 key: str, problem: str) -> None:
    path = edited_record(tmp_path, replacement)
    for load in (lambda: load_monitoring_config(user_path=path),
                 lambda: load_app_config(path, models_dir=tmp_path)):
        with pytest.raises(ConfigError) as info:
            load()
        assert info.value.path == str(path)
        assert info.value.key == key
        assert problem in info.value.problem


def test_app_config_keeps_the_one_warning(caplog: pytest.LogCaptureFixture,
                                          tmp_path: Path) -> None:
    caplog.set_level(logging.WARNING)
    config = load_app_config(RECORD, models_dir=tmp_path)
    assert config.monitoring.hardware_monitoring.interval_seconds == 5
    [warning] = config.warnings
    assert record_warnings(caplog) == [f"vrampilot: warning: {warning}"]
    assert "temperature_critical -> hardware_monitoring.thresholds.temperature.critical" in warning
    assert load_app_config(None, models_dir=tmp_path).warnings == ()


def test_unknown_top_level_key_is_still_an_error(tmp_path: Path) -> None:
    path = edited_record(tmp_path, ("performance_tracking:", "dashboards:\n  grafana: true\n"
                                                             "performance_tracking:"))
    with pytest.raises(ConfigError) as info:
        load_app_config(path, models_dir=tmp_path)
    assert (info.value.path, info.value.key) == (str(path), "dashboards")


def test_runtime_shows_the_warning_in_its_log(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The desktop app (vrampilot --config FILE) builds the same Runtime: its events show it."""
    from core.runtime import Runtime

    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    lines: list[tuple[str, str]] = []

    async def run() -> Runtime:
        rt = Runtime.create(config_file=RECORD, simulate="rtx4090-laptop",
                            history_path=tmp_path / "h.sqlite3")
        rt.add_event_listener(lambda level, text: lines.append((level, text)))
        rt.start()
        await rt.close()
        return rt

    rt = asyncio.run(run())
    assert rt.config.monitoring.hardware_monitoring.interval_seconds == 5
    assert [(level, text) for level, text in lines if "decision record" in text] == [
        ("warning", rt.config.warnings[0])]


def run_cli(*argv: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VRAMPILOT_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "gui.launcher", *argv], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_cli_status_and_route_with_the_record_file(tmp_path: Path) -> None:
    status = run_cli("status", "--config", str(RECORD), "--simulate", "rtx4090-laptop", "--json",
                     data_dir=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["gpus"][0]["simulated"] is True
    [line] = status.stderr.splitlines()
    assert line.startswith(f"vrampilot: warning: {RECORD}: read the decision record's names")
    for rename in RENAMED:
        assert rename in line, rename

    route = run_cli("route", "--config", str(RECORD), "--simulate", "rtx4090-laptop",
                    "--task-type", "salary_analysis", "--text", "x", data_dir=tmp_path)
    assert route.returncode == 0, route.stderr
    assert "Chosen model" in route.stdout
    assert len(route.stderr.splitlines()) == 1
    assert "read the decision record's names as ours" in route.stderr


def test_cli_unknown_key_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    path = edited_record(tmp_path, ("    power_warning: 130",
                                    "    power_warning: 130\n    fan_critical: 90"))
    result = run_cli("status", "--config", str(path), "--simulate", "rtx4090-laptop",
                     data_dir=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == (f"vrampilot: configuration error: {path}: "
                         "hardware_monitoring.thresholds.fan_critical: unknown key")
