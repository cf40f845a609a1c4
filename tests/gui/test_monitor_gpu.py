"""The Monitor's GPU header and process table through the real widgets: processes from the
fake NVML (documented behaviour), throttle reasons from the simulated GPU heating under load."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest
import qasync
from pytestqt.qtbot import QtBot

from core.config import load_app_config
from core.runtime import Runtime
from core.telemetry.host import HostSampler
from core.telemetry.nvml_device import NvmlDevices
from core.telemetry.sampler import Sampler
from gui.app import AppController
from gui.gpu_panel import GpuStatusPanel
from tests.core.fake_pynvml import GIB, FakeBoard, FakeNvml
from tests.gui.conftest import wait_until

FAST_THERMAL = str(Path(__file__).parents[1] / "data" / "soak_fast_thermal.yaml")


def _sampler(board: FakeBoard) -> Sampler:
    devices = NvmlDevices.open(FakeNvml([board]), process_poll_every=1)  # type: ignore[arg-type]
    assert devices is not None
    monitoring = load_app_config().monitoring.hardware_monitoring
    return Sampler(list(devices.devices), HostSampler(), monitoring)


def test_process_table_names_who_holds_the_vram_and_marks_ours(qtbot: QtBot) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        board = FakeBoard(compute_procs=[(child.pid, 3 * GIB), (1, 512 * 1024**2)],
                          graphics_procs=[(os.getpid(), None)], clock_events=0x4,
                          sm_clock=1800, sm_clock_max=2040, mem_clock=8001, mem_clock_max=9001)
        sampler = _sampler(board)
        sampler.sample_once()
        panel = GpuStatusPanel(lambda: sampler.latest)
        qtbot.addWidget(panel)
        panel.refresh()
    finally:
        child.kill()
        child.wait()
    rows = panel.rows()
    # Largest holder first; the amount NVML could not give is said, not drawn as zero.
    assert [r[0] for r in rows] == [str(child.pid), "1", str(os.getpid())]
    assert rows[0][3] == "3.00 GiB"
    assert rows[0][4] == "vrampilot (ours)"
    assert rows[1][3] == "512 MiB"
    assert rows[1][4] == ""
    assert rows[2][3] == "not reported"
    assert rows[2][4] == "vrampilot (ours)"
    assert panel.table.item(0, 1).font().bold()
    assert not panel.table.item(1, 1).font().bold()
    header = panel.header.text()
    assert "SM clock 1800 / 2040 MHz" in header
    assert "memory clock 8001 / 9001 MHz" in header
    assert "throttle: power cap" in header
    assert "fan 40 %" in header
    sampler.close()


def test_a_laptop_that_reports_no_processes_says_so(qtbot: QtBot) -> None:
    board = FakeBoard(unsupported={"GetComputeRunningProcesses", "GetGraphicsRunningProcesses",
                                   "GetFanSpeed", "GetMaxClockInfo",
                                   "GetCurrentClocksEventReasons",
                                   "GetCurrentClocksThrottleReasons"})
    board.unsupported_fields.add(pynvml.NVML_FI_DEV_POWER_INSTANT)
    sampler = _sampler(board)
    sampler.sample_once()
    panel = GpuStatusPanel(lambda: sampler.latest)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.rows() == []
    assert "GPU 0 does not report its processes" in panel.processes_note.text()
    header = panel.header.text()
    assert "SM clock 1500 MHz" in header  # no maximum: the current clock alone
    assert "throttle: not reported" in header
    assert "fan not reported" in header
    sampler.close()


@pytest.fixture
def hot_runtime(data_dir: Path, loop: qasync.QEventLoop) -> Iterator[Runtime]:
    """The RTX 4090 Laptop with a 3 s thermal time constant and a 66 C throttle point."""
    rt = Runtime.create(simulate=FAST_THERMAL, history_path=data_dir / "history.sqlite3")
    yield rt
    loop.run_until_complete(rt.close())


def test_heating_under_load_shows_thermal_slowdown_by_name(
        hot_runtime: Runtime, loop: qasync.QEventLoop, qtbot: QtBot) -> None:
    controller = AppController(hot_runtime, settings=None, tray=False)

    async def body() -> None:
        controller.start(autoload=False)
        status, log = controller.gpu_status, controller.events.event_log
        await wait_until(lambda: "throttle:" in status.header.text(), 10, "first header")
        assert "thermal slowdown" not in status.header.text()
        # What an engine reports while it streams: the simulated card's power, then its
        # temperature, follow; nothing hands the panel a throttle event.
        for _ in range(4):
            hot_runtime.activity.stream_started()
        await wait_until(lambda: "thermal slowdown" in status.header.text(), 30,
                         "thermal slowdown in the header")
        await wait_until(lambda: "throttling: thermal slowdown (SwThermal) started"
                         in log.toPlainText(), 5, "the reason logged by name")
        gpu = hot_runtime.sampler.latest.gpus[0]  # type: ignore[union-attr]
        if "SwThermal" in (gpu.clock_events or ()):  # held down: below its maximum
            assert gpu.sm_clock_mhz is not None
            assert gpu.sm_clock_max_mhz is not None
            assert gpu.sm_clock_mhz < gpu.sm_clock_max_mhz
        title = next(s.title for s in controller.charts._specs if "temperature" in s.title)
        controller.charts.redraw()
        await wait_until(lambda: "throttle: thermal slowdown"
                         in controller.charts.region_tooltips(title), 5, "shaded, with tooltip")
        for _ in range(4):
            hot_runtime.activity.stream_ended()
        await wait_until(lambda: "thermal slowdown (SwThermal) ended" in log.toPlainText(), 20,
                         "the end logged")
        controller.window.close()
        await asyncio.wait_for(controller.finished.wait(), 20)

    loop.run_until_complete(body())


def test_a_refusal_on_memory_names_the_other_processes_holding_vram(
        runtime: Runtime, qtbot: QtBot) -> None:
    import psutil

    from core.telemetry.gpu_processes import others_holding
    from gui.model_switcher import ModelSwitcherPanel

    board = FakeBoard(compute_procs=[(1, 2 * GIB), (os.getpid(), GIB)],
                      graphics_procs=[(os.getpid() + 10**6, None)])  # a pid that does not exist
    sampler = _sampler(board)
    sampler.sample_once()
    panel = ModelSwitcherPanel(runtime.manager, runtime.history_store)
    qtbot.addWidget(panel)
    panel.vram_holders = lambda: others_holding(sampler.latest.gpus[0].processes)  # type: ignore[union-attr]
    # The 30B at 4 bit does not fit 16 GB: refused on memory.
    assert not panel.request_switch("qwen3-30b-a3b-instruct-2507")
    text = panel.refusal.text()
    assert "FAILED memory" in text
    assert (f"Other processes hold VRAM: {psutil.Process(1).name()} (pid 1) 2.00 GiB, "
            f"unknown (pid {os.getpid() + 10**6}) amount not reported") in text
    assert f"pid {os.getpid()})" not in text  # ours is not "another process"
    sampler.close()
