"""resources/monitoring.yaml plus user overrides: defaults, deep merge, errors naming file, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config_loading import ConfigError
from core.telemetry.config import AlertAction, load_monitoring_config


def test_defaults_are_the_decision_records() -> None:
    config = load_monitoring_config()
    hw = config.hardware_monitoring
    assert hw.interval_seconds == 0.5
    assert hw.history_seconds == 3600
    assert hw.history_capacity == 7200
    th = hw.thresholds
    assert (th.vram_usage.warning, th.vram_usage.critical) == (0.85, 0.95)
    assert (th.temperature.warning, th.temperature.critical) == (80, 87)
    assert (th.power.warning, th.power.critical) == (130, 140)
    assert hw.action_for("vram_overflow") is AlertAction.SWITCH_IMMEDIATELY
    assert hw.action_for("thermal_throttle") is AlertAction.GRADUAL
    assert hw.action_for("power_limit") is AlertAction.SWITCH_SMALLER
    ms = config.model_switching
    assert (ms.switch_timeout_seconds, ms.max_retries, ms.vram_buffer_gb) == (90, 3, 1.0)
    assert (ms.max_temperature_c, ms.max_power_w) == (85, 120)
    assert ms.fallback_cascade[-1] == "remote"
    assert config.performance_tracking.track_switch_times


def test_user_mapping_overrides_only_what_it_names() -> None:
    config = load_monitoring_config({
        "hardware_monitoring": {"interval_seconds": 0.1,
                                "thresholds": {"temperature": {"warning": 75}}},
        "model_switching": {"max_retries": 1},
        "models": {"whatever": "belongs to another loader"},
        "router": [1, 2, 3],
    })
    hw = config.hardware_monitoring
    assert hw.interval_seconds == 0.1
    assert hw.history_capacity == 36000
    assert hw.thresholds.temperature.warning == 75
    assert hw.thresholds.temperature.critical == 87  # kept from the resource file
    assert hw.thresholds.power.warning == 130
    assert config.model_switching.max_retries == 1
    assert config.model_switching.switch_timeout_seconds == 90


def test_user_file_is_read_from_path(tmp_path: Path) -> None:
    path = tmp_path / "user.yaml"
    path.write_text("hardware_monitoring:\n  policy: advise\n")
    assert load_monitoring_config(user_path=path).hardware_monitoring.policy == "advise"


def test_warning_above_critical_names_user_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "user.yaml"
    path.write_text("hardware_monitoring:\n  thresholds:\n    temperature:\n      warning: 90\n")
    with pytest.raises(ConfigError) as info:
        load_monitoring_config(user_path=path)
    err = info.value
    assert err.path == str(path)
    assert err.key == "hardware_monitoring.thresholds.temperature"
    assert "warning (90) is above critical (87)" in err.problem


@pytest.mark.parametrize(
    ("user", "key", "problem"),
    [
        ({"hardware_monitoring": {"intervall_seconds": 1}},
         "hardware_monitoring.intervall_seconds", "unknown key"),
        ({"hardware_monitoring": {"interval_seconds": "fast"}},
         "hardware_monitoring.interval_seconds", "valid number"),
        ({"hardware_monitoring": {"interval_seconds": 0.05}},
         "hardware_monitoring.interval_seconds", "greater than or equal to 0.1"),
        ({"hardware_monitoring": {"thresholds": {"vram_usage": {"critical": 1.5}}}},
         "hardware_monitoring.thresholds.vram_usage.critical", "less than or equal to 1"),
        ({"hardware_monitoring": {"alerts": {"vram_overflow": "panic"}}},
         "hardware_monitoring.alerts.vram_overflow", "switch_immediately"),
        ({"hardware_monitoring": {"alerts": {"meteor_strike": "notify"}}},
         "hardware_monitoring.alerts.meteor_strike", "vram_overflow"),
        ({"model_switching": {"max_retries": -1}},
         "model_switching.max_retries", "greater than or equal to 0"),
        ({"performance_tracking": {"track_routing": "sometimes"}},
         "performance_tracking.track_routing", "valid boolean"),
        ({"model_switching": 3}, "model_switching", "expected a mapping"),
    ],
)
def test_bad_user_values_name_the_user_file(user: dict, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_monitoring_config(user, user_path=Path("/home/me/vrampilot.yaml"))
    assert info.value.path == "/home/me/vrampilot.yaml"
    assert info.value.key == key
    assert problem in info.value.problem


def test_bad_resource_value_names_the_resource_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import core.telemetry.config as config_module

    broken = tmp_path / "monitoring.yaml"
    text = config_module.default_path().read_text().replace("critical: 87", "critical: 70")
    broken.write_text(text)
    monkeypatch.setattr(config_module, "default_path", lambda: broken)
    with pytest.raises(ConfigError) as info:
        load_monitoring_config({"model_switching": {"max_retries": 2}}, user_path="user.yaml")
    assert info.value.path == str(broken)
    assert info.value.key == "hardware_monitoring.thresholds.temperature"
    # The user can also fix it from their own file: then the user file is blamed for nothing.
    config = load_monitoring_config(
        {"hardware_monitoring": {"thresholds": {"temperature": {"critical": 87}}}})
    assert config.hardware_monitoring.thresholds.temperature.critical == 87


def test_unreadable_user_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_monitoring_config(user_path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hardware_monitoring: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_monitoring_config(user_path=bad)


def test_config_is_frozen() -> None:
    config = load_monitoring_config()
    with pytest.raises(ValueError, match="frozen"):
        config.hardware_monitoring.interval_seconds = 1.0  # type: ignore[misc]
