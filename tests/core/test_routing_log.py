"""The routing log: every routed request is logged in the history database (real SQLite), the
user's verdict is stored against it, older databases are migrated, and bad input gets one
sentence."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from core.chat_session import ChatSession
from core.engine.base import ChatMessage, GenerationRequest
from core.history_store import SCHEMA_VERSION, HistoryStore, HistoryStoreError
from core.router import load_router_config
from core.router.selection import Router
from core.routing_log import FeedbackError, RoutingLog, tier_of
from core.routing_report import build_report
from tests.core.manager_fakes import Rig
from tests.core.test_chat_session import FOUR_B, session


def routed_session(tmp_path: Path, enabled: bool = True) -> tuple[ChatSession, Rig]:
    chat, rig = session(tmp_path)
    chat.routing_log = RoutingLog(rig.history, enabled=enabled)
    return chat, rig


def ask(chat: ChatSession, request_id: str, model: str | None = None,
        task_type: str = "simple_extraction", n: int = 5) -> list[str]:
    request = GenerationRequest((ChatMessage("user", "Extract the title."),), max_tokens=n,
                                request_id=request_id)

    async def run() -> list[str]:
        return [d.text async for d in chat.generate(request, model, task_type)]

    return asyncio.run(run())


def test_a_routed_request_is_logged_with_its_decision_hardware_and_throughput(
        tmp_path: Path) -> None:
    chat, rig = routed_session(tmp_path)
    ask(chat, "r-auto")
    row = chat.routed_request("r-auto")
    assert row is not None
    decision = chat.last_decision
    assert decision is not None
    assert (row.task_type, row.complexity, row.tier) == ("simple_extraction", decision.score,
                                                         "simple")
    assert (row.decided_model, row.answered_model, row.outcome) == (FOUR_B, FOUR_B, "answered")
    assert row.free_bytes == decision.hardware.free_bytes
    assert row.total_bytes == decision.hardware.total_bytes
    assert row.band == decision.band
    assert row.tokens == 5
    assert row.tokens_per_s is not None
    assert row.tokens_per_s > 0
    # Another connection (another process) sees the row: it is committed as written.
    other = sqlite3.connect(str(rig.history.path))
    assert other.execute("SELECT request_id, outcome FROM routed_requests").fetchall() == [
        ("r-auto", "answered")]
    other.close()


def test_a_named_model_is_not_a_routed_request(tmp_path: Path) -> None:
    chat, _rig = routed_session(tmp_path)
    ask(chat, "r-named", model="qwen3-8b")
    assert chat.routed_request("r-named") is None
    with pytest.raises(FeedbackError, match="only requests the router decided are logged"):
        chat.give_feedback("r-named", "good")


def test_a_reply_stopped_early_is_logged_as_stopped(tmp_path: Path) -> None:
    chat, _rig = routed_session(tmp_path)
    request = GenerationRequest((ChatMessage("user", "x"),), max_tokens=50, request_id="r-stop")

    async def first_two() -> None:
        stream = chat.generate(request, None, "complex_reasoning")
        async for delta in stream:
            if delta.tokens >= 2:
                break
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(first_two())
    row = chat.routed_request("r-stop")
    assert row is not None
    assert row.outcome == "stopped"
    assert row.tokens == 2
    assert row.tier == "complex"


def test_track_routing_off_logs_nothing_and_feedback_says_why(tmp_path: Path) -> None:
    chat, rig = routed_session(tmp_path, enabled=False)
    ask(chat, "r-off")
    assert rig.history.query("SELECT COUNT(*) FROM routed_requests") == [(0,)]
    with pytest.raises(FeedbackError, match=r"performance_tracking\.track_routing"):
        chat.give_feedback("r-off", "good")


def test_feedback_is_stored_against_the_request_and_bad_input_is_refused(
        tmp_path: Path) -> None:
    chat, rig = routed_session(tmp_path)
    ask(chat, "r1")
    ask(chat, "r2")
    good = chat.give_feedback("r1", "good")
    assert (good.verdict, good.wanted_model, good.router_right) == ("good", FOUR_B, True)
    wrong = chat.give_feedback("r2", "wrong_model", "qwen3-14b")
    assert (wrong.verdict, wrong.wanted_model, wrong.router_right) == ("wrong_model",
                                                                      "qwen3-14b", False)
    with pytest.raises(FeedbackError, match=r"unknown model 'gpt-9'.*known models: .*qwen3-8b"):
        chat.give_feedback("r1", "wrong_model", "gpt-9")
    with pytest.raises(FeedbackError, match="needs the model that should have answered"):
        chat.give_feedback("r1", "wrong_model")
    with pytest.raises(FeedbackError, match="is the model that answered"):
        chat.give_feedback("r1", "wrong_model", FOUR_B)
    with pytest.raises(FeedbackError, match="verdict must be one of good, wrong_model"):
        chat.give_feedback("r1", "meh")
    with pytest.raises(FeedbackError, match="no routed request 'nope'"):
        chat.give_feedback("nope", "good")
    # Refused feedback changed nothing.
    assert chat.routed_request("r1").verdict == "good"  # type: ignore[union-attr]
    report = build_report(rig.history).as_dict()
    assert report["rated"] == 2
    assert report["accuracy"] == 0.5
    assert report["by_task_type"] == [{"task_type": "simple_extraction", "logged": 2,
                                       "rated": 2, "right": 1, "accuracy": 0.5}]
    assert report["confusion"] == [{"answered": FOUR_B, "wanted": "qwen3-14b", "count": 1},
                                   {"answered": FOUR_B, "wanted": FOUR_B, "count": 1}]


def test_tiers_follow_the_records_complexity_levels() -> None:
    # The record's task types, scored alone: its comments put them in these tiers.
    assert [tier_of(s) for s in (0.1, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9, 1.0)] == [
        "simple", "standard", "standard", "standard", "complex", "complex", "expert", "expert"]


def test_task_distribution_by_tier_against_the_estimate(tmp_path: Path) -> None:
    chat, rig = routed_session(tmp_path)
    for i, task in enumerate(("simple_extraction", "simple_extraction", "standard_parsing",
                              "complex_reasoning")):
        ask(chat, f"t{i}", task_type=task, n=2)
    tiers = {t["tier"]: t for t in build_report(rig.history).as_dict()["tiers"]}
    assert {k: v["count"] for k, v in tiers.items()} == {
        "simple": 2, "standard": 1, "complex": 1, "expert": 0}
    assert tiers["simple"]["share"] == 0.5
    assert {k: v["estimate"] for k, v in tiers.items()} == {
        "simple": 0.40, "standard": 0.35, "complex": 0.20, "expert": 0.05}


def _version_1_database(path: Path) -> None:
    """A history written before schema versions and the routing log existed."""
    conn = sqlite3.connect(str(path))
    conn.executescript("""
        CREATE TABLE switches (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL,
            from_model TEXT, to_model TEXT NOT NULL, reason TEXT NOT NULL,
            outcome TEXT NOT NULL, error TEXT, total_s REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1, planning_s REAL, unloading_s REAL,
            waiting_for_memory_s REAL, checking_s REAL, loading_s REAL, warming_up_s REAL);
        CREATE TABLE generations (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
            model TEXT NOT NULL, tokens INTEGER NOT NULL, elapsed_s REAL NOT NULL,
            first_token_s REAL, tokens_per_s REAL);
        INSERT INTO switches (started_at, to_model, reason, outcome, total_s, loading_s)
            VALUES (100.0, 'demo-tiny-a', 'manual', 'ready', 21.5, 20.0);
    """)
    conn.commit()
    conn.close()


def test_an_older_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _version_1_database(path)
    store = HistoryStore(path)
    assert store.schema_version == SCHEMA_VERSION
    [old] = store.recent()
    assert (old.to_model, old.total_s, old.forced) == ("demo-tiny-a", 21.5, False)
    log = RoutingLog(store)
    assert log.all() == []
    store.close()
    # Opening it again (already migrated) changes nothing.
    again = HistoryStore(path)
    assert again.count() == 1
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def test_a_corrupt_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(HistoryStoreError, match=r"cannot be opened \(file is not a database\)"):
        HistoryStore(path)
    assert path.read_bytes() == before


def test_the_records_key_turns_routing_logging_off(tmp_path: Path) -> None:
    from core.runtime import Runtime

    config = tmp_path / "tracking.yaml"
    config.write_text("performance_tracking:\n  track_task_routing_accuracy: false\n"
                      "  track_model_efficiency: false\n")
    runtime = Runtime.create(config_file=config, simulate="rtx4090-laptop",
                             history_path=tmp_path / "h.sqlite3")
    try:
        assert runtime.chat.routing_log is not None
        assert runtime.chat.routing_log.enabled is False
        assert runtime.chat._track_tokens_per_s is False
    finally:
        runtime.history_store.close()
        for device in runtime.devices:
            device.close()
    default = Runtime.create(simulate="rtx4090-laptop", history_path=tmp_path / "d.sqlite3")
    try:
        assert default.chat.routing_log is not None
        assert default.chat.routing_log.enabled
    finally:
        default.history_store.close()
        for device in default.devices:
            device.close()


def test_track_tokens_per_s_off_keeps_no_generation_rows(tmp_path: Path) -> None:
    chat, rig = session(tmp_path)
    quiet = ChatSession(rig.manager, Router(load_router_config(rig.catalog), rig.catalog),
                        rig.history, rig.probe, track_tokens_per_s=False)
    ask(quiet, "q1", model=FOUR_B)
    assert rig.history.throughput() == []
    ask(chat, "q2", model=FOUR_B)
    assert [t.generations for t in rig.history.throughput()] == [1]


def test_history_routing_cli_text_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from core.cli import main

    chat, rig = routed_session(tmp_path)  # its database is <tmp>/history.sqlite3
    ask(chat, "c1")
    ask(chat, "c2", task_type="complex_reasoning")
    chat.give_feedback("c1", "good")
    chat.give_feedback("c2", "wrong_model", "qwen3-14b")
    rig.history.close()
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    assert main(["history", "--routing", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["database"] == str(tmp_path / "history.sqlite3")
    assert (data["requests"], data["rated"], data["accuracy"]) == (2, 2, 0.5)
    by_task = {t["task_type"]: t["accuracy"] for t in data["by_task_type"]}
    assert by_task == {"complex_reasoning": 0.0, "simple_extraction": 1.0}
    assert main(["history", "--routing"]) == 0
    text = capsys.readouterr().out
    assert "2 routed requests logged, 2 rated; router right: 50 %" in text
    assert f"{FOUR_B} -> qwen3-14b: 1  (wrong model)" in text
    assert "simple     50 % (1)  estimate 40 %" in text
