"""ChatSession: the router picks, the manager switches, the stream comes from the active engine,
tokens/s land in history."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.chat_session import ChatSession
from core.engine.base import ChatMessage, GenerationRequest
from core.models.catalog import load_catalog
from core.router import load_router_config
from core.router.selection import Router
from tests.core.manager_fakes import Rig, make_rig

FOUR_B = "qwen3-4b-instruct-2507"


def session(tmp_path: Path) -> tuple[ChatSession, Rig]:
    models = tmp_path / "models"
    # The router only picks models on disk: give the 4B a directory with its config.json.
    (models / FOUR_B).mkdir(parents=True)
    (models / FOUR_B / "config.json").write_text(json.dumps({
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "hidden_size": 2560, "intermediate_size": 9728, "vocab_size": 151936,
        "max_position_embeddings": 262144, "tie_word_embeddings": True}))
    catalog = load_catalog(models_dir=models)
    rig = make_rig(tmp_path, catalog=catalog)
    router = Router(load_router_config(catalog), catalog)
    return ChatSession(rig.manager, router, rig.history, rig.probe), rig


def request(n: int = 5) -> GenerationRequest:
    return GenerationRequest((ChatMessage("user", "Extract the title."),), max_tokens=n,
                             request_id="r1")


async def collect(chat: ChatSession, **kw: object) -> list[str]:
    return [d.text async for d in chat.generate(request(), **kw)]  # type: ignore[arg-type]


def test_auto_routes_switches_streams_and_records_throughput(tmp_path: Path) -> None:
    chat, rig = session(tmp_path)
    out = asyncio.run(collect(chat, model=None, task_type="simple_extraction"))
    assert out == [f"t{i} " for i in range(1, 6)]
    assert chat.last_decision is not None
    assert chat.last_decision.model_id == FOUR_B
    assert rig.manager.active_model == FOUR_B
    assert rig.history.recent()[0].reason == "router"
    [t] = rig.history.throughput()
    assert t.model == FOUR_B
    assert t.mean_tokens_per_s is not None


def test_named_model_is_switched_to_manually(tmp_path: Path) -> None:
    chat, rig = session(tmp_path)
    asyncio.run(collect(chat, model="qwen3-8b"))
    assert rig.manager.active_model == "qwen3-8b"
    assert rig.history.recent()[0].reason == "manual"
    assert "qwen3-8b" in chat.model_choices()
    assert "remote" not in chat.model_choices()


def test_router_sees_the_active_models_memory_as_free(tmp_path: Path) -> None:
    chat, rig = session(tmp_path)
    before = chat.hardware_state().free_bytes
    asyncio.run(rig.manager.switch_to("qwen3-14b"))
    assert chat.hardware_state().free_bytes == before


def test_route_only_decides_on_assumed_values_without_switching(tmp_path: Path) -> None:
    chat, rig = session(tmp_path)
    measured = chat.route_only("x", "complex_reasoning")
    assert measured.hardware.assumed == ()
    what_if = chat.route_only("x", "complex_reasoning", free_bytes=int(9.5 * 1024**3),
                              temperature_c=50.0)
    assert what_if.hardware.assumed == ("free_bytes", "temperature_c")
    assert what_if.hardware.total_bytes == measured.hardware.total_bytes
    assert what_if.candidates[0] == "qwen3-4b-thinking-2507"  # 8 <= 9.5 < 10, not below 0.7
    assert chat.last_decision is None  # a what-if is not the decision a reply was made on
    assert rig.manager.active_model is None
    with pytest.raises(ValueError, match="the device has"):
        chat.route_only("x", "complex_reasoning", free_bytes=measured.hardware.total_bytes + 1)
