"""plan_switch, the pure verdict of a switch, read in full: every check's name, verdict and
numbers as the GUI and the history show them; remote and no-op plans; the fallback order."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.manager.plan import (
    Check,
    DeviceReading,
    FitEstimate,
    SafetyLimits,
    SwitchPlan,
    effective_cascade,
    next_models,
    plan_switch,
)
from core.models.catalog import Catalog, load_catalog
from tests.core.manager_fakes import FixedFit

GIB = 1024**3
LIMITS = SafetyLimits(GIB, 85.0, 120.0)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog(models_dir=tmp_path)


def test_a_passing_plan_in_full(catalog: Catalog) -> None:
    estimate = FixedFit(5 * GIB, detail="fits")
    plan = plan_switch(catalog.get("qwen3-8b"), active_model="qwen3-4b-instruct-2507",
                       active_loaded_bytes=4 * GIB,
                       reading=DeviceReading(6 * GIB, 16 * GIB, 60.4, 80.6), limits=LIMITS,
                       estimate=estimate, on_disk=True, predicted_s=12.5)
    assert plan == SwitchPlan("qwen3-8b", "qwen3-4b-instruct-2507", False, (
        Check("on_disk", True, "model files present"),
        Check("memory", True, "10.00 GiB free after unloading - 1.00 GiB buffer = 9.00 GiB "
                              "usable, needs 5.00 GiB (fits)"),
        Check("temperature", True, "60 °C, limit 85 °C"),
        Check("power", True, "81 W, limit 120 W"),
    ), FitEstimate(True, 5 * GIB, 4096, 0.5, "fits"), 12.5)
    assert plan.ok
    assert plan.refusal is None
    # The estimator is asked about the memory free once the active model is gone.
    assert estimate.seen == [(10 * GIB, 16 * GIB, GIB)]


def test_a_refused_plan_names_every_failed_check(catalog: Catalog) -> None:
    plan = plan_switch(catalog.get("qwen3-8b"), active_model=None, active_loaded_bytes=0,
                       reading=DeviceReading(3 * GIB, 16 * GIB, 90.0, 130.0), limits=LIMITS,
                       estimate=FixedFit(5 * GIB), on_disk=False)
    assert not plan.ok
    assert plan.refusal == (
        "on_disk: qwen3-8b is not on disk; "
        "memory: 3.00 GiB free after unloading - 1.00 GiB buffer = 2.00 GiB usable, needs "
        "5.00 GiB; temperature: 90 °C, limit 85 °C; power: 130 W, limit 120 W")


def test_the_estimator_saying_no_refuses_even_with_memory_free(catalog: Catalog) -> None:
    plan = plan_switch(catalog.get("qwen3-8b"), active_model=None, active_loaded_bytes=0,
                       reading=DeviceReading(15 * GIB, 16 * GIB), limits=LIMITS,
                       estimate=FixedFit(GIB, fits=False, detail="no context fits"),
                       on_disk=True)
    assert [c.name for c in plan.checks if not c.passed] == ["memory"]
    assert "(no context fits)" in (plan.refusal or "")


def test_without_a_memory_reading_the_estimate_decides(catalog: Catalog) -> None:
    for fits, detail in ((True, "default context"), (False, "")):
        estimate = FixedFit(5 * GIB, fits=fits, detail=detail)
        plan = plan_switch(catalog.get("qwen3-8b"), active_model=None, active_loaded_bytes=0,
                           reading=DeviceReading(None, None), limits=LIMITS,
                           estimate=estimate, on_disk=True)
        memory = next(c for c in plan.checks if c.name == "memory")
        assert memory == Check("memory", fits, "free memory not reported; estimate only"
                               + (f" ({detail})" if detail else ""))
        assert estimate.seen == [(None, None, GIB)]


def test_memory_exactly_one_byte_short_with_nothing_loaded(catalog: Catalog) -> None:
    need = 5 * GIB

    def verdict(free: int) -> bool:
        return plan_switch(catalog.get("qwen3-8b"), active_model=None, active_loaded_bytes=0,
                           reading=DeviceReading(free, 16 * GIB), limits=LIMITS,
                           estimate=FixedFit(need), on_disk=True).ok

    assert verdict(need + GIB)
    assert not verdict(need + GIB - 1)


def test_switching_to_the_active_model_is_a_noop_plan(catalog: Catalog) -> None:
    plan = plan_switch(catalog.get("qwen3-8b"), active_model="qwen3-8b", active_loaded_bytes=GIB,
                       reading=DeviceReading(0, 16 * GIB, 99.0, 999.0), limits=LIMITS,
                       estimate=FixedFit(5 * GIB), on_disk=False)
    assert plan == SwitchPlan("qwen3-8b", "qwen3-8b", True, (), None, 0.0)
    assert plan.ok


def test_remote_plans(catalog: Catalog) -> None:
    remote = catalog.get("remote").model_copy(update={"enabled": True,
                                                      "base_url": "http://h:8000/v1"})
    reading = DeviceReading(0, 16 * GIB, 99.0, 999.0)  # the local device does not matter
    ok = plan_switch(remote, active_model="qwen3-8b", active_loaded_bytes=GIB, reading=reading,
                     limits=LIMITS, estimate=FixedFit(0), on_disk=False,
                     remote_configured=True, predicted_s=3.0)
    assert ok == SwitchPlan("remote", "qwen3-8b", False,
                            (Check("remote", True, "remote endpoint configured"),), None, 3.0)
    # Not said to be configured: refused (the safe default).
    unsaid = plan_switch(remote, active_model=None, active_loaded_bytes=0, reading=reading,
                         limits=LIMITS, estimate=FixedFit(0), on_disk=False)
    assert unsaid.refusal == "remote: no remote endpoint is configured"
    private = plan_switch(remote, active_model=None, active_loaded_bytes=0, reading=reading,
                          limits=LIMITS, estimate=FixedFit(0), on_disk=False,
                          private=True, remote_configured=False)
    assert private.checks == (
        Check("private", False, "the task is private: it is never sent to a remote endpoint"),
        Check("remote", False, "no remote endpoint is configured"))
    disabled = plan_switch(remote.model_copy(update={"enabled": False}), active_model=None,
                           active_loaded_bytes=0, reading=reading, limits=LIMITS,
                           estimate=FixedFit(0), on_disk=False,
                           remote_configured=True)
    assert disabled.checks[0] == Check("enabled", False, "remote is disabled in the catalog")


def test_limits_come_from_the_settings() -> None:
    from core.telemetry.config import ModelSwitching

    limits = SafetyLimits.from_settings(ModelSwitching(vram_buffer_gb=1.5, max_temperature_c=80,
                                                       max_power_w=100))
    assert limits == SafetyLimits(int(1.5 * GIB), 80.0, 100.0)


def test_fallback_order_with_unknown_needs() -> None:
    cascade = ("30b", "14b", "8b", "demo-a")
    # Unknown need of the failed model: no peers before it are tried.
    assert next_models("8b", cascade, lambda m: None) == ["demo-a"]
    # A peer of exactly the same need is tried; a bigger one is not; nearest first.
    need = {"30b": 5, "14b": 5, "8b": 5, "demo-a": 1}
    assert next_models("8b", cascade, need.get) == ["demo-a", "14b", "30b"]
    need["30b"] = 6
    assert next_models("8b", cascade, need.get) == ["demo-a", "14b"]


def test_effective_cascade_without_remote() -> None:
    assert effective_cascade(("14b", "4b"), ("demo-a", "4b")) == ("14b", "4b", "demo-a")
    assert effective_cascade(("remote", "14b"), ("demo-a",)) == ("14b", "demo-a", "remote")
    assert effective_cascade(("14b", "api"), ("demo-a",), remote_id="api") == (
        "14b", "demo-a", "api")


def test_a_crash_loop_refusal_is_its_own_check(catalog: Catalog) -> None:
    plan = plan_switch(catalog.get("qwen3-8b"), active_model=None, active_loaded_bytes=0,
                       reading=DeviceReading(15 * GIB, 16 * GIB, 50.0, 50.0), limits=LIMITS,
                       estimate=FixedFit(5 * GIB), on_disk=True,
                       crash_loop="3 deaths in 10 minutes")
    assert [(c.name, c.detail) for c in plan.checks if not c.passed] == [
        ("crash_loop", "3 deaths in 10 minutes")]


def test_forcing_marks_only_the_gate_checks_it_skipped(catalog: Catalog) -> None:
    plan = plan_switch(catalog.get("qwen3-8b"), active_model=None, active_loaded_bytes=0,
                       reading=DeviceReading(15 * GIB, 16 * GIB, 90.0, 50.0), limits=LIMITS,
                       estimate=FixedFit(5 * GIB), on_disk=True,
                       force=True)
    gate = {c.name: (c.passed, c.detail) for c in plan.checks if c.name in ("temperature",
                                                                              "power")}
    assert gate == {"temperature": (True, "90 °C, limit 85 °C (gate skipped: forced)"),
                    "power": (True, "50 W, limit 120 W")}  # it passed: nothing was skipped
