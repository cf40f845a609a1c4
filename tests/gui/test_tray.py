"""The tray menu (show/hide, the active model, switch, unload, quit) and the start-up options,
through the real controller on the simulated GPU."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync

from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import PROFILE, wait_until

LOAD_S = 240  # a cold vLLM import and load on a busy 2-core machine


@pytest.fixture
def app(runtime: Runtime, loop: qasync.QEventLoop) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


def _switch_entries(app: AppController) -> dict[str, object]:
    app.tray.fill_switch_menu()  # what opening the submenu does
    return {a.text(): a for a in app.tray.switch_menu.actions()}


@pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise")  # offscreen
def test_tray_menu_shows_hides_and_tells_the_state(
        with_demo_models: Path, app: AppController, runtime: Runtime,
        loop: qasync.QEventLoop) -> None:
    async def body() -> None:
        app.start(autoload=False)
        tray = app.tray
        assert not tray.available  # tray=False (and offscreen has none): the menu, no icon
        await wait_until(lambda: runtime.sampler.latest is not None, 10, "a sample")
        tray.refresh()
        assert tray.model_action.text() == "no model loaded"
        assert not tray.unload_action.isEnabled()
        assert "vrampilot: no model loaded" in tray.tooltip
        assert "VRAM 0.6 / 16 GiB" in tray.tooltip  # the simulated card's desktop baseline
        # Hide and show through the menu.
        assert tray.show_action.text() == "Hide window"
        tray.show_action.trigger()
        assert not app.window.isVisible()
        tray.refresh()
        assert tray.show_action.text() == "Show window"
        tray.show_action.trigger()
        assert app.window.isVisible()
        # Every demo model fits the simulated 16 GB card and is on disk: all are offered.
        offered = _switch_entries(app)
        assert {"demo-tiny-a", "demo-tiny-b", "demo-small"} <= set(offered)
        assert not any(name.startswith("qwen3") for name in offered)  # not on disk here
        # Quit from the tray takes the normal shutdown.
        tray.quit_action.trigger()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())


def test_start_minimised_without_a_tray_is_minimised_not_hidden(
        data_dir: Path, loop: qasync.QEventLoop) -> None:
    config = data_dir / "config.yaml"
    config.write_text("startup: {minimised: true}\n", encoding="utf-8")
    runtime = Runtime.create(config_file=config, simulate=PROFILE,
                             history_path=data_dir / "history.sqlite3")
    app = AppController(runtime, settings=None, tray=False)

    async def body() -> None:
        app.start(autoload=False)
        assert app.window.isMinimized()
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 20)

    loop.run_until_complete(body())
    loop.run_until_complete(runtime.close())


@pytest.mark.vllm
def test_last_model_loads_at_start_and_the_tray_switches_and_unloads(
        with_demo_models: Path, data_dir: Path, loop: qasync.QEventLoop) -> None:
    config = data_dir / "config.yaml"
    config.write_text("startup: {load_last_model: true}\n", encoding="utf-8")
    runtime = Runtime.create(config_file=config, simulate=PROFILE,
                             history_path=data_dir / "history.sqlite3")
    # What an earlier run left in the history: its last ready switch was to demo-tiny-b.
    runtime.history_store.record_switch(from_model=None, to_model="demo-tiny-b", reason="manual",
                                        outcome="ready", total_s=20.0, phases={})
    app = AppController(runtime, settings=None, tray=False)

    async def body() -> None:
        app.start(autoload=True)
        await wait_until(lambda: runtime.manager.active_model == "demo-tiny-b", LOAD_S,
                         "the last model loaded at start")
        app.tray.refresh()
        assert app.tray.model_action.text() == "Model: demo-tiny-b"
        # The warm-up's power has to settle under the switch gate's 120 W first.
        await wait_until(lambda: "demo-tiny-a" in _switch_entries(app), 120,
                         "demo-tiny-a offered: " + str(runtime.manager.plan_switch(
                             "demo-tiny-a").refusal))
        offered = _switch_entries(app)
        assert offered["demo-tiny-b"].isChecked()  # type: ignore[attr-defined]
        offered["demo-tiny-a"].trigger()  # type: ignore[attr-defined]
        await wait_until(lambda: app.models.busy, 5, "the switch to start")
        await wait_until(lambda: runtime.manager.active_model == "demo-tiny-a"
                         and not app.models.busy, LOAD_S, "the tray's switch")
        app.tray.refresh()
        assert "demo-tiny-a" in app.tray.tooltip
        app.tray.unload_action.trigger()
        await wait_until(lambda: runtime.manager.active_model is None and not app.models.busy,
                         60, "the tray's unload")
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 30)

    loop.run_until_complete(body())
    loop.run_until_complete(runtime.close())
