"""The ETA of a switch from the per-phase history of its pair, and the history that feeds it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.history_store import SCHEMA_VERSION, HistoryStore
from core.manager.eta import SwitchEta

PRED = {"planning": 0.01, "unloading": 5.0, "waiting_for_memory": 0.0, "checking": 0.01,
        "loading": 20.0, "warming_up": 1.0,
        "prepare": 0.5, "imports": 15.0, "weights": 1.0, "kv_cache": 2.0, "handshake": 1.5}


def test_the_eta_is_the_rest_of_the_phase_running_plus_every_later_phase() -> None:
    eta = SwitchEta(PRED)
    assert eta.total == pytest.approx(26.02)
    assert eta.remaining("unloading", 2.0) == pytest.approx(3.0 + 0.01 + 20.0 + 1.0)
    # A phase running longer than predicted holds the ETA at what the later phases take.
    assert eta.remaining("unloading", 9.0) == pytest.approx(21.01)
    # Inside the load, the load's own phases say what is left of it.
    assert eta.remaining("loading", 16.0, "weights", 0.25) == pytest.approx(
        0.75 + 2.0 + 1.5 + 1.0)
    assert eta.remaining("warming_up", 0.5) == pytest.approx(0.5)
    assert SwitchEta({}).remaining("loading", 1.0) is None
    assert SwitchEta({}).total is None


def test_predicted_phases_are_medians_of_the_pair_else_of_the_target(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        assert store.predicted_phases("a", "b") == {}
        for loading, imports in ((10.0, 8.0), (12.0, 9.0), (50.0, 40.0)):  # one very slow
            store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                                total_s=loading + 1, phases={"loading": loading,
                                                             "warming_up": 1.0},
                                load_phases={"imports": imports, "weights": 0.5})
        store.record_switch(from_model="c", to_model="b", reason="manual", outcome="ready",
                            total_s=3.0, phases={"loading": 3.0})
        store.record_switch(from_model="a", to_model="b", reason="manual", outcome="failed",
                            total_s=1.0, phases={"loading": 1.0})
        pair = store.predicted_phases("a", "b")
        assert pair == {"loading": 12.0, "warming_up": 1.0, "imports": 9.0, "weights": 0.5}
        assert store.predicted_phases("x", "b")["loading"] == pytest.approx(11.0)  # any to b
        assert store.recent(1)[0].load_phases == {}
        assert list(store.recent(5)[2].load_phases) == ["imports", "weights"]
        with pytest.raises(ValueError, match="unknown load phases"):
            store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                                total_s=1.0, phases={}, load_phases={"boot": 1.0})
        assert store.count() == 5  # the refused row was not written
    finally:
        store.close()


def test_an_old_history_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE switches (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL,
            from_model TEXT, to_model TEXT NOT NULL, reason TEXT NOT NULL, outcome TEXT NOT NULL,
            error TEXT, total_s REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 1,
            planning_s REAL, unloading_s REAL, waiting_for_memory_s REAL, checking_s REAL,
            loading_s REAL, warming_up_s REAL);
        INSERT INTO switches (started_at, from_model, to_model, reason, outcome, total_s,
            loading_s) VALUES (1.0, 'a', 'b', 'manual', 'ready', 7.0, 6.0);
    """)
    conn.commit()
    conn.close()
    store = HistoryStore(path)
    try:
        old = store.recent()[0]
        assert (old.to_model, old.total_s, old.phases, old.forced, old.load_phases) == (
            "b", 7.0, {"loading": 6.0}, False, {})
        store.record_switch(from_model="b", to_model="a", reason="manual", outcome="ready",
                            total_s=2.0, phases={"loading": 1.5}, load_phases={"spawn": 0.1})
        assert store.recent()[0].load_phases == {"spawn": 0.1}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
