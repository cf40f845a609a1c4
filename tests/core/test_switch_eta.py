"""The ETA of a switch from the per-phase history of its pair, and the history that feeds it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.engine.base import LoadSpec
from core.engine.load_phases import LABELS
from core.history_store import SCHEMA_VERSION, HistoryStore
from core.manager.eta import SwitchEta
from core.manager.events import SwitchEvent, SwitchPhase
from tests.core.manager_fakes import RecordingEngine, make_rig

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
        assert (old.to_model, old.total_s, old.phases, old.forced, old.load_phases,
                old.engine_start) == ("b", 7.0, {"loading": 6.0}, False, {}, None)
        store.record_switch(from_model="b", to_model="a", reason="manual", outcome="ready",
                            total_s=2.0, phases={"loading": 1.5}, load_phases={"spawn": 0.1})
        assert store.recent()[0].load_phases == {"spawn": 0.1}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_the_eta_with_partial_history_counts_what_is_missing_as_nothing() -> None:
    eta = SwitchEta({"loading": 5.0, "warming_up": 1.0})
    assert eta.total == 6.0
    # The running phase has no history: nothing is left of it, only the later phases.
    assert eta.remaining("unloading", 0.5) == 6.0
    assert eta.remaining("checking", 0.0) == 6.0
    # Only a load breakdown, no switch phase: no prediction at all.
    assert SwitchEta({"imports": 3.0}).total is None
    assert SwitchEta({"imports": 3.0}).remaining("loading", 0.0, "imports") is None
    # A phase the switch does not time (none is passed today) leaves nothing to wait for.
    assert eta.remaining("ready", 1.0) == 0.0


def test_the_eta_inside_the_load_follows_the_load_phases() -> None:
    eta = SwitchEta(PRED)
    # Just entered kv_cache (the default: no time in it yet): kv_cache, handshake, warm-up.
    assert eta.remaining("loading", 10.0, "kv_cache") == pytest.approx(2.0 + 1.5 + 1.0)
    # A load phase running longer than predicted holds at what the later ones take.
    assert eta.remaining("loading", 30.0, "imports", 20.0) == pytest.approx(
        1.0 + 2.0 + 1.5 + 1.0)
    # A load phase without history (spawn): the loading phase's own prediction is used.
    assert eta.remaining("loading", 5.0, "spawn", 1.0) == pytest.approx(15.0 + 1.0)
    assert eta.remaining("loading", 5.0, None) == pytest.approx(15.0 + 1.0)


class PhasedEngine(RecordingEngine):
    """Reports its load's phases as it goes and the breakdown after, like VllmEngine."""

    STEPS = (("imports", 3.0), ("weights", 1.0), ("kv_cache", 0.5))

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.on_load_phase: Callable[[str], None] | None = None
        self.load_phases: dict[str, float] = {}

    async def load(self, spec: LoadSpec) -> None:
        for phase, seconds in self.STEPS:
            if self.on_load_phase is not None:
                self.on_load_phase(phase)
            self.clock.now += seconds
            self.load_phases[phase] = seconds
            await asyncio.sleep(0)
        await super().load(spec)


def test_a_switch_reports_its_load_phases_with_the_eta_and_keeps_the_breakdown(
        tmp_path: Path) -> None:
    rig = make_rig(tmp_path, engine_class=PhasedEngine)
    rig.script.load_seconds = 0.0

    def load_events() -> list[tuple[str, float | None]]:
        out = [(e.message, e.eta_s) for e in rig.events if isinstance(e, SwitchEvent)
               and e.phase is SwitchPhase.LOADING and ": " in e.message]
        rig.events.clear()
        return out

    async def run() -> None:
        await rig.manager.switch_to("demo-tiny-a")
        first = load_events()
        assert first == [(f"loading demo-tiny-a: {LABELS[p]}", None)
                         for p, _ in PhasedEngine.STEPS]  # no history yet: no ETA
        await rig.manager.unload()
        await rig.manager.switch_to("demo-tiny-a")

    asyncio.run(run())
    second = load_events()
    assert [m for m, _ in second] == [f"loading demo-tiny-a: {LABELS[p]}"
                                      for p, _ in PhasedEngine.STEPS]
    etas = [eta for _, eta in second]
    assert None not in etas
    # Each phase's start leaves what that phase took last time less to go.
    assert etas[0] - etas[1] == pytest.approx(3.0)
    assert etas[1] - etas[2] == pytest.approx(1.0)
    warm_up = rig.history.recent()[1].phases["warming_up"]
    assert etas[2] == pytest.approx(0.5 + warm_up)
    newest = rig.history.recent()[0]
    assert newest.load_phases == {"imports": 3.0, "weights": 1.0, "kv_cache": 0.5}
    assert newest.phases["loading"] == pytest.approx(4.5)
    # A phase reported after the load ended (a late log line) says nothing.
    engine = rig.engines[-1]
    assert engine.on_load_phase is not None
    engine.on_load_phase("handshake")
    assert load_events() == []


def test_the_eta_compares_loads_that_started_their_engine_the_same_way(tmp_path: Path) -> None:
    """A spawned load imports everything, a forked one nothing: the prediction for a forked
    load is made of forked loads (of the pair, else of any switch to the target), and only
    without any falls back to every start."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    try:
        def row(source: str, loading: float, start: str | None) -> None:
            store.record_switch(from_model=source, to_model="b", reason="manual",
                                outcome="ready", total_s=loading, phases={"loading": loading},
                                engine_start=start)

        row("a", 20.0, "spawned")
        row("a", 22.0, "spawned")
        row("a", 2.0, "forked")
        row("c", 3.0, "forked")
        row("c", 4.0, "forked")
        assert store.predicted_phases("a", "b", engine_start="forked") == {"loading": 2.0}
        assert store.predicted_phases("a", "b", engine_start="spawned") == {"loading": 21.0}
        assert store.predicted_phases("a", "b") == {"loading": 20.0}  # every start of the pair
        # No forked switch of this pair: forked switches to the target, not spawned ones.
        assert store.predicted_phases("x", "b", engine_start="forked") == {"loading": 3.0}
        # Nothing started that way at all: any switch of the pair.
        assert store.predicted_phases("a", "b", engine_start="forked_after_wait") == {
            "loading": 20.0}
        assert store.recent(1)[0].engine_start == "forked"
        with pytest.raises(ValueError, match="engine_start must be one of"):
            row("a", 1.0, "cloned")
        assert store.count() == 5
    finally:
        store.close()


class ForkingEngine(PhasedEngine):
    """Says how its load started, like VllmEngine: spawned first, forked after."""

    loads = 0

    async def load(self, spec: LoadSpec) -> None:
        await super().load(spec)
        self.engine_start = "spawned" if ForkingEngine.loads == 0 else "forked"
        ForkingEngine.loads += 1


def test_a_switch_records_how_its_engine_started_and_its_eta_uses_it(tmp_path: Path) -> None:
    ForkingEngine.loads = 0
    expected = {"start": "spawned"}
    rig = make_rig(tmp_path, engine_class=ForkingEngine,
                   expected_start=lambda entry: expected["start"])
    rig.script.load_seconds = 0.0

    def predicted() -> float | None:
        started = [e for e in rig.events if isinstance(e, SwitchEvent)
                   and e.phase is SwitchPhase.PLANNING]
        rig.events.clear()
        return started[0].predicted_total_s

    async def switch(steps: tuple[tuple[str, float], ...]) -> float | None:
        ForkingEngine.STEPS = steps
        await rig.manager.unload()
        rig.events.clear()
        await rig.manager.switch_to("demo-tiny-a")
        return predicted()

    slow = (("imports", 20.0), ("weights", 1.0))
    fast = (("imports", 0.5), ("weights", 1.0))
    try:
        assert asyncio.run(switch(slow)) is None  # no history
        expected["start"] = "forked"
        # No forked load yet: the spawned one is all there is.
        assert asyncio.run(switch(fast)) == pytest.approx(rig.history.recent()[1].total_s)
        assert [r.engine_start for r in rig.history.recent(2)] == ["forked", "spawned"]
        fast_total = rig.history.recent()[0].total_s
        assert asyncio.run(switch(fast)) == pytest.approx(fast_total)  # not the spawned 21 s
        expected["start"] = "spawned"  # the app restarted: the next load imports again
        assert asyncio.run(switch(slow)) == pytest.approx(
            next(r for r in rig.history.recent() if r.engine_start == "spawned").total_s)
    finally:
        ForkingEngine.STEPS = PhasedEngine.STEPS


def test_the_eta_inside_the_load_counts_the_very_next_load_phase() -> None:
    eta = SwitchEta({"loading": 6.0, "imports": 3.0, "model_init": 2.0, "weights": 1.0})
    assert eta.remaining("loading", 0.0, "imports", 0.0) == pytest.approx(3.0 + 2.0 + 1.0)
    assert eta.remaining("loading", 3.0, "model_init", 0.5) == pytest.approx(1.5 + 1.0)


def phased_rig_with_history(tmp_path: Path) -> Any:
    """A rig whose last load of demo-tiny-a took imports 3 s, weights 1 s, kv_cache 0.5 s
    (loading 4.5 s) and a 1 s warm-up."""
    rig = make_rig(tmp_path, engine_class=PhasedEngine)
    rig.script.load_seconds = 0.0
    rig.history.record_switch(from_model=None, to_model="demo-tiny-a", reason="manual",
                              outcome="ready", total_s=5.5,
                              phases={"loading": 4.5, "warming_up": 1.0},
                              load_phases={"imports": 3.0, "weights": 1.0, "kv_cache": 0.5})
    return rig


def loading_etas(rig: Any) -> dict[str, float | None]:
    return {e.message: e.eta_s for e in rig.events
            if isinstance(e, SwitchEvent) and e.phase is SwitchPhase.LOADING}


def test_a_load_running_late_predicts_from_the_load_phase_it_has_reached(
        tmp_path: Path) -> None:
    """The imports take 10 s this time, not 3: once the weights start, what is left is the
    weights, the KV cache and the warm-up of last time (2.5 s), not the 4.5 s load's
    prediction less the 10 s already spent."""
    rig = phased_rig_with_history(tmp_path)
    PhasedEngine.STEPS = (("imports", 10.0), ("weights", 1.0), ("kv_cache", 0.5))
    try:
        asyncio.run(rig.manager.switch_to("demo-tiny-a"))
    finally:
        PhasedEngine.STEPS = (("imports", 3.0), ("weights", 1.0), ("kv_cache", 0.5))
    etas = loading_etas(rig)
    assert etas[f"loading demo-tiny-a: {LABELS['imports']}"] == pytest.approx(3.0 + 1.5 + 1.0)
    assert etas[f"loading demo-tiny-a: {LABELS['weights']}"] == pytest.approx(1.0 + 0.5 + 1.0)


def test_a_retried_load_predicts_a_whole_load_again(tmp_path: Path) -> None:
    rig = phased_rig_with_history(tmp_path)
    rig.script.fail_next("demo-tiny-a", TimeoutError("slow"))  # after its three load phases
    asyncio.run(rig.manager.switch_to("demo-tiny-a"))
    said = [(e.attempt, e.message, e.eta_s) for e in rig.events
            if isinstance(e, SwitchEvent) and e.phase is SwitchPhase.LOADING]
    [retry] = [eta for attempt, message, eta in said if "(attempt 2" in message]
    assert retry == pytest.approx(4.5 + 1.0)  # the load from its start, then the warm-up
    # The retry's own load phases count from there, as the first attempt's did.
    imports = [eta for _, message, eta in said if message.endswith(LABELS["imports"])]
    assert imports == [pytest.approx(4.5 + 1.0)] * 2
