"""A critical alert under "act" ends the soak the way the policy says: the simulated GPU heats and
draws power with the streams the soak keeps running; power critical makes the reactor switch to
a smaller model, and the soak of the first model ends, saying so.

Runs on the manager tests' in-test engine (see manager_fakes: a real vLLM load takes ~20 s),
whose tokens advance the driven clock that the simulated GPU and the alerts run on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.chat_session import ChatSession
from core.engine.base import GenerationDelta, GenerationRequest
from core.manager.alert_policy import AlertReactor
from core.router import load_router_config
from core.router.selection import Router
from core.runtime import SerializedDevice
from core.soak.runner import SoakRunner, SoakSettings
from core.telemetry.alerts import AlertEvent
from core.telemetry.config import ModelSwitching, load_monitoring_config
from core.telemetry.host import HostSampler
from core.telemetry.sampler import Sampler
from core.telemetry.snapshot import Sample
from tests.core.manager_fakes import CASCADE, RecordingEngine, make_rig


def test_power_critical_under_act_switches_smaller_and_ends_the_soak(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The switch's own power check (120 W by default) reads the device while the soak's streams
    # still draw 149 W, and would refuse the step-down the power alert asked for: a limit above
    # that lets this test follow the policy's switch to its end.
    rig = make_rig(tmp_path, switching=ModelSwitching(
        switch_timeout_seconds=90, max_retries=3, memory_poll_interval_seconds=0.25,
        memory_return_timeout_seconds=30, fallback_cascade=CASCADE, max_power_w=200))
    plain_generate = RecordingEngine.generate

    async def reporting_generate(self: RecordingEngine, request: GenerationRequest
                                 ) -> AsyncIterator[GenerationDelta]:
        # Like VllmEngine: the engine tells EngineActivity (the simulated GPU's input) it streams.
        rig.activity.stream_started()
        try:
            async for delta in plain_generate(self, request):
                yield delta
        finally:
            rig.activity.stream_ended()

    monkeypatch.setattr(RecordingEngine, "generate", reporting_generate)
    hw = load_monitoring_config().hardware_monitoring.model_copy(
        update={"policy": "act", "interval_seconds": 0.1})
    reactor = AlertReactor(rig.manager, hw, clock=rig.clock)
    sampler = Sampler([SerializedDevice(rig.gpu)], HostSampler(), hw)
    chat = ChatSession(rig.manager, Router(load_router_config(rig.catalog), rig.catalog),
                       rig.history, rig.probe)
    # Three streams: 125 + 2 * 12 = 149 W on the simulated laptop GPU, above the 140 W line.
    settings = SoakSettings(minutes=0.5, concurrency=3, prompt_tokens=8, max_tokens=50,
                            model="qwen3-14b")
    runner = SoakRunner(chat, sampler, settings, device_label=rig.gpu.name, simulated=True,
                        clock=rig.clock)
    reactions: list[asyncio.Future[object]] = []

    async def run() -> dict[str, object]:
        loop = asyncio.get_running_loop()

        def react(events: list[AlertEvent]) -> None:
            reactions.append(asyncio.ensure_future(reactor.handle(events)))

        def on_sample(_sample: Sample, events: list[AlertEvent]) -> None:
            if events:
                loop.call_soon_threadsafe(react, events)

        sampler.subscribe(on_sample)
        assert (await rig.manager.switch_to("qwen3-14b")).ok
        report = await runner.run()
        await asyncio.gather(*reactions)
        return report

    report = asyncio.run(run())
    assert report["ended_by"] == "policy"
    assert report["end_reason"] == ("the alert policy ('act') began switching qwen3-14b -> "
                                    "qwen3-8b, ending the soak of qwen3-14b")
    kinds = [(e["kind"], e["text"]) for e in report["events"]]  # type: ignore[attr-defined]
    assert any(k == "alert" and t.startswith("power_limit critical") for k, t in kinds), kinds
    assert kinds[-1][0] == "end"
    assert report["tokens"] > 0  # type: ignore[operator]
    assert rig.manager.active_model == "qwen3-8b"
    assert rig.history.recent()[0].reason == "alert"


def test_a_switch_by_the_user_ends_the_soak_and_is_not_undone(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    hw = load_monitoring_config().hardware_monitoring.model_copy(update={"interval_seconds": 0.1})
    sampler = Sampler([SerializedDevice(rig.gpu)], HostSampler(), hw)
    chat = ChatSession(rig.manager, Router(load_router_config(rig.catalog), rig.catalog),
                       rig.history, rig.probe)
    runner = SoakRunner(chat, sampler, SoakSettings(minutes=0.5, concurrency=2, prompt_tokens=8,
                                                    max_tokens=20, model="qwen3-14b"),
                        device_label=rig.gpu.name, simulated=True, clock=rig.clock)

    async def run() -> dict[str, object]:
        assert (await rig.manager.switch_to("qwen3-14b")).ok
        soak = asyncio.ensure_future(runner.run())
        await asyncio.sleep(0.3)
        assert runner.running
        assert (await rig.manager.switch_to("qwen3-8b", reason="manual")).ok
        return await soak

    report = asyncio.run(run())
    assert report["ended_by"] == "switched"
    assert report["end_reason"] == "a switch to qwen3-8b (manual) ended the soak of qwen3-14b"
    assert rig.manager.active_model == "qwen3-8b"
    assert [r.to_model for r in rig.history.recent()] == ["qwen3-8b", "qwen3-14b"]
