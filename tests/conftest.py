"""Shared fixtures, and the guard that keeps the fast subset (`-m 'not vllm'`) free of vLLM.

``demo_model_dir``: the tiny random Qwen3 (1.4 MB, ~5 s to build) built once per test session into a
temp dir, so tests that need a real model directory never touch the user's data dir or the network.

The guard: a test not marked ``vllm`` fails when its setup (module fixtures included) or its body
leaves a new vLLM engine or server process running, or imports the modules that start one. Tests
marked ``engine_stand_ins`` start processes that only carry an engine's name (the reaper's tests).
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path

import psutil
import pytest

from core.engine.processes import looks_like_engine

# Imported only to start an engine: in-process (AsyncLLM spawns the engine core) or as a server.
ENGINE_STARTING_MODULES = ("vllm.v1.engine.async_llm", "vllm.v1.engine.core_client",
                           "vllm.entrypoints.openai.api_server")


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built demo model (seed 0). Treat it as read-only: copy it before altering files."""
    from core.engine.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model") / "demo-tiny-a", seed=0,
                            name="demo-tiny-a")


def _engine_processes() -> dict[int, str]:
    found = {}
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    for proc in children:
        if looks_like_engine(proc):
            try:
                found[proc.pid] = " ".join(proc.cmdline())[:200] or proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    return found


def _engine_state() -> tuple[dict[int, str], set[str]]:
    return _engine_processes(), {m for m in ENGINE_STARTING_MODULES if m in sys.modules}


def _check_no_new_engine(item: pytest.Item, before: tuple[dict[int, str], set[str]],
                         phase: str) -> None:
    if any(item.get_closest_marker(m) is not None for m in ("vllm", "engine_stand_ins")):
        return
    procs, modules = _engine_state()
    new_procs = {pid: cmd for pid, cmd in procs.items() if pid not in before[0]}
    new_modules = sorted(modules - before[1])
    if new_procs or new_modules:
        what = [f"process {pid} ({cmd})" for pid, cmd in new_procs.items()]
        what += [f"import of {m}" for m in new_modules]
        pytest.fail(f"{item.nodeid} is not marked `vllm` but its {phase} started vLLM: "
                    + "; ".join(what), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    before = _engine_state()
    result = yield
    _check_no_new_engine(item, before, "setup")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    before = _engine_state()
    result = yield
    _check_no_new_engine(item, before, "call")
    return result
