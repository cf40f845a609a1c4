"""The simulated RTX 4090 Laptop: profile, thermal model against its closed form, activity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.telemetry.activity import EngineActivity
from core.telemetry.simulated_device import (
    GIB,
    DeviceProfile,
    SimulatedGpu,
    ThermalModel,
    UnknownProfileError,
    known_profiles,
    load_profile,
)


class DrivenClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def profile() -> DeviceProfile:
    return load_profile("rtx4090-laptop")


def test_profile_has_the_vendor_figures(profile: DeviceProfile) -> None:
    assert profile.vram_total_bytes == 16 * GIB
    assert (profile.tgp_min_w, profile.tgp_max_w, profile.dynamic_boost_w) == (80, 150, 25)
    assert profile.max_power_w == 175
    assert profile.throttle_temperature_c == 87
    assert 40 <= profile.thermal.steady_state(profile.idle_power_w) <= 45
    assert 10 <= profile.thermal_time_constant_s <= 100


def test_unknown_profile_lists_known_ones() -> None:
    expected = r"unknown profile 'gtx480'; known: .*rtx4090-laptop"
    with pytest.raises(UnknownProfileError, match=expected):
        load_profile("gtx480")
    assert "rtx4090-laptop" in known_profiles()


def test_profile_name_cannot_escape_the_profiles_dir() -> None:
    with pytest.raises(UnknownProfileError):
        load_profile("../monitoring")


def test_always_labelled_simulated(profile: DeviceProfile) -> None:
    gpu = SimulatedGpu(profile, EngineActivity(), clock=DrivenClock())
    snap = gpu.sample()
    assert snap.simulated
    assert snap.name.endswith("(simulated)")


def test_idle_at_desktop_baseline(profile: DeviceProfile) -> None:
    gpu = SimulatedGpu(profile, EngineActivity(), clock=DrivenClock())
    snap = gpu.sample()
    assert 40 <= snap.temperature_c <= 45
    assert snap.vram_used_bytes == int(profile.baseline_vram_used_mib * 1024**2)
    assert snap.vram_free_bytes == snap.vram_total_bytes - snap.vram_used_bytes
    assert snap.clock_events == ("Idle",)
    assert snap.power_w is not None
    assert abs(snap.power_w - profile.idle_power_w) < 5 * profile.power_noise_w


def test_temperature_follows_closed_form_under_constant_load(profile: DeviceProfile) -> None:
    clock = DrivenClock()
    activity = EngineActivity()
    gpu = SimulatedGpu(profile, activity, clock=clock)
    t0 = gpu.sample().temperature_c
    assert t0 is not None
    activity.set_loaded("qwen3-8b", 6 * GIB)
    activity.stream_started()
    gpu.sample()  # the generating power is held from here on
    p = profile.generating_power_w
    t_ss = profile.ambient_c + profile.thermal_resistance_c_per_w * p
    tau = profile.thermal_time_constant_s
    for step in range(1, 601):  # 5 minutes at 2 Hz, driven faster than real time
        clock.now = step * 0.5
        snap = gpu.sample()
        expected = t_ss + (t0 - t_ss) * math.exp(-clock.now / tau)
        assert snap.temperature_c == pytest.approx(expected, abs=1e-9)
    # After ten time constants it has settled on the steady state.
    assert snap.temperature_c == pytest.approx(t_ss, abs=0.01)
    assert snap.vram_used_bytes == int(profile.baseline_vram_used_mib * 1024**2) + 6 * GIB
    assert snap.gpu_util_percent is not None
    assert snap.gpu_util_percent > 90


def test_closed_form_is_independent_of_the_sampling_rate() -> None:
    model = ThermalModel(ambient_c=30, resistance_c_per_w=0.4, time_constant_s=20)
    coarse = model.step(40, 100, 10.0)
    fine = 40.0
    for _ in range(1000):
        fine = model.step(fine, 100, 0.01)
    assert fine == pytest.approx(coarse, abs=1e-9)
    assert model.power_for(model.steady_state(123.0)) == pytest.approx(123.0)


def test_cools_back_towards_idle_when_streams_end(profile: DeviceProfile) -> None:
    clock = DrivenClock()
    activity = EngineActivity()
    gpu = SimulatedGpu(profile, activity, clock=clock)
    activity.stream_started()
    gpu.sample()
    clock.now = 120.0
    hot = gpu.sample().temperature_c
    activity.stream_ended()
    gpu.sample()
    clock.now = 120.0 + 10 * profile.thermal_time_constant_s
    cool = gpu.sample()
    assert hot is not None
    assert cool.temperature_c is not None
    assert cool.temperature_c < hot
    assert cool.temperature_c == pytest.approx(profile.thermal.steady_state(profile.idle_power_w),
                                               abs=0.05)


def test_loading_draws_medium_power(profile: DeviceProfile) -> None:
    activity = EngineActivity()
    gpu = SimulatedGpu(profile, activity, clock=DrivenClock(), seed=3)
    idle = gpu.sample().power_w
    activity.set_loading(True, "qwen3-14b")
    loading = gpu.sample().power_w
    activity.set_loading(False)
    activity.stream_started()
    generating = gpu.sample().power_w
    assert idle is not None
    assert loading is not None
    assert generating is not None
    assert idle < loading < generating


def test_throttles_at_the_limit_and_holds_there(profile: DeviceProfile) -> None:
    clock = DrivenClock()
    activity = EngineActivity()
    gpu = SimulatedGpu(profile, activity, clock=clock)
    for _ in range(8):  # enough streams to ask for the full 175 W: steady state above 87 C
        activity.stream_started()
    events: set[str] = set()
    temps = []
    for step in range(1, 2401):
        clock.now = step * 0.5
        snap = gpu.sample()
        events.update(snap.clock_events or ())
        temps.append(snap.temperature_c)
    assert "SwThermal" in events
    assert "SwPowerCap" in events
    assert max(temps) <= profile.throttle_temperature_c + 1e-9
    assert temps[-1] == pytest.approx(profile.throttle_temperature_c, abs=0.6)
    assert snap.power_w is not None
    assert snap.power_w < profile.max_power_w


def test_vram_capped_at_total(profile: DeviceProfile) -> None:
    activity = EngineActivity()
    activity.set_loaded("too-big", 40 * GIB)
    snap = SimulatedGpu(profile, activity, clock=DrivenClock()).sample()
    assert snap.vram_used_bytes == snap.vram_total_bytes
    assert snap.vram_free_bytes == 0


def test_deterministic_for_a_seed_and_clock(profile: DeviceProfile) -> None:
    def run(seed: int) -> list[tuple[float | None, float | None]]:
        clock = DrivenClock()
        activity = EngineActivity()
        gpu = SimulatedGpu(profile, activity, clock=clock, seed=seed)
        out = []
        for step in range(50):
            clock.now = step * 0.1
            if step == 10:
                activity.stream_started()
            snap = gpu.sample()
            out.append((snap.power_w, snap.temperature_c))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_profile_file_of_ones_own_is_read_and_checked(tmp_path: Path) -> None:
    from core.config_loading import ConfigError

    data = Path(__file__).resolve().parent.parent / "data" / "soak_fast_thermal.yaml"
    fast = load_profile(str(data))
    assert (fast.thermal_time_constant_s, fast.throttle_temperature_c) == (3, 66)
    assert fast.vram_total_gib == load_profile("rtx4090-laptop").vram_total_gib
    with pytest.raises(ConfigError, match="cannot read file"):
        load_profile(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(data.read_text().replace("ambient_c: 37", "ambient_c: 70"))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*throttle_temperature_c must be above"):
        load_profile(str(bad))


def test_heating_under_load_raises_thermal_slowdown_and_lowers_the_sm_clock() -> None:
    """The simulator's own dynamics: streams draw power, power heats the card, and at the
    throttle point the reason appears and the SM clock falls below its maximum."""
    profile = load_profile(str(Path(__file__).parents[1] / "data" / "soak_fast_thermal.yaml"))
    clock = DrivenClock()
    activity = EngineActivity()
    gpu = SimulatedGpu(profile, activity, clock=clock)
    cool = gpu.sample()
    assert "SwThermal" not in (cool.clock_events or ())
    for _ in range(4):
        activity.stream_started()
    first_hot = None
    for step in range(1, 200):
        clock.now = step * 0.1
        snap = gpu.sample()
        if "SwThermal" in (snap.clock_events or ()):
            first_hot = snap
            break
    assert first_hot is not None, "never throttled"
    assert first_hot.temperature_c is not None
    assert first_hot.temperature_c >= profile.throttle_temperature_c - 0.5
    clock.now += 0.1
    held = gpu.sample()
    assert held.sm_clock_mhz is not None
    assert held.sm_clock_max_mhz == profile.clocks.sm_max
    assert held.sm_clock_mhz < held.sm_clock_max_mhz
    for _ in range(4):
        activity.stream_ended()
    clock.now += 30.0
    gpu.sample()
    clock.now += 0.1
    assert "SwThermal" not in (gpu.sample().clock_events or ())


def test_what_the_manager_loaded_is_held_by_our_process(profile: DeviceProfile) -> None:
    import os

    activity = EngineActivity()
    gpu = SimulatedGpu(profile, activity, clock=DrivenClock())
    assert gpu.sample().processes == ()
    activity.set_loaded("demo-tiny-a", 3 * 1024**3)
    for _ in range(SimulatedGpu.PROCESS_POLL_EVERY):
        snap = gpu.sample()
    (proc,) = snap.processes or ()
    assert (proc.pid, proc.used_bytes, proc.ours) == (os.getpid(), 3 * 1024**3, True)
