"""Switch history and per-model throughput in SQLite (WAL), committed as each switch ends.

One row per switch (from, to, reason, per-phase durations, outcome, error) and one row per real
generation (tokens/s). Every write commits at once, so a crash loses nothing already recorded.
Queries feed the GUI and the manager's predicted switch durations. The same database holds the
routing log with its feedback (core/routing_log.py) and the model-state changes that uptime is
computed from (core/uptime.py); the schema of every table is here, with its migrations.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from core import paths
from core.engine.base import ENGINE_STARTS
from core.engine.load_phases import LOAD_PHASES
from core.manager.events import TIMED_PHASES

PHASE_COLUMNS = tuple(p.value for p in TIMED_PHASES)


class SwitchReason(StrEnum):
    """Why a switch ran (stored as its value)."""

    MANUAL = "manual"
    ROUTER = "router"
    ALERT = "alert"
    FALLBACK = "fallback"
    CRASH = "crash"  # the engine died on its own (outcome "crashed": exit code or signal)


class SwitchOutcome(StrEnum):
    """How a recorded switch ended (stored as its value)."""

    READY = "ready"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    UNLOADED = "unloaded"  # an emergency unload with nothing smaller to go to
    TIMED_OUT = "timed_out"  # the whole switch's deadline (switch_timeout_seconds) ran out


REASONS = tuple(SwitchReason)
OUTCOMES = tuple(SwitchOutcome)
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
    forced INTEGER NOT NULL DEFAULT 0,
    engine_start TEXT
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
                             "forced", "engine_start"])
# PRAGMA user_version: 1 added switches.forced; 2 the load_phases table (the breakdown of the
# loading phase: core.engine.load_phases, in _SCHEMA), the routing log with its feedback and the
# model-state changes of each app session (uptime, below); 3 switches.engine_start (how the load
# started its engine: core.engine.base.ENGINE_STARTS). An older file is brought up to date when
# opened; its rows keep their meaning (they simply have no load breakdown or start kind).
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS routed_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    request_id TEXT NOT NULL,
    task_type TEXT NOT NULL,
    complexity REAL NOT NULL,
    private INTEGER NOT NULL DEFAULT 0,
    free_bytes INTEGER,
    total_bytes INTEGER,
    temperature_c REAL,
    band TEXT,
    decided_model TEXT,
    answered_model TEXT,
    tokens INTEGER,
    tokens_per_s REAL,
    first_token_s REAL,
    outcome TEXT NOT NULL,
    verdict TEXT,
    wanted_model TEXT,
    feedback_at REAL
);
CREATE INDEX IF NOT EXISTS routed_requests_request ON routed_requests (request_id);
CREATE TABLE IF NOT EXISTS uptime_sessions (
    session TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    ended INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS model_states (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    model TEXT
);
CREATE INDEX IF NOT EXISTS model_states_session ON model_states (session, at);
"""
SCHEMA_VERSION = 3


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
    engine_start: str | None = None  # how the load started its engine (ENGINE_STARTS)

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
            self._migrate()
        except sqlite3.Error as exc:  # e.g. "file is not a database": refuse, never overwrite
            self._conn.close()
            raise HistoryStoreError(self.path, str(exc)) from None

    def _migrate(self) -> None:
        """Bring an older (or new, empty) database to SCHEMA_VERSION; rows already there stay.

        Version 0 is any database written before versions were kept (its `switches` table may
        lack the `forced` column). A newer version than ours is left as it is: its tables are a
        superset of what this code reads.
        """
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version >= SCHEMA_VERSION:
            return
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(switches)")}
        if "forced" not in columns:  # a history written before the column existed
            self._conn.execute(
                "ALTER TABLE switches ADD COLUMN forced INTEGER NOT NULL DEFAULT 0")
        if "engine_start" not in columns:
            self._conn.execute("ALTER TABLE switches ADD COLUMN engine_start TEXT")
        # One transaction: a crash in between leaves the old version, and the next open retries.
        self._conn.executescript(f"BEGIN; {_SCHEMA_V2} PRAGMA user_version = {SCHEMA_VERSION};"
                                 " COMMIT;")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # -- for the modules that own the other tables (routing log, uptime) ------------------------
    def write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one statement that changes rows and commit it; returns the last row id."""
        with self._lock:
            cur = self._conn.execute(sql, args)
            return int(cur.lastrowid or 0)

    def changed(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one UPDATE/DELETE and commit it; returns how many rows it changed."""
        with self._lock:
            return int(self._conn.execute(sql, args).rowcount)

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one SELECT."""
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes ---------------------------------------------------------------------------------
    def record_switch(self, *, from_model: str | None, to_model: str, reason: str, outcome: str,
                      total_s: float, phases: Mapping[str, float], error: str | None = None,
                      attempts: int = 1, started_at: float | None = None,
                      forced: bool = False, load_phases: Mapping[str, float] | None = None,
                      engine_start: str | None = None) -> int:
        """Store one finished switch and commit; returns its row id. load_phases: the breakdown
        of its loading phase (core.engine.load_phases names), stored with it; engine_start: how
        that load started its engine (ENGINE_STARTS), None when the engine does not say."""
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        unknown = set(phases) - set(PHASE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}")
        unknown = set(load_phases or {}) - set(LOAD_PHASES)
        if unknown:
            raise ValueError(f"unknown load phases {sorted(unknown)}")
        if engine_start is not None and engine_start not in ENGINE_STARTS:
            raise ValueError(f"engine_start must be one of {', '.join(ENGINE_STARTS)}, "
                             f"got {engine_start!r}")
        cols = ["started_at", "from_model", "to_model", "reason", "outcome", "error", "total_s",
                "attempts", *(f"{p}_s" for p in PHASE_COLUMNS), "forced", "engine_start"]
        values = [time.time() if started_at is None else started_at, from_model, to_model, reason,
                  outcome, error, total_s, attempts, *(phases.get(p) for p in PHASE_COLUMNS),
                  int(forced), engine_start]
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

    def last_ready_model(self) -> str | None:
        """The model the last successful switch made ready (start-up's "load the last model")."""
        with self._lock:
            row = self._conn.execute(
                "SELECT to_model FROM switches WHERE outcome = 'ready' ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return str(row[0]) if row is not None else None

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

    def predicted_phases(self, from_model: str | None, to_model: str, window: int = 10,
                         engine_start: str | None = None) -> dict[str, float]:
        """Median seconds of each switch phase and load phase in the latest successful switches
        of this pair (else of any switch to the target): what the ETA of the next one is made
        of. Empty without history. The median, so one switch slowed by a busy machine does not
        move the next prediction much.

        engine_start: how the next load will start its engine. Switches that started theirs the
        same way come first (a spawned load imports everything, a forked one nothing: their
        durations differ tenfold), then any switch of the pair or to the target."""
        cols = ", ".join(f"{c}_s" for c in PHASE_COLUMNS)
        pairs = (True, False) if from_model is not None else (False,)
        starts = (engine_start, None) if engine_start is not None else (None,)
        for start in starts:
            for pair in pairs:
                sql = f"SELECT id, {cols} FROM switches WHERE outcome = 'ready' AND to_model = ?"
                args: list[object] = [to_model]
                if pair:
                    sql += " AND from_model = ?"
                    args.append(from_model)
                if start is not None:
                    sql += " AND engine_start = ?"
                    args.append(start)
                with self._lock:
                    rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT ?",
                                              [*args, window]).fetchall()
                    breakdowns = self._load_phases([int(r[0]) for r in rows])
                if rows:
                    return self._medians(rows, breakdowns)
        return {}

    @staticmethod
    def _medians(rows: list[tuple[Any, ...]],
                 breakdowns: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
        samples: dict[str, list[float]] = {}
        for row in rows:
            for name, value in zip(PHASE_COLUMNS, row[1:], strict=True):
                if value is not None:
                    samples.setdefault(name, []).append(float(value))
            for name, value in breakdowns.get(int(row[0]), {}).items():
                samples.setdefault(name, []).append(value)
        return {name: statistics.median(v) for name, v in samples.items()}

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
        phase_values = rest[:len(PHASE_COLUMNS)]
        forced, engine_start = rest[len(PHASE_COLUMNS):]
        phases = {p: float(v) for p, v in zip(PHASE_COLUMNS, phase_values, strict=True)
                  if v is not None}
        return SwitchRecord(int(rid), float(started), from_model, str(to_model), str(reason),
                            str(outcome), error, float(total), int(attempts), phases,
                            bool(forced), dict(load_phases), engine_start)
