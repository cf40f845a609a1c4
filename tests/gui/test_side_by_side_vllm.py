"""Side by side on the real vLLM CPU engine: one prompt on both demo models, one after the
other; each column shows its reply, first-token time, tokens/s, tokens and its switch's cost;
the two switches are rows in the history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from core.runtime import Runtime
from gui.app import AppController
from tests.gui.conftest import PROFILE, wait_until

RUN_S = 480.0  # two engine starts on a busy 2-core machine


@pytest.fixture
def runtime(with_demo_models: Path, loop: qasync.QEventLoop) -> Iterator[Runtime]:
    # A cold load took over the default 90 s switch deadline on the busy CI machine.
    config = with_demo_models / "slow.yaml"
    config.write_text(f"model_switching:\n  switch_timeout_seconds: {RUN_S:.0f}\n")
    rt = Runtime.create(config_file=config, simulate=PROFILE,
                        history_path=with_demo_models / "history.sqlite3")
    yield rt
    loop.run_until_complete(rt.close())


@pytest.fixture
def app(runtime: Runtime, loop: qasync.QEventLoop) -> Iterator[AppController]:
    c = AppController(runtime, settings=None, tray=False)
    yield c
    if not c.finished.is_set():
        c.window.close()
        loop.run_until_complete(asyncio.wait_for(c.finished.wait(), 30))


@pytest.mark.vllm
def test_two_models_side_by_side_with_their_switches(app: AppController, runtime: Runtime,
                                                     loop: qasync.QEventLoop,
                                                     qtbot: QtBot) -> None:
    pg = app.playground
    sbs = pg.side_by_side

    async def body() -> None:
        app.start(autoload=False)
        app.window.tabs.setCurrentWidget(pg)
        pg.views.setCurrentWidget(sbs)
        sbs.pickers[0].setCurrentIndex(sbs.pickers[0].findData("demo-tiny-a"))
        sbs.pickers[1].setCurrentIndex(sbs.pickers[1].findData("demo-tiny-b"))
        sbs.pickers[2].setCurrentIndex(sbs.pickers[2].findData(None))
        assert sbs.models() == ["demo-tiny-a", "demo-tiny-b"]
        pg.max_tokens.setValue(16)
        pg.seed.setValue(5)
        qtbot.keyClicks(pg.prompt, "Compare these two.")
        before = runtime.history_store.count()
        qtbot.mouseClick(sbs.run_button, Qt.MouseButton.LeftButton)
        assert sbs.busy
        await wait_until(lambda: not sbs.busy, RUN_S, "both models to answer")
        a, b = sbs.runs
        for run, (group, stats, text) in zip((a, b), sbs.columns, strict=False):
            assert run.done
            assert run.error is None, run.error
            assert run.tokens > 0
            assert run.first_token_s is not None
            assert group.title() == run.model
            assert text.toPlainText() == run.text
            assert run.text
            assert run.switch_outcome == "ready"
            assert run.switch_s is not None
            assert run.switch_s > 0
            assert "loading" in run.switch_phases
            assert f"switch: {run.switch_s:.1f} s" in stats.text()
            assert f"{run.tokens} tokens" in stats.text()
            assert "tok/s" in stats.text()
        assert not sbs.columns[2][0].isVisible()
        assert runtime.manager.active_model == "demo-tiny-b"
        rows = runtime.history_store.recent(10)
        assert runtime.history_store.count() == before + 2
        assert [(r.from_model, r.to_model, r.outcome) for r in rows[:2]] == [
            ("demo-tiny-a", "demo-tiny-b", "ready"), (None, "demo-tiny-a", "ready")]
        assert rows[0].total_s == pytest.approx(b.switch_s, abs=0.5)
        app.window.close()
        await asyncio.wait_for(app.finished.wait(), 30)

    loop.run_until_complete(body())
