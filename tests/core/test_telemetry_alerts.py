"""Alert evaluation with a driven clock: minimum duration, hysteresis, escalation, throttling."""

from __future__ import annotations

import pytest

from core.telemetry.alerts import AlertEvaluator, AlertEvent
from core.telemetry.config import HardwareMonitoring, load_monitoring_config
from core.telemetry.snapshot import GpuSnapshot, HostSnapshot, Sample

GIB = 1024**3


def monitoring(**thresholds: dict) -> HardwareMonitoring:
    return load_monitoring_config(
        {"hardware_monitoring": {"thresholds": thresholds}}).hardware_monitoring


def sample(t: float, *, temp: float | None = 50.0, power: float | None = 50.0,
           used_fraction: float = 0.3, events: tuple[str, ...] | None = ("Idle",),
           lost: bool = False, index: int = 0) -> Sample:
    total = 16 * GIB
    host = HostSnapshot(t, 100, 10, 90, 0, 0, 1.0)
    used = int(total * used_fraction)
    gpu = GpuSnapshot(
        timestamp=t, index=index, name="g", simulated=True, vram_total_bytes=total,
        vram_used_bytes=used, vram_free_bytes=total - used,
        temperature_c=temp, power_w=power, clock_events=events, lost=lost)
    return Sample(host, (gpu,))


def run(evaluator: AlertEvaluator, readings: list[tuple[float, float]], **kw: object
        ) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    for t, temp in readings:
        events.extend(evaluator.evaluate(sample(t, temp=temp, **kw)))  # type: ignore[arg-type]
    return events


TEMP = {"temperature": {"warning": 80, "critical": 87, "hysteresis": 2,
                        "min_duration_seconds": 5}}


def test_warning_only_after_min_duration_continuously() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    # Exceeds at t=0..4 (4 s), dips at t=5, exceeds again from t=6: raised at t=11.
    readings = [(float(t), 81.0) for t in range(5)] + [(5.0, 79.0)] + [
        (float(t), 81.0) for t in range(6, 13)]
    events = run(ev, readings)
    assert [(e.change, e.level, e.at) for e in events] == [("started", "warning", 11.0)]
    (e,) = events
    assert e.kind == "temperature"
    assert e.metric == "gpu0.temperature_c"
    assert e.started_at == 6.0  # when the value crossed the line, not when the duration ran out
    assert e.threshold == 80
    assert e.value == 81.0
    assert e.ended_at is None


def test_hovering_at_the_threshold_does_not_flap() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    run(ev, [(float(t), 82.0) for t in range(6)])  # raised at t=5
    assert [a.level for a in ev.active()] == ["warning"]
    # Hovers around 80 (between 78 and 80.5): stays raised, no events at all.
    hover = [(6.0 + i, 79.0 if i % 2 else 80.5) for i in range(40)]
    assert run(ev, hover) == []
    # Falls below 80 - 2: ends, once.
    events = run(ev, [(50.0, 77.9), (51.0, 77.0)])
    assert [(e.change, e.level, e.ended_at) for e in events] == [("ended", "warning", 50.0)]
    assert ev.active() == []


def test_escalates_and_deescalates_with_hysteresis() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    events = run(ev, [(float(t), 88.0) for t in range(6)])
    # Both lines exceeded for 5 s at once: one "started" event at the higher level.
    assert [(e.change, e.level, e.threshold) for e in events] == [("started", "critical", 87)]
    assert run(ev, [(6.0, 85.5)]) == []  # above 87 - 2: still critical
    events = run(ev, [(7.0, 84.0)])
    assert [(e.change, e.level) for e in events] == [("deescalated", "warning")]
    assert events[0].started_at == 0.0  # same episode
    events = run(ev, [(8.0, 90.0), (13.0, 90.0)])
    assert [(e.change, e.level, e.at) for e in events] == [("escalated", "critical", 13.0)]
    events = run(ev, [(14.0, 60.0)])
    assert [(e.change, e.level, e.ended_at) for e in events] == [("ended", "critical", 14.0)]


def test_zero_min_duration_raises_at_once() -> None:
    ev = AlertEvaluator(monitoring(vram_usage={"warning": 0.85, "critical": 0.95,
                                               "hysteresis": 0.02, "min_duration_seconds": 0}))
    events = ev.evaluate(sample(0.0, used_fraction=0.96))
    assert [(e.kind, e.metric, e.level) for e in events] == [
        ("vram_overflow", "gpu0.vram_usage", "critical")]
    assert events[0].value == pytest.approx(0.96, abs=1e-6)


def test_power_alert_kind() -> None:
    ev = AlertEvaluator(monitoring(power={"warning": 130, "critical": 140, "hysteresis": 5,
                                          "min_duration_seconds": 1}))
    events: list[AlertEvent] = []
    for t in range(3):
        events += ev.evaluate(sample(float(t), power=135.0))
    assert [(e.kind, e.level, e.at) for e in events] == [("power_limit", "warning", 1.0)]


def test_unsupported_metric_raises_nothing_and_keeps_state() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    raised = run(ev, [(float(t), 90.0) for t in range(6)])  # critical after the 5 s minimum
    assert [(e.kind, e.level, e.change) for e in raised] == [("temperature", "critical",
                                                             "started")]
    events: list[AlertEvent] = []
    for t in range(6, 26):  # the metric stops being reported: nothing changes, nothing ends
        events += ev.evaluate(sample(float(t), temp=None, power=None, events=None))
    assert events == []
    [kept] = ev.active()
    assert (kept.kind, kept.level, kept.value, kept.started_at) == ("temperature", "critical",
                                                                    90.0, 0.0)
    # Reported again, below the hysteresis line: the kept alert ends (it was not forgotten).
    ended = ev.evaluate(sample(26.0, temp=50.0))
    assert [(e.kind, e.change, e.ended_at) for e in ended] == [("temperature", "ended", 26.0)]
    assert ev.active() == []


@pytest.mark.parametrize("reason", ["HwThermal", "SwThermal", "HwSlowdown", "HwPowerBrake"])
def test_thermal_throttle_reasons_raise_their_own_alert(reason: str) -> None:
    ev = AlertEvaluator(load_monitoring_config().hardware_monitoring)  # 2 s minimum
    events: list[AlertEvent] = []
    for t in (0.0, 1.0, 2.0):
        events += ev.evaluate(sample(t, events=("SwPowerCap", reason)))
    assert [(e.kind, e.level, e.at, e.started_at) for e in events] == [
        ("thermal_throttle", "warning", 2.0, 0.0)]
    events = ev.evaluate(sample(3.0, events=("SwPowerCap",)))
    assert [(e.kind, e.change) for e in events] == [("thermal_throttle", "ended")]


def test_sw_power_cap_alone_raises_nothing() -> None:
    ev = AlertEvaluator(load_monitoring_config().hardware_monitoring)
    events: list[AlertEvent] = []
    for t in range(100):
        events += ev.evaluate(sample(float(t), events=("SwPowerCap",)))
    assert events == []


def test_lost_gpu_ends_its_alerts_and_raises_gpu_lost() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    run(ev, [(float(t), 90.0) for t in range(6)])
    assert [a.kind for a in ev.active()] == ["temperature"]
    events = ev.evaluate(sample(7.0, temp=None, power=None, events=None, lost=True))
    assert [(e.kind, e.change, e.level) for e in events] == [
        ("temperature", "ended", "critical"), ("gpu_lost", "started", "critical")]
    assert ev.evaluate(sample(8.0, temp=None, lost=True)) == []  # reported once
    assert [a.kind for a in ev.active()] == ["gpu_lost"]


def test_gpus_are_tracked_separately() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    events: list[AlertEvent] = []
    for t in range(6):
        events += ev.evaluate(sample(float(t), temp=90.0, index=0))
        events += ev.evaluate(sample(float(t), temp=50.0, index=1))
    assert [e.metric for e in events] == ["gpu0.temperature_c"]


def test_from_critical_to_just_under_the_warning_line_is_a_warning_still() -> None:
    """Below 80 but above 80 - 2: the warning is held by its hysteresis (not ended), and ends
    only under 78."""
    ev = AlertEvaluator(monitoring(**TEMP))
    run(ev, [(float(t), 88.0) for t in range(6)])  # critical
    events = run(ev, [(6.0, 79.0)])
    assert [(e.change, e.level, e.threshold) for e in events] == [
        ("deescalated", "warning", 80)]
    events = run(ev, [(7.0, 77.9)])
    assert [(e.change, e.level) for e in events] == [("ended", "warning")]


def test_power_throttle_and_loss_alerts_name_their_metric_and_threshold() -> None:
    ev = AlertEvaluator(monitoring(power={"warning": 130, "critical": 140, "hysteresis": 5,
                                          "min_duration_seconds": 0}))
    power = ev.evaluate(sample(0.0, power=135.0))
    assert [(e.kind, e.metric, e.level, e.value, e.threshold) for e in power] == [
        ("power_limit", "gpu0.power_w", "warning", 135.0, 130)]
    throttled: list[AlertEvent] = []
    for t in (1.0, 2.0, 3.0):
        throttled += ev.evaluate(sample(t, power=135.0, events=("HwThermal",)))
    assert [(e.kind, e.metric, e.value, e.threshold, e.started_at) for e in throttled] == [
        ("thermal_throttle", "gpu0.thermal_throttle", 1.0, 1.0, 1.0)]
    lost = ev.evaluate(sample(4.0, temp=None, power=None, events=None, lost=True))
    assert [(e.kind, e.metric, e.change, e.value, e.threshold, e.started_at) for e in lost
            if e.kind == "gpu_lost"] == [("gpu_lost", "gpu0.lost", "started", 1.0, 1.0, 4.0)]
    # Reported again (a simulated device, a driver that recovered): the loss ends at once.
    back = ev.evaluate(sample(5.0))
    assert [(e.kind, e.change, e.ended_at) for e in back] == [("gpu_lost", "ended", 5.0)]


def test_new_thresholds_apply_at_once_and_a_raised_alert_still_ends() -> None:
    ev = AlertEvaluator(monitoring(**TEMP))
    run(ev, [(float(t), 82.0) for t in range(6)])  # warning (80) raised at t=5
    ev.reconfigure(monitoring(temperature={"warning": 90, "critical": 95, "hysteresis": 1,
                                           "min_duration_seconds": 2}))
    # 82 is now far under 90 - 1: the raised warning ends with an event (not forgotten).
    events = run(ev, [(6.0, 82.0)])
    assert [(e.kind, e.change, e.level, e.threshold) for e in events] == [
        ("temperature", "ended", "warning", 90)]
    # The new minimum duration (2 s) and threshold, for this GPU and one seen from now on.
    events = run(ev, [(7.0, 91.0), (8.0, 91.0), (9.0, 91.0)])
    assert [(e.change, e.level, e.at, e.started_at) for e in events] == [
        ("started", "warning", 9.0, 7.0)]
    assert run(ev, [(10.0, 89.5)]) == []  # within the new hysteresis (1): held
    events = run(ev, [(11.0, 88.5)])  # under it (the old one, 2, would have held it)
    assert [(e.change, e.level) for e in events] == [("ended", "warning")]
    fresh = run(ev, [(0.0, 91.0), (2.0, 91.0)], index=1)
    assert [(e.metric, e.level, e.threshold) for e in fresh] == [
        ("gpu1.temperature_c", "warning", 90)]
