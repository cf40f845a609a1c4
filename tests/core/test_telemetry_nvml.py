"""The NVML seam against a fake pynvml reproducing documented driver behaviour."""

from __future__ import annotations

import itertools

import pynvml
import pytest

from core.telemetry.nvml_device import NvmlDevices, decode_clock_events
from tests.core.fake_pynvml import GIB, FakeBoard, FakeNvml


def open_fake(fake: FakeNvml, **kwargs: object) -> NvmlDevices:
    ticks = itertools.count(1000.0)
    devices = NvmlDevices.open(fake, clock=lambda: next(ticks), **kwargs)  # type: ignore[arg-type]
    assert devices is not None
    return devices


def test_reads_every_metric_into_a_snapshot() -> None:
    board = FakeBoard(used_bytes=3 * GIB, temperature_c=61, clock_events=0x4 | 0x40,
                      compute_procs=[(4242, 2 * GIB)], graphics_procs=[(4242, GIB), (77, None)])
    fake = FakeNvml([board])
    (gpu,) = open_fake(fake).devices

    snap = gpu.sample()

    assert snap.name == "NVIDIA GeForce RTX 4090 Laptop GPU"
    assert not snap.simulated
    assert (snap.vram_total_bytes, snap.vram_used_bytes, snap.vram_free_bytes) == (
        16 * GIB, 3 * GIB, 13 * GIB)
    assert snap.temperature_c == 61.0
    assert snap.throttle_temperature_c == 87.0
    assert snap.power_w == pytest.approx(32.0)  # the instantaneous field, not the 1 s average
    assert snap.power_limit_w == pytest.approx(175.0)
    assert (snap.gpu_util_percent, snap.mem_util_percent) == (10.0, 5.0)
    assert (snap.sm_clock_mhz, snap.mem_clock_mhz) == (1500, 8001)
    assert snap.clock_events == ("SwPowerCap", "HwThermal")
    assert snap.fan_percent == 40.0
    assert (snap.pcie_gen, snap.pcie_width) == (4, 16)
    assert snap.processes is not None
    by_pid = {p.pid: p.used_bytes for p in snap.processes}
    assert by_pid == {4242: 3 * GIB, 77: None}  # compute + graphics memory of one pid add up
    assert snap.timestamp == 1000.0
    assert not snap.lost


def test_init_once_and_handles_cached() -> None:
    fake = FakeNvml([FakeBoard(), FakeBoard(name="second")])
    devices = open_fake(fake)
    for _ in range(5):
        for gpu in devices.devices:
            gpu.sample()
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 2
    assert [g.name for g in devices.devices] == ["NVIDIA GeForce RTX 4090 Laptop GPU", "second"]
    devices.close()
    assert fake.initialised == 0  # shut down once every GPU is closed


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                                   pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_no_driver_means_no_device(error: int) -> None:
    assert NvmlDevices.open(FakeNvml(init_error=error)) is None


def test_no_gpu_means_no_device_and_nvml_shut_down() -> None:
    fake = FakeNvml([])
    assert NvmlDevices.open(fake) is None
    assert fake.initialised == 0


def test_not_supported_metrics_are_none_and_not_asked_again() -> None:
    # A typical laptop: no fan, no power reading, no utilisation under WDDM.
    board = FakeBoard(unsupported={"GetFanSpeed", "GetPowerUsage", "GetUtilizationRates",
                                   "GetComputeRunningProcesses", "GetGraphicsRunningProcesses"})
    board.unsupported_fields.add(pynvml.NVML_FI_DEV_POWER_INSTANT)
    fake = FakeNvml([board])
    (gpu,) = open_fake(fake, process_poll_every=1).devices

    first = gpu.sample()
    second = gpu.sample()

    for snap in (first, second):
        assert snap.fan_percent is None
        assert snap.power_w is None
        assert snap.gpu_util_percent is None
        assert snap.mem_util_percent is None
        assert snap.processes is None
        assert snap.temperature_c == 45.0  # the rest still reads
        assert snap.power_limit_w == pytest.approx(175.0)
    assert fake.calls["nvmlDeviceGetFanSpeed"] == 1
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1
    assert fake.calls["nvmlDeviceGetFieldValues"] == 1


def test_instant_power_field_missing_falls_back_to_average() -> None:
    board = FakeBoard(power_instant_mw=50_000, power_average_mw=41_500)
    board.unsupported_fields.add(pynvml.NVML_FI_DEV_POWER_INSTANT)
    (gpu,) = open_fake(FakeNvml([board])).devices
    assert gpu.sample().power_w == pytest.approx(41.5)


def test_bogus_power_value_is_discarded() -> None:
    # Seen on a power-gated 4090 Laptop at idle: ~593,000 mW in both readings.
    board = FakeBoard(power_instant_mw=593_000_000, power_average_mw=593_000_000)
    (gpu,) = open_fake(FakeNvml([board])).devices
    assert gpu.sample().power_w is None
    board.power_average_mw = 22_000  # the average is sane again: use it
    assert gpu.sample().power_w == pytest.approx(22.0)
    board.power_instant_mw = 35_000
    assert gpu.sample().power_w == pytest.approx(35.0)


def test_deprecated_names_missing_from_the_module_use_the_new_api() -> None:
    fake = FakeNvml(missing={"nvmlDeviceGetTemperature",
                             "nvmlDeviceGetCurrentClocksThrottleReasons"})
    (gpu,) = open_fake(fake).devices
    snap = gpu.sample()
    assert snap.temperature_c == 45.0
    assert snap.clock_events == ("Idle",)


def test_old_module_without_new_names_falls_back_to_deprecated_ones() -> None:
    fake = FakeNvml(missing={"nvmlDeviceGetTemperatureV",
                             "nvmlDeviceGetCurrentClocksEventReasons"})
    (gpu,) = open_fake(fake).devices
    gpu.sample()
    snap = gpu.sample()
    assert snap.temperature_c == 45.0
    assert snap.clock_events == ("Idle",)
    assert fake.calls["nvmlDeviceGetTemperature"] == 2


def test_old_driver_without_new_function_falls_back_once() -> None:
    fake = FakeNvml(not_found={"nvmlDeviceGetTemperatureV",
                               "nvmlDeviceGetCurrentClocksEventReasons"})
    (gpu,) = open_fake(fake).devices
    for _ in range(3):
        snap = gpu.sample()
    assert snap.temperature_c == 45.0
    assert snap.clock_events == ("Idle",)
    # The new name was tried once; the working one is remembered.
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 1
    assert fake.calls["nvmlDeviceGetTemperature"] == 3


def test_new_driver_answering_deprecated_names_uses_new_ones() -> None:
    fake = FakeNvml(deprecated={"nvmlDeviceGetTemperature",
                                "nvmlDeviceGetCurrentClocksThrottleReasons"})
    (gpu,) = open_fake(fake).devices
    assert gpu.sample().temperature_c == 45.0
    assert fake.calls["nvmlDeviceGetTemperature"] == 0


def test_gpu_lost_mid_run_is_terminal_and_stops_polling() -> None:
    board = FakeBoard()
    fake = FakeNvml([board])
    (gpu,) = open_fake(fake).devices
    assert not gpu.sample().lost

    board.lost = True
    lost = gpu.sample()
    assert lost.lost
    assert lost.error is not None
    assert "lost" in lost.error.lower()
    assert lost.vram_used_bytes is None
    calls_after_loss = fake.device_calls()

    again = [gpu.sample() for _ in range(5)]
    assert all(s.lost for s in again)
    assert fake.device_calls() == calls_after_loss  # no more driver calls: no crash loop
    assert again[-1].timestamp > lost.timestamp  # still stamped, for the history's time axis


def test_gpu_lost_inside_a_field_value_is_terminal() -> None:
    board = FakeBoard()
    fake = FakeNvml([board])
    (gpu,) = open_fake(fake).devices
    gpu.sample()
    # Lost between the memory read and the power read of one sample: still one clean snapshot.
    original = fake.nvmlDeviceGetFieldValues

    def lost_fields(handle: object, ids: list[int]) -> object:
        board.lost = True
        return original(handle, ids)

    fake.nvmlDeviceGetFieldValues = lost_fields  # type: ignore[method-assign]
    assert gpu.sample().lost


def test_processes_polled_every_nth_sample_and_cached_between() -> None:
    board = FakeBoard(compute_procs=[(1, GIB)])
    fake = FakeNvml([board])
    (gpu,) = open_fake(fake, process_poll_every=4).devices
    snaps = [gpu.sample() for _ in range(8)]
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses"] == 2
    assert all(s.processes == snaps[0].processes for s in snaps[:4])
    board.compute_procs = [(1, GIB), (2, 2 * GIB)]
    snaps = [gpu.sample() for _ in range(4)]  # samples 8..11: the list is re-read at sample 8
    assert snaps[0].processes is not None
    assert [p.pid for p in snaps[0].processes] == [1, 2]


def test_implausible_temperature_discarded() -> None:
    board = FakeBoard(temperature_c=255)  # an unset sensor register
    (gpu,) = open_fake(FakeNvml([board])).devices
    assert gpu.sample().temperature_c is None


def test_decode_clock_events() -> None:
    assert decode_clock_events(0) == ()
    assert decode_clock_events(0x1 | 0x4 | 0x8 | 0x20 | 0x40 | 0x80) == (
        "Idle", "SwPowerCap", "HwSlowdown", "SwThermal", "HwThermal", "HwPowerBrake")
    assert decode_clock_events(0x8000_0000) == ()  # unknown bits are ignored


def test_sampling_after_close_is_an_error() -> None:
    fake = FakeNvml()
    devices = open_fake(fake)
    (gpu,) = devices.devices
    gpu.close()
    gpu.close()  # idempotent
    assert fake.initialised == 0
    with pytest.raises(RuntimeError, match="closed"):
        gpu.sample()


def test_processes_named_with_their_user_and_ours_marked() -> None:
    import os
    import subprocess
    import sys

    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # pid 1 (init) is not ours; this test process and its child are.
        board = FakeBoard(compute_procs=[(child.pid, 2 * GIB), (1, GIB)],
                          graphics_procs=[(os.getpid(), None)])
        (gpu,) = open_fake(FakeNvml([board]), process_poll_every=1).devices
        snap = gpu.sample()
    finally:
        child.kill()
        child.wait()
    assert snap.processes is not None
    by_pid = {p.pid: p for p in snap.processes}
    assert by_pid[child.pid].ours
    assert by_pid[child.pid].used_bytes == 2 * GIB
    assert by_pid[child.pid].name == psutil.Process(os.getpid()).name()  # the same interpreter
    assert by_pid[child.pid].user == psutil.Process().username()
    assert by_pid[os.getpid()].ours
    assert by_pid[os.getpid()].used_bytes is None
    assert not by_pid[1].ours


def test_a_process_gone_before_it_is_named_keeps_its_pid_and_memory() -> None:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    board = FakeBoard(compute_procs=[(gone.pid, GIB)])
    (gpu,) = open_fake(FakeNvml([board]), process_poll_every=1).devices
    (proc,) = gpu.sample().processes or ()
    assert (proc.pid, proc.used_bytes, proc.name, proc.ours) == (gone.pid, GIB, None, False)


def test_clocks_current_and_maximum_read_once() -> None:
    board = FakeBoard(sm_clock=1200, mem_clock=8001, sm_clock_max=2040, mem_clock_max=9001)
    fake = FakeNvml([board])
    (gpu,) = open_fake(fake).devices
    snaps = [gpu.sample() for _ in range(3)]
    assert [(s.sm_clock_mhz, s.sm_clock_max_mhz) for s in snaps] == [(1200, 2040)] * 3
    assert snaps[0].mem_clock_max_mhz == 9001
    assert fake.calls["nvmlDeviceGetMaxClockInfo"] == 2  # SM and memory, once each: static


def test_max_clocks_not_supported_are_none() -> None:
    board = FakeBoard(unsupported={"GetMaxClockInfo"})
    (gpu,) = open_fake(FakeNvml([board])).devices
    snap = gpu.sample()
    assert (snap.sm_clock_max_mhz, snap.mem_clock_max_mhz) == (None, None)
    assert snap.sm_clock_mhz == 1500  # the current clock still reads


@pytest.mark.parametrize(("bit", "name", "said"), [
    (0x1, "Idle", "idle"),
    (0x2, "AppClocksSetting", "application clocks setting"),
    (0x4, "SwPowerCap", "power cap"),
    (0x8, "HwSlowdown", "HW slowdown"),
    (0x10, "SyncBoost", "sync boost"),
    (0x20, "SwThermal", "thermal slowdown"),
    (0x40, "HwThermal", "HW thermal slowdown"),
    (0x80, "HwPowerBrake", "HW power brake"),
    (0x100, "DisplayClockSetting", "display clock setting"),
])
def test_each_clock_event_bit_is_named(bit: int, name: str, said: str) -> None:
    from core.telemetry.clock_events import reason_name

    for api in ("nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons"):
        # A driver that answers only one of the two names (newer: DEPRECATED for the old one).
        other = ({"nvmlDeviceGetCurrentClocksThrottleReasons"} if api.endswith("EventReasons")
                 else {"nvmlDeviceGetCurrentClocksEventReasons"})
        (gpu,) = open_fake(FakeNvml([FakeBoard(clock_events=bit)], deprecated=other)).devices
        assert gpu.sample().clock_events == (name,)
    assert reason_name(name) == said


def test_clock_event_reasons_not_supported_are_not_reported() -> None:
    from core.telemetry.clock_events import describe

    board = FakeBoard(unsupported={"GetCurrentClocksEventReasons",
                                   "GetCurrentClocksThrottleReasons"})
    (gpu,) = open_fake(FakeNvml([board])).devices
    snap = gpu.sample()
    assert snap.clock_events is None
    assert describe(snap.clock_events) == "not reported"
    assert describe(("Idle",)) == "none"
    assert describe(("SwPowerCap", "SwThermal")) == "power cap, thermal slowdown"
