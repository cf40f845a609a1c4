"""The fan chart through the real controller: drawn for a card whose NVML reports a fan (the
fake NVML, documented behaviour), absent on the laptop that reports none."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import qasync

import core.runtime
from core.runtime import Runtime
from core.telemetry.sampler import open_gpu_devices
from gui.app import AppController
from tests.core.fake_pynvml import FakeBoard, FakeNvml
from tests.gui.conftest import wait_until


def _close(app: AppController, loop: qasync.QEventLoop) -> None:
    app.window.close()
    loop.run_until_complete(asyncio.wait_for(app.finished.wait(), 20))


def test_a_reported_fan_is_charted_and_a_laptops_is_not(
        data_dir: Path, runtime: Runtime, loop: qasync.QEventLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    laptop = AppController(runtime, settings=None, tray=False)  # the simulated RTX 4090 Laptop
    assert not [t for t in laptop.charts.plots if t.endswith(" fan")]
    laptop.start(autoload=False)
    _close(laptop, loop)

    fake = FakeNvml([FakeBoard(fan=55)])

    def with_fake_nvml(simulate: str | None, activity: Any = None) -> list[Any]:
        return open_gpu_devices(simulate, activity, nvml=fake)  # the hardware seam only

    monkeypatch.setattr(core.runtime, "open_gpu_devices", with_fake_nvml)
    desktop = Runtime.create(history_path=data_dir / "desktop.sqlite3")
    app = AppController(desktop, settings=None, tray=False)
    fan = [t for t in app.charts.plots if t.endswith(" fan")]
    assert len(fan) == 1

    async def body() -> None:
        app.start(autoload=False)
        await wait_until(lambda: desktop.sampler.latest is not None, 10, "a sample")
        assert desktop.sampler.latest.gpus[0].fan_percent == 55  # type: ignore[union-attr]
        app.gpu_status.refresh()
        assert "fan 55 %" in app.gpu_status.header.text()
        _times, values = desktop.history.window("gpu0.fan_percent")
        assert list(values[-1:]) == [55.0]  # the chart's series holds the reading

    loop.run_until_complete(body())
    _close(app, loop)
    loop.run_until_complete(desktop.close())
