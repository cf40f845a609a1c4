"""Task complexity: task type + content length + content signals, capped (weights: the config).

Fast on long texts: the text is lower-cased once, then every signal is one `in` or `str.count`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.router.config import ComplexityConfig, Signal

# Scores are sums of decimal weights; round so 0.3 + 0.1 compares equal to a 0.4 threshold.
_DIGITS = 6


@dataclass(frozen=True)
class Factor:
    """One contribution to the score (negative for the cap)."""

    name: str
    contribution: float
    detail: str


@dataclass(frozen=True)
class Complexity:
    """The score in [0, cap] and what made it."""

    score: float
    raw_score: float
    capped: bool
    task_type: str
    task_type_known: bool
    chars: int
    factors: tuple[Factor, ...]


def _occurs_more_than(text: str, term: str, times: int) -> bool:
    """Whether term occurs more than `times` times (non-overlapping, like str.count).

    Stops at the (times + 1)th hit instead of counting to the end: one scan at most.
    """
    if not term:
        return False
    start = 0
    for _ in range(times + 1):
        found = text.find(term, start)
        if found < 0:
            return False
        start = found + len(term)
    return True


class ComplexityAnalyzer:
    """Scores a text for a task type with the weights of a ComplexityConfig."""

    def __init__(self, config: ComplexityConfig) -> None:
        self.config = config
        # Factors are immutable and depend only on the config: build them once, so a decision
        # allocates almost nothing besides the lowered text.
        self._task_factors = {name: Factor("task_type", weight, f"task type {name!r}")
                              for name, weight in config.task_types.items()}
        known = ", ".join(config.task_types)
        self._unknown_detail = (f"default {config.unknown_task_type} (known: {known})")
        # Highest band first: only the highest band passed counts.
        self._bands = tuple(
            (b.over_chars, Factor("length", b.add, f"more than {b.over_chars:,} characters"))
            for b in sorted(config.length_bands, key=lambda b: b.over_chars, reverse=True))
        self._signals: tuple[tuple[Signal, tuple[str, ...], Factor], ...] = tuple(
            (s, tuple(t.lower() for t in (s.any or s.all or (s.count or "",))),
             Factor(f"signal:{s.name}", s.add, s.describe()))
            for s in config.signals
        )

    def analyze(self, text: str, task_type: str) -> Complexity:
        """The complexity of text for task_type (an unknown type scores the configured default)."""
        cfg = self.config
        task_factor = self._task_factors.get(task_type)
        known = task_factor is not None
        if task_factor is None:
            task_factor = Factor("task_type", cfg.unknown_task_type,
                                 f"unknown task type {task_type!r}: {self._unknown_detail}")
        factors = [task_factor]
        n = len(text)
        for over_chars, factor in self._bands:
            if n > over_chars:
                factors.append(factor)
                break
        lowered = text.lower()  # the one pass over the whole text; the rest are searches
        for signal, terms, factor in self._signals:
            if signal.any is not None:
                hit = any(t in lowered for t in terms)
            elif signal.all is not None:
                hit = all(t in lowered for t in terms)
            else:
                hit = _occurs_more_than(lowered, terms[0], signal.more_than)
            if hit:
                factors.append(factor)
        raw = round(sum(f.contribution for f in factors), _DIGITS)
        capped = raw > cfg.cap
        score = cfg.cap if capped else raw
        if capped:
            factors.append(Factor("cap", round(cfg.cap - raw, _DIGITS),
                                  f"capped at {cfg.cap} (sum was {raw})"))
        return Complexity(score=score, raw_score=raw, capped=capped, task_type=task_type,
                          task_type_known=known, chars=n, factors=tuple(factors))
