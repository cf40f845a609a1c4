"""Reading the next model's files ahead: the hint covers what vLLM reads, and a switch asks for
it (before it unloads the old model)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from core.engine.page_cache import prefetch_model_files
from tests.core.manager_fakes import make_rig

FOUR_B = "qwen3-4b-instruct-2507"


def test_the_model_files_are_hinted_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 10_000)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.md").write_text("not read by vLLM")
    (tmp_path / "sub").mkdir()
    assert prefetch_model_files(tmp_path) == 10_002
    assert prefetch_model_files(tmp_path / "missing") == 0


def test_a_switch_reads_the_target_ahead(tmp_path: Path) -> None:
    asked: list[str] = []
    done = threading.Event()

    def prefetch(path: Path) -> int:
        asked.append(path.name)
        done.set()
        return 0

    rig = make_rig(tmp_path, prefetch=prefetch)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 5)
        asked.clear()
        done.clear()
        await rig.manager.switch_to("qwen3-8b")
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 5)

    asyncio.run(run())
    assert asked == [rig.catalog.local_path(rig.catalog.get("qwen3-8b")).name]
