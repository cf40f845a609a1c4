"""Hardware-aware model selection: temperature and free-VRAM bands, each with its rules.

A decision takes a complexity score and the device's state, picks the configured preference list,
and chooses the first candidate that an engine here can load, that is on disk and that fits free
memory (with the buffer and at least a minimum context). After the preferred models come the smaller
models of the cascade, then the local tier (models built on this machine), then the remote endpoint
(when configured and the task is not private). Nothing usable: the decision's model is None.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core import paths
from core.models.catalog import Catalog, ModelEntry
from core.models.estimator import Estimate, Estimator, fit_footprint, fmt_bytes
from core.router.complexity import Complexity, ComplexityAnalyzer
from core.router.config import RouterConfig, SelectionRule
from core.units import GIB

# Engines this app drives. llama.cpp entries (GGUF) are listed in the catalog, not loadable here.
LOADABLE_ENGINES = frozenset({"vllm", "remote"})


@dataclass(frozen=True)
class HardwareState:
    """The device state a decision is made against (bytes; temperature None when unknown)."""

    free_bytes: int
    total_bytes: int
    temperature_c: float | None = None
    label: str = ""  # e.g. "simulated rtx4090-laptop" or "host RAM"
    host_memory: bool = False  # True: the CPU engine's host RAM, not a GPU
    # Fields given by the user for a what-if decision ("free_bytes", "temperature_c"), not measured.
    assumed: tuple[str, ...] = ()

    def assume(self, free_bytes: int | None = None,
               temperature_c: float | None = None) -> HardwareState:
        """This state with the given values put in place of the measured ones, marked assumed."""
        state, assumed = self, list(self.assumed)
        if free_bytes is not None:
            state = dataclasses.replace(state, free_bytes=free_bytes)
            assumed.append("free_bytes")
        if temperature_c is not None:
            state = dataclasses.replace(state, temperature_c=temperature_c)
            assumed.append("temperature_c")
        return dataclasses.replace(state, assumed=tuple(dict.fromkeys(assumed)))


@dataclass(frozen=True)
class Rejection:
    """A candidate that was not chosen, and why. kind is a stable code for the GUI and tests."""

    model_id: str
    kind: str  # disabled | engine | not_on_disk | does_not_fit | private | remote_off
    reason: str


@dataclass(frozen=True)
class RoutingDecision:
    """The chosen model (None: nothing usable) and everything that led to it."""

    model_id: str | None
    complexity: Complexity
    hardware: HardwareState
    private: bool
    hot: bool
    band: str
    rule: str
    candidates: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    estimate: Estimate | None = None  # the chosen local model fitted to free memory
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def score(self) -> float:
        return self.complexity.score

    @property
    def factors(self) -> tuple[tuple[str, float], ...]:
        return tuple((f.name, f.contribution) for f in self.complexity.factors)

    def explain(self) -> str:
        """A multi-line explanation: factors, hardware state, rule, candidates rejected and why."""
        c = self.complexity
        lines = [f"Chosen model: {self.model_id or 'none (no candidate is usable)'}"]
        lines.append(f"Complexity {c.score:.2f} for task type {c.task_type!r}, "
                     f"{c.chars:,} characters:")
        lines.extend(f"  {f.contribution:+.2f}  {f.name}: {f.detail}" for f in c.factors)
        hw = self.hardware
        temp = "temperature unknown" if hw.temperature_c is None else _celsius(hw.temperature_c)
        where = f" ({hw.label})" if hw.label else ""
        lines.append(f"Hardware{where}: {fmt_bytes(hw.free_bytes)} free of "
                     f"{fmt_bytes(hw.total_bytes)}, {temp}")
        if hw.assumed:
            what = {"free_bytes": f"{fmt_bytes(hw.free_bytes)} free", "temperature_c": temp}
            lines.append("  what-if: assumed, not measured: "
                         + ", ".join(what[a] for a in hw.assumed))
        lines.append(f"  selection: {self.band}; {self.rule}")
        lines.extend(f"  note: {n}" for n in self.notes)
        # Never empty: every rule prefers at least one model (SelectionRule.prefer).
        lines.append("Candidates in order: " + ", ".join(self.candidates))
        lines.extend(f"  rejected {r.model_id}: {r.reason}" for r in self.rejected)
        if self.model_id is not None:
            if self.estimate is not None:
                e = self.estimate
                lines.append(f"  chosen {self.model_id}: context {e.context_tokens} tokens, "
                             f"gpu_memory_utilization {e.gpu_memory_utilization}, "
                             f"needs {fmt_bytes(e.total_bytes)}")
            else:
                lines.append(f"  chosen {self.model_id}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        c = self.complexity
        return {
            "model": self.model_id,
            "complexity": c.score, "raw_complexity": c.raw_score, "capped": c.capped,
            "task_type": c.task_type, "task_type_known": c.task_type_known, "chars": c.chars,
            "factors": [{"name": f.name, "contribution": f.contribution, "detail": f.detail}
                        for f in c.factors],
            "hardware": {"free_bytes": self.hardware.free_bytes,
                         "total_bytes": self.hardware.total_bytes,
                         "temperature_c": self.hardware.temperature_c,
                         "label": self.hardware.label,
                         "assumed": list(self.hardware.assumed)},
            "private": self.private, "hot": self.hot, "band": self.band, "rule": self.rule,
            "candidates": list(self.candidates),
            "rejected": [{"model": r.model_id, "kind": r.kind, "reason": r.reason}
                         for r in self.rejected],
            "estimate": self.estimate.as_dict() if self.estimate else None,
            "notes": list(self.notes),
            "explanation": self.explain(),
        }


def _celsius(t: float) -> str:
    """80.5 C stays 80.5 C (it is above an 80 C line), 41.53 C reads 41.5 C."""
    return f"{round(t, 1):g} C"


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _first_rule(rules: tuple[SelectionRule, ...], score: float, free_bytes: int) -> SelectionRule:
    for rule in rules:
        if rule.applies(score, free_bytes):
            return rule
    # Unreachable: the config guarantees a catch-all last rule.
    raise AssertionError("the last rule has no condition")  # pragma: no mutate


def _rule_text(rule: SelectionRule, score: float) -> str:
    """Which row of the table applied, with the score it compared."""
    why = " and ".join(rule.conditions) if rule.conditions else "no rule above it applies"
    return f"complexity {score:.2f}; rule: {why} -> prefer {', '.join(rule.prefer)}"


class Router:
    """Routes tasks to models. Build once (it precomputes), call `route` per task."""

    def __init__(self, config: RouterConfig, catalog: Catalog, *,
                 estimator: Estimator | None = None,
                 loadable_engines: frozenset[str] = LOADABLE_ENGINES) -> None:
        self.config = config
        self.catalog = catalog  # the setter below builds what is derived from it
        self.estimator = estimator if estimator is not None else Estimator(self.catalog)
        self.loadable_engines = loadable_engines
        self.analyzer = ComplexityAnalyzer(config.complexity)
        sel = config.selection
        self._buffer = int(sel.buffer_gib * GIB)
        # Bands with their explanation text and bounds in bytes, built once.
        last_bound = sel.vram_bands[-2].below_gib if len(sel.vram_bands) > 1 else 0
        self._bands = tuple(
            (None if b.below_gib is None else int(b.below_gib * GIB),
             f"< {b.below_gib:g} GiB" if b.below_gib is not None else f">= {last_bound:g} GiB",
             b.rules)
            for b in sel.vram_bands)

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @catalog.setter
    def catalog(self, catalog: Catalog) -> None:
        """A new catalog (a model added or found on disk): what is derived from it is rebuilt
        here, so a decision never sees entries of the catalog before."""
        if catalog.models_dir is None:
            # Resolve the models directory once, not per candidate per decision.
            catalog = Catalog(catalog.entries, paths.models_dir(), catalog.sources)
        self._catalog = catalog
        self._remote = tuple(e for e in catalog.entries if e.is_remote)
        # One os.stat per candidate per decision: config.json paths resolved once, as strings.
        self._dirs = {e.id: str(catalog.local_path(e)) for e in catalog.entries
                      if not e.is_remote}
        self._config_json = {i: os.path.join(d, "config.json") for i, d in self._dirs.items()}
        # Rejections that depend only on the entry are built once and reused (they are frozen).
        self._not_on_disk = {i: Rejection(i, "not_on_disk", f"not on disk (no config.json in {d})")
                             for i, d in self._dirs.items()}

    def set_buffer_gib(self, gib: float) -> None:
        """The memory kept free under a candidate (the settings dialog changes it live)."""
        self.config = self.config.model_copy(update={
            "selection": self.config.selection.model_copy(update={"buffer_gib": gib})})
        self._buffer = int(gib * GIB)

    # -- pieces, public so tests and the GUI can ask them separately --

    def preference(self, score: float, hardware: HardwareState) -> tuple[bool, str, str,
                                                                         tuple[str, ...]]:
        """(hot, band text, rule text, preferred ids) for a score on this hardware: the table."""
        hot = self.config.selection.hot
        t = hardware.temperature_c
        free = hardware.free_bytes
        if t is not None and t > hot.above_temperature_c:
            rule = _first_rule(hot.rules, score, free)
            return (True, f"hot: {_celsius(t)} > {_celsius(hot.above_temperature_c)}",
                    _rule_text(rule, score), rule.prefer)
        for bound, band_label, rules in self._bands:
            if bound is None or free < bound:
                rule = _first_rule(rules, score, free)
                return (False, f"free {fmt_bytes(free)} {band_label}",
                        _rule_text(rule, score), rule.prefer)
        # Unreachable: SelectionConfig guarantees an unbounded last band.
        raise AssertionError("the last band has no bound")  # pragma: no mutate

    def candidates(self, preferred: tuple[str, ...]) -> tuple[str, ...]:
        """Preferred ids, then the cascade below the first preferred one, then the local tier."""
        sel = self.config.selection
        cascade = sel.cascade
        after: tuple[str, ...] = cascade
        positions = [cascade.index(p) for p in preferred if p in cascade]
        if positions:
            after = cascade[min(positions) + 1:]
        return _unique((*preferred, *after, *sel.local_tier))

    def check(self, entry: ModelEntry, hardware: HardwareState,
              private: bool) -> Rejection | Estimate | None:
        """Why entry can't be used now (a Rejection), else its fitted Estimate (None: remote)."""
        if entry.is_remote:
            if private:
                return Rejection(entry.id, "private", "the task is private: it must not leave "
                                 "this machine")
            if not entry.enabled or not entry.base_url:
                return Rejection(entry.id, "remote_off", "no remote endpoint configured "
                                 "(set remote.base_url and remote.model in your config)")
            return None
        if not entry.enabled:
            return Rejection(entry.id, "disabled", "disabled in the configuration")
        if entry.engine not in self.loadable_engines:
            engines = ", ".join(sorted(self.loadable_engines))
            return Rejection(entry.id, "engine",
                             f"{entry.quantization.upper()} weights need {entry.engine}; "
                             f"this app loads models with {engines}")
        mtime = self._config_mtime(entry)
        if mtime is None:
            return self._not_on_disk[entry.id]
        fp = self.estimator.footprint_at(entry, mtime)
        est = fit_footprint(fp, hardware.total_bytes, hardware.free_bytes, self._buffer,
                            wanted=entry.default_context, settings=self.estimator.settings)
        need = min(self.config.selection.min_context_tokens, fp.max_position,
                   entry.default_context or fp.max_position)
        if not est.fits or est.context_tokens < need:
            why = est.reason if not est.fits else (
                f"only {est.max_context} tokens of context fit, fewer than {need}")
            return Rejection(entry.id, "does_not_fit", why)
        return est

    def _config_mtime(self, entry: ModelEntry) -> float | None:
        """config.json's mtime when the model is on disk, else None.

        Only entries an engine here loads come this far: GGUF ones need llama.cpp (the catalog
        refuses them for vLLM) and `check` has already rejected them for their engine."""
        try:
            return os.stat(self._config_json[entry.id]).st_mtime
        except OSError:
            return None

    def route(self, text: str, task_type: str, hardware: HardwareState,
              private: bool = False) -> RoutingDecision:
        """Score text for task_type and choose a model for this hardware state."""
        complexity = self.analyzer.analyze(text, task_type)
        hot, band, rule, preferred = self.preference(complexity.score, hardware)
        names = self.candidates(preferred)
        use_remote = self.config.selection.use_remote
        names_all = names + tuple(e.id for e in self._remote) if use_remote else names
        rejected: list[Rejection] = []
        notes: list[str] = []
        if not complexity.task_type_known:
            notes.append(f"unknown task type {task_type!r} scored as "
                         f"{self.config.complexity.unknown_task_type}")
        for name in names_all:
            result = self.check(self.catalog.get(name), hardware, private)
            if isinstance(result, Rejection):
                rejected.append(result)
                continue
            if rejected:
                notes.append(self._fallback_note(preferred, rejected, name))
            return RoutingDecision(name, complexity, hardware, private, hot, band, rule,
                                   names_all, tuple(rejected), result, tuple(notes))
        notes.append("no candidate is usable: the manager's fallback cascade decides")
        return RoutingDecision(None, complexity, hardware, private, hot, band, rule, names_all,
                               tuple(rejected), None, tuple(notes))

    def _fallback_note(self, preferred: tuple[str, ...], rejected: list[Rejection],
                       chosen: str) -> str:
        """Why the table's choice was not taken and where the one taken comes from."""
        first = rejected[0]
        if chosen in preferred:
            source = "the rule's own list"
        elif chosen in self.config.selection.cascade:
            source = "the cascade after the table's choice"
        elif chosen in self.config.selection.local_tier:
            source = "the local tier (models built on this machine)"
        else:
            source = "the remote endpoint"
        return (f"the table's choice {preferred[0]} is not usable ({first.reason}); "
                f"{chosen} comes from {source}")

