"""The SQLite switch history: rows committed at once, statistics, predictions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.history_store import HistoryStore, percentile


def test_rows_are_committed_as_written_and_wal_is_on(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.record_switch(from_model=None, to_model="a", reason="manual", outcome="ready",
                        total_s=3.0, phases={"loading": 2.5, "warming_up": 0.1})
    # Another connection (another process after a crash) sees the row without any close().
    other = sqlite3.connect(str(tmp_path / "h.sqlite3"))
    assert other.execute("SELECT to_model, loading_s FROM switches").fetchall() == [("a", 2.5)]
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    store.close()


def test_pair_stats_predictions_and_trend(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i, total in enumerate([1.0, 2.0, 3.0, 10.0]):
        store.record_switch(from_model="a", to_model="b", reason="router", outcome="ready",
                            total_s=total, phases={"loading": total / 2}, started_at=100.0 + i)
    store.record_switch(from_model="a", to_model="b", reason="manual", outcome="failed",
                        total_s=99.0, phases={}, error="boom")
    [pair] = store.pair_stats()
    assert (pair.count, pair.mean_s, pair.p95_s) == (4, 4.0, 10.0)
    assert store.predicted_duration("a", "b") == 4.0
    assert store.predicted_duration("c", "b") == 4.0  # no such pair: any switch to b
    assert store.predicted_duration(None, "zzz") is None
    assert store.predicted_phase("b", "loading") == 2.0
    assert [t for t, _ in store.trend("b")] == [100.0, 101.0, 102.0, 103.0]
    assert store.recent(1)[0].error == "boom"


def test_generation_throughput(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.record_generation("a", 10, 1.0, 0.1, 10.0)
    store.record_generation("a", 10, 1.0, 0.1, 20.0)
    [t] = store.throughput()
    assert (t.model, t.generations, t.mean_tokens_per_s) == ("a", 2, 15.0)


def test_bad_reason_or_phase_is_rejected(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    with pytest.raises(ValueError, match="reason"):
        store.record_switch(from_model=None, to_model="a", reason="whim", outcome="ready",
                            total_s=1, phases={})
    with pytest.raises(ValueError, match="phases"):
        store.record_switch(from_model=None, to_model="a", reason="manual", outcome="ready",
                            total_s=1, phases={"dancing": 1.0})


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


def test_history_cli_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from core.cli import main

    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    store = HistoryStore()
    store.record_switch(from_model="a", to_model="b", reason="alert", outcome="ready",
                        total_s=1.5, phases={"loading": 1.0})
    store.close()
    assert main(["history", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recent"][0]["reason"] == "alert"
    assert data["pairs"][0]["mean_s"] == 1.5
    assert main(["history"]) == 0
    assert "a -> b [alert] ready 1.50s" in capsys.readouterr().out


def test_last_ready_model_is_the_newest_ready_switch(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    assert store.last_ready_model() is None
    store.record_switch(from_model=None, to_model="a", reason="manual", outcome="ready",
                        total_s=1.0, phases={})
    store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                        total_s=1.0, phases={})
    store.record_switch(from_model="b", to_model="c", reason="manual", outcome="failed",
                        total_s=1.0, phases={}, error="boom")
    assert store.last_ready_model() == "b"  # a failed switch never becomes "the last model"
    store.close()


def test_enum_names_store_the_same_strings_as_before(tmp_path: Path) -> None:
    """Outcomes, reasons and phases are enums in code; the database keeps the plain strings."""
    from core.history_store import PHASE_COLUMNS, SwitchOutcome, SwitchReason

    assert PHASE_COLUMNS == ("planning", "unloading", "waiting_for_memory", "checking",
                             "loading", "warming_up")
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        store.record_switch(from_model=None, to_model="a", reason=SwitchReason.ALERT,
                            outcome=SwitchOutcome.TIMED_OUT, total_s=1.0,
                            phases={"loading": 0.5})
        store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                            total_s=2.0, phases={})
        with pytest.raises(ValueError, match="outcome must be one of ready, failed"):
            store.record_switch(from_model="a", to_model="b", reason="manual", outcome="done",
                                total_s=2.0, phases={})
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "h.sqlite3")
    rows = conn.execute("SELECT reason, outcome, typeof(outcome), loading_s FROM switches "
                        "ORDER BY id").fetchall()
    conn.close()
    assert rows == [("alert", "timed_out", "text", 0.5), ("manual", "ready", "text", None)]
