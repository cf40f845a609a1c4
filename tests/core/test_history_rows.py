"""History rows round-trip through SQLite exactly, the predictions use the windows they promise,
and a history that cannot be opened is refused, never overwritten."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from core.history_store import (
    NO_MODEL,
    OUTCOMES,
    PHASE_COLUMNS,
    REASONS,
    HistoryStore,
    HistoryStoreError,
    SwitchRecord,
    ThroughputStats,
    percentile,
)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    s = HistoryStore(tmp_path / "h.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def test_a_row_comes_back_exactly_as_written(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    phases = {p: 0.5 + i for i, p in enumerate(PHASE_COLUMNS)}
    first = store.record_switch(from_model="qwen3-8b", to_model="qwen3-14b", reason="alert",
                                outcome="timed_out", total_s=12.25, phases=phases,
                                error="deadline", attempts=3, started_at=1234.5, forced=True)
    second = store.record_switch(from_model=None, to_model=NO_MODEL, reason="crash",
                                 outcome="crashed", total_s=0.0, phases={})
    assert (first, second) == (1, 2)
    store.close()
    reopened = HistoryStore(path)  # what was written is on disk, not only in the connection
    newest, oldest = reopened.recent()
    assert oldest == SwitchRecord(1, 1234.5, "qwen3-8b", "qwen3-14b", "alert", "timed_out",
                                  "deadline", 12.25, 3, phases, True)
    assert oldest.reason_label == "alert, forced"
    assert (newest.id, newest.from_model, newest.to_model, newest.reason, newest.outcome) == (
        2, None, NO_MODEL, "crash", "crashed")
    assert (newest.error, newest.attempts, newest.phases, newest.forced) == (None, 1, {}, False)
    assert newest.reason_label == "crash"
    assert abs(newest.started_at - time.time()) < 60  # stamped now when not given
    assert reopened.count() == 2
    assert [r.id for r in reopened.recent(1)] == [2]
    reopened.close()


def test_only_the_phases_given_are_stored(store: HistoryStore) -> None:
    store.record_switch(from_model=None, to_model="m", reason="manual", outcome="ready",
                        total_s=1.0, phases={"loading": 0.75, "planning": 0.0})
    [row] = store.recent()
    assert row.phases == {"planning": 0.0, "loading": 0.75}


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_is_accepted(store: HistoryStore, reason: str) -> None:
    store.record_switch(from_model=None, to_model="m", reason=reason, outcome="ready",
                        total_s=1.0, phases={})
    assert store.recent()[0].reason == reason


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_every_outcome_is_accepted(store: HistoryStore, outcome: str) -> None:
    store.record_switch(from_model=None, to_model="m", reason="manual", outcome=outcome,
                        total_s=1.0, phases={})
    assert store.recent()[0].outcome == outcome


def test_bad_values_name_themselves(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match=r"reason must be one of .* got 'whim'"):
        store.record_switch(from_model=None, to_model="m", reason="whim", outcome="ready",
                            total_s=1.0, phases={})
    with pytest.raises(ValueError, match=r"outcome must be one of .* got 'meh'"):
        store.record_switch(from_model=None, to_model="m", reason="manual", outcome="meh",
                            total_s=1.0, phases={})
    with pytest.raises(ValueError, match=r"unknown phases \['boot', 'zap'\]"):
        store.record_switch(from_model=None, to_model="m", reason="manual", outcome="ready",
                            total_s=1.0, phases={"zap": 1.0, "boot": 2.0, "loading": 1.0})
    with pytest.raises(ValueError, match="unknown phase 'boot'"):
        store.predicted_phase("m", "boot")
    assert store.count() == 0


def ready(store: HistoryStore, from_model: str | None, to_model: str, total: float,
          outcome: str = "ready", **phases: float) -> None:
    store.record_switch(from_model=from_model, to_model=to_model, reason="manual",
                        outcome=outcome, total_s=total, phases=phases, started_at=total)


def test_predicted_duration_prefers_the_pair_then_the_target(store: HistoryStore) -> None:
    assert store.predicted_duration("a", "b") is None
    ready(store, "x", "b", 40.0)
    ready(store, "x", "b", 20.0, outcome="failed")  # only successful switches count
    assert store.predicted_duration("a", "b") == 40.0  # no a -> b yet: any switch to b
    assert store.predicted_duration(None, "b") == 40.0
    ready(store, "a", "b", 10.0)
    ready(store, "a", "b", 14.0)
    assert store.predicted_duration("a", "b") == 12.0  # the pair's own mean
    assert store.predicted_duration(None, "b") == pytest.approx(64 / 3)
    assert store.predicted_duration("a", "c") is None


def test_predictions_use_the_latest_window(store: HistoryStore) -> None:
    for total in (100.0, *([10.0] * 10)):
        ready(store, "a", "b", total, loading=total / 2)
    assert store.predicted_duration("a", "b") == 10.0  # the 11th-newest is outside the window
    assert store.predicted_duration("a", "b", window=11) == pytest.approx(200 / 11)
    assert store.predicted_phase("b", "loading") == 5.0
    assert store.predicted_phase("b", "loading", window=11) == pytest.approx(100 / 11)
    assert store.predicted_phase("b", "warming_up") is None  # never recorded
    assert store.predicted_phase("a", "loading") is None
    ready(store, "a", "b", 7.0, outcome="refused", loading=1.0)
    assert store.predicted_phase("b", "loading") == 5.0  # a refusal is not a duration


def test_trend_is_oldest_first_per_target_and_pair(store: HistoryStore) -> None:
    ready(store, "a", "b", 1.0)
    ready(store, "c", "b", 2.0)
    ready(store, "a", "b", 3.0)
    ready(store, "a", "d", 4.0)
    ready(store, "a", "b", 5.0, outcome="failed")
    assert store.trend("b") == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert store.trend("b", "a") == [(1.0, 1.0), (3.0, 3.0)]
    assert store.trend("b", limit=2) == [(2.0, 2.0), (3.0, 3.0)]
    assert store.trend("z") == []


def test_pair_stats_sorted_with_the_initial_load_first(store: HistoryStore) -> None:
    ready(store, "b", "a", 4.0)
    ready(store, None, "b", 8.0)
    ready(store, "a", "b", 2.0)
    ready(store, "a", "b", 6.0)
    stats = store.pair_stats()
    assert [(s.from_model, s.to_model, s.count, s.mean_s, s.p95_s) for s in stats] == [
        (None, "b", 1, 8.0, 8.0), ("a", "b", 2, 4.0, 6.0), ("b", "a", 1, 4.0, 4.0)]


def test_throughput_per_model(store: HistoryStore) -> None:
    store.record_generation("b", 100, 2.0, 0.1, 50.0)
    store.record_generation("a", 10, 1.0, None, None)
    store.record_generation("b", 30, 1.0, 0.2, 30.0)
    assert store.throughput() == [ThroughputStats("a", 1, None), ThroughputStats("b", 2, 40.0)]


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([5.0], 95, 5.0), ([3.0, 1.0, 2.0], 0, 1.0), ([3.0, 1.0, 2.0], 50, 2.0),
    ([3.0, 1.0, 2.0], 100, 3.0), ([float(i) for i in range(1, 21)], 95, 19.0),
    ([float(i) for i in range(1, 21)], 96, 20.0),
])
def test_percentile_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_a_history_from_before_the_forced_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE switches (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL "
                 "NOT NULL, from_model TEXT, to_model TEXT NOT NULL, reason TEXT NOT NULL, "
                 "outcome TEXT NOT NULL, error TEXT, total_s REAL NOT NULL, attempts INTEGER "
                 "NOT NULL DEFAULT 1, " + ", ".join(f"{c}_s REAL" for c in PHASE_COLUMNS) + ")")
    conn.execute("INSERT INTO switches (started_at, from_model, to_model, reason, outcome, "
                 "total_s) VALUES (1.0, NULL, 'm', 'manual', 'ready', 3.0)")
    conn.commit()
    conn.close()
    store = HistoryStore(path)
    [old] = store.recent()
    assert (old.to_model, old.total_s, old.forced, old.attempts) == ("m", 3.0, False, 1)
    store.record_switch(from_model="m", to_model="n", reason="alert", outcome="ready",
                        total_s=1.0, phases={}, forced=True)
    assert store.recent()[0].forced is True
    store.close()


def test_a_file_that_is_not_a_database_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"not a database, just text " * 400)
    with pytest.raises(HistoryStoreError) as info:
        HistoryStore(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"the switch history {path} cannot be opened (file is "
                                      "not a database)")
    assert str(info.value).endswith("); move it aside to start a new one")
    assert path.read_bytes() == b"not a database, just text " * 400
    with pytest.raises(HistoryStoreError, match=r"cannot be opened \(unable to open database"):
        HistoryStore(tmp_path / "no-such-dir" / "h.sqlite3")


def test_the_default_path_is_in_the_data_directory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    store = HistoryStore()
    assert store.path.parent == tmp_path / "data"
    assert store.path.exists()
    store.close()


def test_the_initial_load_sorts_first_whatever_the_other_names(store: HistoryStore) -> None:
    # Upper-case names sort before lower-case ones (and before any placeholder text): the
    # initial load (no from model) still comes first.
    ready(store, "Mistral-7B", "b", 3.0)
    ready(store, None, "b", 5.0)
    ready(store, "A", "b", 1.0)
    assert [(s.from_model, s.to_model) for s in store.pair_stats()] == [
        (None, "b"), ("A", "b"), ("Mistral-7B", "b")]


def test_the_statements_of_the_other_tables_commit_and_say_what_they_did(
        tmp_path: Path, store: HistoryStore) -> None:
    """The routing log and uptime write through write/changed/query (their own tables)."""
    assert store.write("DELETE FROM model_states") == 0  # nothing inserted yet: no row id
    first = store.write("INSERT INTO uptime_sessions (session, started_at, last_seen) "
                        "VALUES (?, ?, ?)", ("s1", 1.0, 1.0))
    second = store.write("INSERT INTO uptime_sessions (session, started_at, last_seen) "
                         "VALUES ('s2', 2.0, 2.0)")
    assert (first, second) == (1, 2)  # the new rows' ids
    assert store.changed("UPDATE uptime_sessions SET last_seen = ? WHERE session = ?",
                         (5.0, "s1")) == 1
    assert store.changed("UPDATE uptime_sessions SET ended = 1") == 2
    assert store.changed("UPDATE uptime_sessions SET ended = 1 WHERE session = 'none'") == 0
    assert store.query("SELECT session, last_seen, ended FROM uptime_sessions WHERE "
                       "started_at > ? ORDER BY session", (0.5,)) == [("s1", 5.0, 1),
                                                                      ("s2", 2.0, 1)]
    assert store.query("SELECT COUNT(*) FROM uptime_sessions") == [(2,)]
    # Committed at once: another connection sees every change without a close().
    other = sqlite3.connect(tmp_path / "h.sqlite3")
    assert other.execute("SELECT session, last_seen, ended FROM uptime_sessions ORDER BY "
                         "session").fetchall() == [("s1", 5.0, 1), ("s2", 2.0, 1)]
    other.close()


def test_predicted_phases_use_the_latest_ten_switches(store: HistoryStore) -> None:
    store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                        total_s=101.0, phases={"loading": 100.0},
                        load_phases={"imports": 100.0})
    for loading in range(1, 11):
        store.record_switch(from_model="a", to_model="b", reason="manual", outcome="ready",
                            total_s=loading + 1.0, phases={"loading": float(loading)},
                            load_phases={"imports": float(loading)})
    # The median of 1..10; with the 11th-newest (100) it would be 6.
    assert store.predicted_phases("a", "b") == {"loading": 5.5, "imports": 5.5}
    assert store.predicted_phases(None, "b", window=11) == {"loading": 6.0, "imports": 6.0}


def test_trend_keeps_the_latest_fifty_by_default(store: HistoryStore) -> None:
    for i in range(51):
        ready(store, "a", "b", float(i + 1))
    points = store.trend("b")
    assert len(points) == 50
    assert points[0] == (2.0, 2.0)  # the oldest one is left out
    assert points[-1] == (51.0, 51.0)


def test_recent_gives_the_latest_twenty_by_default(store: HistoryStore) -> None:
    for i in range(21):
        ready(store, "a", "b", float(i + 1))
    rows = store.recent()
    assert len(rows) == 20
    assert (rows[0].total_s, rows[-1].total_s) == (21.0, 2.0)  # newest first, the oldest left out


def test_the_store_is_written_and_read_from_other_threads(tmp_path: Path) -> None:
    """The sampler, the engine's threads and the GUI share one store."""
    import threading

    store = HistoryStore(tmp_path / "h.sqlite3")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.record_generation("m", 10, 1.0, 0.1, 10.0)
            store.recent()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=write)
    worker.start()
    worker.join()
    assert errors == []
    assert [t.generations for t in store.throughput()] == [1]
    store.close()


def test_a_row_whose_breakdown_cannot_be_stored_is_not_half_written(tmp_path: Path) -> None:
    """The switch row and its load breakdown commit together: a breakdown SQLite refuses (NaN
    is stored as NULL, and seconds are NOT NULL) leaves neither, and the store works on."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    with pytest.raises(sqlite3.IntegrityError):
        store.record_switch(from_model=None, to_model="b", reason="manual", outcome="ready",
                            total_s=1.0, phases={}, load_phases={"spawn": float("nan")})
    assert store.count() == 0
    store.record_switch(from_model=None, to_model="b", reason="manual", outcome="ready",
                        total_s=1.0, phases={}, load_phases={"spawn": 0.5})
    assert [r.load_phases for r in store.recent()] == [{"spawn": 0.5}]
    store.close()


def test_breakdowns_of_more_switches_than_sqlite_binds_at_once(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i in range(1201):
        store.record_switch(from_model=None, to_model="b", reason="manual", outcome="ready",
                            total_s=1.0, phases={}, load_phases={"spawn": float(i)})
    rows = store.recent(1201)
    assert [r.load_phases["spawn"] for r in rows] == [float(i) for i in reversed(range(1201))]
    store.close()


def test_a_bad_reason_or_start_names_the_allowed_values(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    with pytest.raises(ValueError, match=r"^reason must be one of manual, router, alert, "
                                         r"fallback, crash, got 'bored'$"):
        store.record_switch(from_model=None, to_model="b", reason="bored", outcome="ready",
                            total_s=1.0, phases={})
    with pytest.raises(ValueError, match=r"^engine_start must be one of spawned, forked, "
                                         r"forked_after_wait, got 'x'$"):
        store.record_switch(from_model=None, to_model="b", reason="manual", outcome="ready",
                            total_s=1.0, phases={}, engine_start="x")
    store.close()


def test_predicted_duration_averages_the_latest_window_only(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for seconds in [100.0] * 5 + [10.0] * 10:
        store.record_switch(from_model=None, to_model="b", reason="manual", outcome="ready",
                            total_s=seconds, phases={})
    assert store.predicted_duration("a", "b") == pytest.approx(10.0)  # the last 10 switches
    assert store.predicted_duration(None, "b", window=15) == pytest.approx(40.0)
    store.close()
