"""Switch history and per-model throughput in SQLite (WAL), committed as each switch ends.

One row per switch (from, to, reason, per-phase durations, outcome, error) and one row per real
generation (tokens/s). Every write commits at once, so a crash loses nothing already recorded.
Queries feed the GUI and the manager's predicted switch durations.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import paths
from core.engine.load_phases import LOAD_PHASES

PHASE_COLUMNS = ("planning", "unloading", "waiting_for_memory", "checking", "loading",
                 "warming_up")
# crash: the engine died on its own (outcome "crashed", the error says the exit code or signal).
REASONS = ("manual", "router", "alert", "fallback", "crash")
# unloaded: an emergency unload with nothing smaller to go to; timed_out: the switch's deadline
# (model_switching.switch_timeout_seconds, for the whole switch) ran out.
OUTCOMES = ("ready", "failed", "refused", "cancelled", "crashed", "unloaded", "timed_out")
# to_model of a row that left no model loaded (a crash, an emergency unload).
NO_MODEL = "(none)"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS switches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    from_model TEXT,
    to_model TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    total_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    {", ".join(f"{c}_s REAL" for c in PHASE_COLUMNS)},
    forced INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS switches_pair ON switches (from_model, to_model, outcome);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    elapsed_s REAL NOT NULL,
    first_token_s REAL,
    tokens_per_s REAL
);
CREATE INDEX IF NOT EXISTS generations_model ON generations (model);
CREATE TABLE IF NOT EXISTS load_phases (
    switch_id INTEGER NOT NULL REFERENCES switches (id),
    phase TEXT NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (switch_id, phase)
);
"""
# Named, not *: a migrated file's columns may stand in another order.
_SWITCH_COLUMNS = ", ".join(["id", "started_at", "from_model", "to_model", "reason", "outcome",
                             "error", "total_s", "attempts", *(f"{c}_s" for c in PHASE_COLUMNS),
                             "forced"])
# PRAGMA user_version: 1 added switches.forced, 2 the load_phases table (the breakdown of the
# loading phase: core.engine.load_phases). An older file is brought up to date when opened;
# its rows keep their meaning (they simply have no load breakdown).
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class SwitchRecord:
    """One finished switch as stored."""

    id: int
    started_at: float
    from_model: str | None
    to_model: str
    reason: str
    outcome: str
    error: str | None
    total_s: float
    attempts: int
    phases: Mapping[str, float]
    forced: bool = False  # the temperature/power gate was skipped (alert step-down, Switch anyway)
    load_phases: Mapping[str, float] = field(default_factory=dict)  # LOAD_PHASES order

    @property
    def reason_label(self) -> str:
        """The reason as shown: "alert, forced" when the gate was skipped."""
        return f"{self.reason}, forced" if self.forced else self.reason


@dataclass(frozen=True)
class PairStats:
    """Successful switch durations for one (from, to) pair."""

    from_model: str | None
    to_model: str
    count: int
    mean_s: float
    p95_s: float


@dataclass(frozen=True)
class ThroughputStats:
    model: str
    generations: int
    mean_tokens_per_s: float | None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class HistoryStoreError(ValueError):
    """The history database cannot be opened (not a database, unreadable, unwritable place)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"the switch history {path} cannot be opened ({problem}); move it "
                         "aside to start a new one")


class HistoryStore:
    """The SQLite history. Thread-safe (one connection behind a lock); use `close()` at exit."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else paths.history_db()
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                         isolation_level=None)  # autocommit: each write is durable
        except sqlite3.Error as exc:
            raise HistoryStoreError(self.path, str(exc)) from None
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # e.g. "file is not a database": refuse, never overwrite
            self._conn.close()
            raise HistoryStoreError(self.path, str(exc)) from None
        self._migrate()

    def _migrate(self) -> None:
        """Bring a history written by an older version up to SCHEMA_VERSION (the new table
        came with _SCHEMA's CREATE ... IF NOT EXISTS)."""
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version >= SCHEMA_VERSION:
            return
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(switches)")}
        if "forced" not in columns:  # a history written before the column existed
            self._conn.execute(
                "ALTER TABLE switches ADD COLUMN forced INTEGER NOT NULL DEFAULT 0")
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes ---------------------------------------------------------------------------------
    def record_switch(self, *, from_model: str | None, to_model: str, reason: str, outcome: str,
                      total_s: float, phases: Mapping[str, float], error: str | None = None,
                      attempts: int = 1, started_at: float | None = None,
                      forced: bool = False, load_phases: Mapping[str, float] | None = None
                      ) -> int:
        """Store one finished switch and commit; returns its row id. load_phases: the breakdown
        of its loading phase (core.engine.load_phases names), stored with it."""
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        unknown = set(phases) - set(PHASE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}")
        unknown = set(load_phases or {}) - set(LOAD_PHASES)
        if unknown:
            raise ValueError(f"unknown load phases {sorted(unknown)}")
        cols = ["started_at", "from_model", "to_model", "reason", "outcome", "error", "total_s",
                "attempts", *(f"{p}_s" for p in PHASE_COLUMNS), "forced"]
        values = [time.time() if started_at is None else started_at, from_model, to_model, reason,
                  outcome, error, total_s, attempts, *(phases.get(p) for p in PHASE_COLUMNS),
                  int(forced)]
        sql = f"INSERT INTO switches ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self._lock:
            self._conn.execute("BEGIN")  # the row and its breakdown commit together
            try:
                cur = self._conn.execute(sql, values)
                row_id = int(cur.lastrowid or 0)
                self._conn.executemany(
                    "INSERT INTO load_phases (switch_id, phase, seconds) VALUES (?, ?, ?)",
                    [(row_id, p, float(v)) for p, v in (load_phases or {}).items()])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return row_id

    def record_generation(self, model: str, tokens: int, elapsed_s: float,
                          first_token_s: float | None, tokens_per_s: float | None) -> None:
        """Store the throughput of one real generation."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO generations (at, model, tokens, elapsed_s, first_token_s, "
                "tokens_per_s) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), model, tokens, elapsed_s, first_token_s, tokens_per_s))

    # -- queries --------------------------------------------------------------------------------
    def recent(self, limit: int = 20) -> list[SwitchRecord]:
        """The latest switches, newest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_SWITCH_COLUMNS} FROM switches ORDER BY id DESC LIMIT ?",
                (limit,)).fetchall()
            breakdowns = self._load_phases([int(r[0]) for r in rows])
        return [self._record(row, breakdowns.get(int(row[0]), {})) for row in rows]

    def _load_phases(self, ids: list[int]) -> dict[int, dict[str, float]]:
        """The load breakdowns of these switches (call holding the lock)."""
        out: dict[int, dict[str, float]] = {}
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[start:start + 500]
            for switch_id, phase, seconds in self._conn.execute(
                    "SELECT switch_id, phase, seconds FROM load_phases WHERE switch_id IN "
                    f"({', '.join('?' * len(chunk))})", chunk):
                out.setdefault(int(switch_id), {})[str(phase)] = float(seconds)
        return {k: {p: v[p] for p in LOAD_PHASES if p in v} for k, v in out.items()}

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM switches").fetchone()[0])

    def pair_stats(self) -> list[PairStats]:
        """Mean and p95 of successful switch durations, per (from, to) pair."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT from_model, to_model, total_s FROM switches WHERE outcome = 'ready' "
                "ORDER BY id").fetchall()
        groups: dict[tuple[str | None, str], list[float]] = {}
        for from_model, to_model, total in rows:
            groups.setdefault((from_model, to_model), []).append(float(total))
        return [PairStats(f, t, len(v), sum(v) / len(v), percentile(v, 95))
                for (f, t), v in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))]

    def trend(self, to_model: str, from_model: str | None = None,
              limit: int = 50) -> list[tuple[float, float]]:
        """(started_at, total_s) of the latest successful switches to a model, oldest first."""
        sql = "SELECT started_at, total_s FROM switches WHERE outcome = 'ready' AND to_model = ?"
        args: list[object] = [to_model]
        if from_model is not None:
            sql += " AND from_model = ?"
            args.append(from_model)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [(float(a), float(b)) for a, b in reversed(rows)]

    def predicted_duration(self, from_model: str | None, to_model: str,
                           window: int = 10) -> float | None:
        """Mean of the latest successful switches of this pair, else of any switch to the target;
        None when there is no history yet."""
        for points in (self.trend(to_model, from_model, window) if from_model else [],
                       self.trend(to_model, None, window)):
            if points:
                return sum(p[1] for p in points) / len(points)
        return None

    def predicted_phase(self, to_model: str, phase: str, window: int = 10) -> float | None:
        """Mean duration of one phase in the latest successful switches to a model."""
        if phase not in PHASE_COLUMNS:
            raise ValueError(f"unknown phase {phase!r}")
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {phase}_s FROM switches WHERE outcome = 'ready' AND to_model = ? "
                f"AND {phase}_s IS NOT NULL ORDER BY id DESC LIMIT ?",
                (to_model, window)).fetchall()
        return sum(float(r[0]) for r in rows) / len(rows) if rows else None

    def predicted_phases(self, from_model: str | None, to_model: str,
                         window: int = 10) -> dict[str, float]:
        """Median seconds of each switch phase and load phase in the latest successful switches
        of this pair (else of any switch to the target): what the ETA of the next one is made
        of. Empty without history. The median, so one switch slowed by a busy machine does not
        move the next prediction much."""
        cols = ", ".join(f"{c}_s" for c in PHASE_COLUMNS)
        for pair in ((True, False) if from_model is not None else (False,)):
            sql = f"SELECT id, {cols} FROM switches WHERE outcome = 'ready' AND to_model = ?"
            args: list[object] = [to_model]
            if pair:
                sql += " AND from_model = ?"
                args.append(from_model)
            with self._lock:
                rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT ?",
                                          [*args, window]).fetchall()
                breakdowns = self._load_phases([int(r[0]) for r in rows])
            if not rows:
                continue
            samples: dict[str, list[float]] = {}
            for row in rows:
                for name, value in zip(PHASE_COLUMNS, row[1:], strict=True):
                    if value is not None:
                        samples.setdefault(name, []).append(float(value))
                for name, value in breakdowns.get(int(row[0]), {}).items():
                    samples.setdefault(name, []).append(value)
            return {name: statistics.median(v) for name, v in samples.items()}
        return {}

    def throughput(self) -> list[ThroughputStats]:
        """Mean measured tokens/s per model."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT model, COUNT(*), AVG(tokens_per_s) FROM generations GROUP BY model "
                "ORDER BY model").fetchall()
        return [ThroughputStats(m, int(n), None if avg is None else float(avg))
                for m, n, avg in rows]

    def _record(self, row: tuple[Any, ...], load_phases: Mapping[str, float]) -> SwitchRecord:
        (rid, started, from_model, to_model, reason, outcome, error, total, attempts,
         *rest) = row
        phase_values, forced = rest[:len(PHASE_COLUMNS)], rest[len(PHASE_COLUMNS)]
        phases = {p: float(v) for p, v in zip(PHASE_COLUMNS, phase_values, strict=True)
                  if v is not None}
        return SwitchRecord(int(rid), float(started), from_model, str(to_model), str(reason),
                            str(outcome), error, float(total), int(attempts), phases,
                            bool(forced), dict(load_phases))
