"""A real switch demo-tiny-a -> demo-tiny-b on the real vLLM CPU engine (slow: ~1 minute)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from core.history_store import HistoryStore
from core.manager.fit import CPU_MIN_UTILIZATION, estimator_fit
from core.manager.manager import ModelManager
from core.manager.memory_wait import HostMemoryProbe
from core.models.catalog import ModelEntry, load_catalog
from core.models.estimator import Estimator
from core.telemetry.activity import EngineActivity
from core.telemetry.config import ModelSwitching


@pytest.mark.vllm
def test_real_switch_between_demo_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.engine.demo_model import ensure_demo_models
    from core.engine.vllm_engine import VllmEngine

    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    ensure_demo_models()
    catalog = load_catalog()
    activity = EngineActivity()
    history = HistoryStore()
    switching = ModelSwitching(fallback_cascade=("demo-tiny-a", "demo-tiny-b"),
                               switch_timeout_seconds=180, memory_return_timeout_seconds=30)
    pids: list[int] = []

    def factory(entry: ModelEntry) -> VllmEngine:
        return VllmEngine(activity=activity)

    manager = ModelManager(catalog, switching, HostMemoryProbe(), factory, history, activity,
                           estimator_fit(Estimator(catalog),
                                         min_utilization=CPU_MIN_UTILIZATION))

    async def run() -> None:
        assert (await manager.switch_to("demo-tiny-a")).outcome == "ready"
        engine = manager.active_engine
        assert engine is not None
        pids.extend(engine.pids())
        result = await manager.switch_to("demo-tiny-b")
        assert result.outcome == "ready", result.errors
        await manager.close()

    asyncio.run(run())
    row = history.recent()[0]
    assert (row.from_model, row.to_model, row.outcome) == ("demo-tiny-a", "demo-tiny-b", "ready")
    assert {"unloading", "waiting_for_memory", "loading", "warming_up"} <= set(row.phases)
    assert pids
    assert not [p for p in pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
