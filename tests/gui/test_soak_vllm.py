"""The Soak test tab on the real vLLM CPU engine with the demo model on the simulated RTX 4090
Laptop: Start loads the model and streams, the live charts fill from the run, Stop ends it early,
and the report, samples and charts are saved."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import wait_until

LOAD_S = 180.0


@pytest.fixture
def app(with_demo_models: Path, runtime: Runtime, loop: qasync.QEventLoop
        ) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


@pytest.mark.vllm
def test_soak_tab_runs_live_and_stops(app: AppController, runtime: Runtime,
                                      loop: qasync.QEventLoop, qtbot: QtBot,
                                      with_demo_models: Path) -> None:
    async def body() -> None:
        app.start(autoload=False)
        soak = app.soak
        app.window.tabs.setCurrentWidget(soak)
        soak.model_box.setCurrentIndex(soak.model_box.findText("demo-tiny-a"))
        soak.minutes.setValue(5.0)
        soak.concurrency.setValue(2)
        soak.prompt_tokens.setValue(32)
        soak.max_tokens.setValue(16)
        qtbot.mouseClick(soak.start_button, Qt.MouseButton.LeftButton)
        assert soak.running
        assert not soak.start_button.isEnabled()
        await wait_until(lambda: soak.runner is not None and soak.runner.recording is not None,
                         LOAD_S, "the model to load and the soak to start")
        # The live view: temperature and tokens/s of this run, drawn while it runs.
        def live_charts_filled() -> bool:
            if (0, "temperature_c") not in soak.charts.curves:
                return False
            _, rate = soak.charts.curve_data(0, "tokens_per_s")
            return len(soak.charts.curve_data(0, "temperature_c")[0]) >= 6 and (
                len(rate) > 0 and float(rate.max()) > 0)

        await wait_until(live_charts_filled, 30, "the live charts")
        assert soak.running
        assert "tokens" in soak.status.text()
        qtbot.mouseClick(soak.stop_button, Qt.MouseButton.LeftButton)
        await wait_until(lambda: not soak.running, 30, "the soak to stop")
        assert soak.start_button.isEnabled()
        assert "saved in" in soak.status.text()
        assert "Ended: stopped by the user" in soak.summary.toPlainText()
        [folder] = (with_demo_models / "soak").iterdir()
        report = json.loads((folder / "report.json").read_text())
        assert report["ended_by"] == "stopped"
        assert report["tokens"] > 0
        assert report["duration_s"] < 60
        assert (folder / "charts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "soak of demo-tiny-a" in app.events.event_log.toPlainText()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 15)

    loop.run_until_complete(body())
