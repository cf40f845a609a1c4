"""Host sampling: psutil for real, RAPL package power from an energy counter, CPU temperature."""

from __future__ import annotations

import collections
import types
from pathlib import Path

import psutil
import pytest

from core.telemetry.host import HostSampler, RaplPackagePower, cpu_temperature


class DrivenClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_real_host_snapshot_is_sane() -> None:
    snap = HostSampler().sample()
    assert snap.ram_total_bytes == psutil.virtual_memory().total
    assert 0 < snap.ram_used_bytes <= snap.ram_total_bytes
    assert snap.ram_used_bytes + snap.ram_available_bytes == snap.ram_total_bytes
    assert 0.0 <= snap.cpu_percent <= 100.0
    assert 0 <= snap.swap_used_bytes <= max(snap.swap_total_bytes, snap.swap_used_bytes)
    assert 0.0 < snap.ram_used_fraction <= 1.0


def rapl_dir(tmp_path: Path, energy: int, wrap: int = 262_143_328_850) -> Path:
    (tmp_path / "energy_uj").write_text(f"{energy}\n")
    (tmp_path / "max_energy_range_uj").write_text(f"{wrap}\n")
    return tmp_path


def test_rapl_power_is_energy_delta_over_time(tmp_path: Path) -> None:
    clock = DrivenClock()
    d = rapl_dir(tmp_path, 1_000_000)
    rapl = RaplPackagePower(d, clock=clock)
    assert rapl.available
    clock.now = 2.0
    (d / "energy_uj").write_text("31000000\n")  # 30 J in 2 s
    assert rapl.watts() == pytest.approx(15.0)
    clock.now = 2.0
    assert rapl.watts() is None  # no time passed: no figure


def test_rapl_counter_wrap(tmp_path: Path) -> None:
    clock = DrivenClock()
    d = rapl_dir(tmp_path, 999_000_000, wrap=1_000_000_000)
    rapl = RaplPackagePower(d, clock=clock)
    clock.now = 1.0
    (d / "energy_uj").write_text("9000000\n")  # wrapped: 1 J + 9 J
    assert rapl.watts() == pytest.approx(10.0)


def test_rapl_unreadable_is_none(tmp_path: Path) -> None:
    rapl = RaplPackagePower(tmp_path / "absent")
    assert not rapl.available
    assert rapl.watts() is None
    host = HostSampler(rapl=rapl).sample()
    assert host.package_power_w is None


def test_cpu_temperature_prefers_the_package_sensor() -> None:
    # psutil's own record shape (label, current, high, critical)
    shwtemp = collections.namedtuple("shwtemp", "label current high critical")
    sensors = {
        "nvme": [shwtemp("Composite", 35.0, 80.0, 85.0)],
        "coretemp": [shwtemp("Core 0", 50.0, 100.0, 100.0),
                     shwtemp("Package id 0", 57.0, 100.0, 100.0)],
    }
    ps = types.SimpleNamespace(sensors_temperatures=lambda: sensors)
    assert cpu_temperature(ps) == 57.0
    ps = types.SimpleNamespace(sensors_temperatures=lambda: {"nvme": sensors["nvme"]})
    assert cpu_temperature(ps) is None  # a disk is not the CPU
    assert cpu_temperature(types.SimpleNamespace()) is None  # platform without sensors
