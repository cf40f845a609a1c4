"""GUI test fixtures: offscreen Qt, one qasync loop per test, a real Runtime on the simulated
RTX 4090 Laptop with its data dir (and SQLite history) in a temp dir.

Every test fails if it leaves a QTimer running, a thread alive or an asyncio task pending.
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from core.runtime import Runtime
from gui.event_loop import AppEventLoop

PROFILE = "rtx4090-laptop"


async def wait_until(predicate: Callable[[], object], within_s: float = 5.0,
                     what: str = "condition") -> None:
    """Let the loop run until predicate() is true (like qtbot.waitUntil, for qasync tests)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The offscreen platform warns that it cannot propagate size hints: harmless there.
    for item in items:
        item.add_marker(pytest.mark.qt_log_ignore("propagateSizeHints"))


@pytest.fixture
def loop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    """A fresh qasync loop on the test's QApplication; fails the test on a task left pending."""
    qapp.setQuitOnLastWindowClosed(False)  # the app's shutdown ends the loop, not Qt
    loop = AppEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    asyncio.set_event_loop(None)
    assert not pending, f"tasks left pending: {[t.get_name() for t in pending]}"


@pytest.fixture(autouse=True)
def no_leftovers(qapp: QApplication) -> Iterator[None]:
    """Fail a test that leaves a QTimer running or a new thread alive."""
    before = set(threading.enumerate())
    yield
    timers = [t for w in qapp.allWidgets() for t in w.findChildren(QTimer) if t.isActive()
              and t.objectName()]  # our timers are named; Qt's internal ones are not
    for w in qapp.topLevelWidgets():
        w.close()

    qapp.processEvents()
    deadline = time.monotonic() + 5.0
    while True:
        threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not threads or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # teardown only: give joined threads a moment to finish exiting
    assert not timers, f"QTimers left running: {[t.objectName() for t in timers]}"
    assert not threads, f"threads left running: {[t.name for t in threads]}"


@pytest.fixture(scope="session")
def demo_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo-tiny-a and demo-tiny-b, built once per session (a few seconds)."""
    from core.engine.demo_model import ensure_demo_models

    root = tmp_path_factory.mktemp("demo-models")
    ensure_demo_models(root)
    return root


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def with_demo_models(data_dir: Path, demo_models_root: Path) -> Path:
    """The data dir's models folder holds the built demo models."""
    (data_dir / "models").symlink_to(demo_models_root, target_is_directory=True)
    return data_dir


@pytest.fixture
def runtime(data_dir: Path, loop: qasync.QEventLoop) -> Iterator[Runtime]:
    rt = Runtime.create(simulate=PROFILE, history_path=data_dir / "history.sqlite3")
    yield rt
    loop.run_until_complete(rt.close())  # idempotent: the app's shutdown may have run it
