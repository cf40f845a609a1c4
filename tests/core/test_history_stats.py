"""The history's statistics the GUI and the manager read: per-pair means and p95, the nearest-rank
percentile, per-phase predictions (the switch-time prediction itself is in
test_safety_boundaries.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.history_store import HistoryStore, PairStats, percentile


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(v) for v in range(1, 21)], 95) == 19.0
    assert percentile([float(v) for v in range(1000)], 100) == 999.0  # p100 is the maximum
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0  # rank at least 1, of the sorted values


def test_pair_stats_per_pair_sorted_and_only_ready(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        rows = [("b", "c", 2.0, "ready"), ("a", "c", 10.0, "ready"), (None, "c", 6.0, "ready"),
                ("a", "c", 12.0, "ready"), ("a", "c", 50.0, "failed"), ("a", "b", 1.0, "ready")]
        for from_model, to_model, total, outcome in rows:
            store.record_switch(from_model=from_model, to_model=to_model, reason="manual",
                                outcome=outcome, total_s=total, phases={})
        assert store.pair_stats() == [
            PairStats(None, "c", 1, 6.0, 6.0),
            PairStats("a", "b", 1, 1.0, 1.0),
            PairStats("a", "c", 2, 11.0, 12.0),
            PairStats("b", "c", 1, 2.0, 2.0),
        ]
    finally:
        store.close()


def test_pair_p95_over_many_switches(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        for total in range(1, 101):
            store.record_switch(from_model="a", to_model="b", reason="router", outcome="ready",
                                total_s=float(total), phases={})
        [stats] = store.pair_stats()
        assert (stats.count, stats.mean_s, stats.p95_s) == (100, 50.5, 95.0)
    finally:
        store.close()


def test_predicted_phase(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        assert store.predicted_phase("b", "loading") is None  # no history yet
        for loading, outcome in ((4.0, "ready"), (6.0, "ready"), (60.0, "failed")):
            store.record_switch(from_model="a", to_model="b", reason="manual", outcome=outcome,
                                total_s=loading + 1, phases={"loading": loading})
        store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                            total_s=1.0, phases={"planning": 0.5})  # no loading phase recorded
        assert store.predicted_phase("b", "loading") == 5.0
        assert store.predicted_phase("b", "loading", window=1) == 6.0
        assert store.predicted_phase("other", "loading") is None
        with pytest.raises(ValueError, match="unknown phase 'boot'"):
            store.predicted_phase("b", "boot")
    finally:
        store.close()
