"""A real load of a demo model through the manager, the KV cache sized to the fitted context
(vLLM's CPU build): its phase breakdown adds up to the load, is recorded and carried by
`history --json`, and the load serves a prompt that fills its context (slow: ~1 minute)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.cli.history import history_report
from core.engine.base import ChatMessage, GenerationRequest
from core.history_store import HistoryStore
from core.manager.events import SwitchEvent, SwitchPhase
from core.manager.fit import CPU_MIN_UTILIZATION, estimator_fit
from core.manager.manager import ModelManager
from core.manager.memory_wait import HostMemoryProbe
from core.models.catalog import ModelEntry, load_catalog
from core.models.estimator import Estimator
from core.telemetry.activity import EngineActivity
from core.telemetry.config import ModelSwitching


@pytest.mark.vllm
def test_a_load_is_broken_down_and_its_sized_kv_cache_serves_the_fitted_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.engine.demo_model import ensure_demo_models
    from core.engine.vllm_engine import VllmEngine

    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    ensure_demo_models()
    catalog = load_catalog()
    activity = EngineActivity()
    history = HistoryStore()
    engines: list[VllmEngine] = []

    def factory(entry: ModelEntry) -> VllmEngine:
        engines.append(VllmEngine(activity=activity))
        return engines[-1]

    manager = ModelManager(
        catalog, ModelSwitching(fallback_cascade=("demo-tiny-a",), switch_timeout_seconds=300),
        HostMemoryProbe(), factory, history, activity,
        estimator_fit(Estimator(catalog), min_utilization=CPU_MIN_UTILIZATION,
                      size_kv_cache=True))
    events: list[SwitchEvent] = []
    manager.subscribe(events.append)
    reply: dict[str, object] = {}

    async def run() -> None:
        try:
            result = await manager.switch_to("demo-tiny-a")
            assert result.outcome == "ready", result.errors
            engine = engines[-1]
            context = manager.state.max_model_len
            assert context is not None
            tokenizer = engine._tokenizer
            # A prompt that leaves a dozen tokens of the context for the reply.
            words = "a b " * context
            for cut in range(context, 0, -8):
                ids, _ = engine._render_prompt(GenerationRequest(
                    (ChatMessage("user", tokenizer.decode(tokenizer.encode(words)[:cut])),)))
                if len(ids) <= context - 12:
                    break
            request = GenerationRequest(
                (ChatMessage("user", tokenizer.decode(tokenizer.encode(words)[:cut])),),
                max_tokens=64, temperature=0.0, ignore_eos=True)
            async for delta in engine.generate(request):
                if delta.finished:
                    reply.update(prompt=delta.prompt_tokens, tokens=delta.tokens,
                                 reason=delta.finish_reason, context=context)
        finally:
            await manager.close()

    asyncio.run(run())
    # The prompt nearly filled the fitted context (the catalog's 1024 here) and the reply ran to
    # its end: the KV cache sized to that context holds all of it.
    context = reply["context"]
    assert isinstance(context, int)
    assert isinstance(reply["prompt"], int)
    assert reply["prompt"] >= context - 12 - 8
    assert reply["tokens"] == context - reply["prompt"]
    assert reply["reason"] == "length"
    log = engines[-1].log_file
    assert log is not None
    assert "Explicitly set" in log.read_text()

    row = history.recent(1)[0]
    loading = row.phases["loading"]
    breakdown = row.load_phases
    assert {"prepare", "spawn", "imports", "model_init", "weights", "kv_cache",
            "handshake"} <= set(breakdown)
    assert sum(breakdown.values()) == pytest.approx(loading, rel=0.05)
    assert breakdown["imports"] > breakdown["weights"]  # start-up, not the 1.4 MB of weights
    report = json.loads(json.dumps(history_report(history, 5)))
    assert report["recent"][0]["load_phases"] == pytest.approx(breakdown)
    history.close()
    # The Models tab's progress text named the load's phases as they came.
    said = [e.message for e in events if e.phase is SwitchPhase.LOADING]
    assert any("importing vLLM in the engine processes" in m for m in said)
    assert any("building the model" in m or "loading the weights" in m or "KV-cache" in m
               for m in said)
