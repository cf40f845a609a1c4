"""Task complexity per the decision record: task type + content length + content signals, capped.

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


class ComplexityAnalyzer:
    """Scores a text for a task type with the weights of a ComplexityConfig."""

    def __init__(self, config: ComplexityConfig) -> None:
        self.config = config
        # Highest band first: only the highest band passed counts.
        self._bands = sorted(config.length_bands, key=lambda b: b.over_chars, reverse=True)
        self._signals: tuple[tuple[Signal, tuple[str, ...]], ...] = tuple(
            (s, tuple(t.lower() for t in (s.any or s.all or (s.count or "",))))
            for s in config.signals
        )

    def analyze(self, text: str, task_type: str) -> Complexity:
        """The complexity of text for task_type (an unknown type scores the configured default)."""
        cfg = self.config
        factors: list[Factor] = []
        base = cfg.task_types.get(task_type)
        known = base is not None
        if base is None:
            base = cfg.unknown_task_type
            factors.append(Factor("task_type", base,
                                  f"unknown task type {task_type!r}: default {base} "
                                  f"(known: {', '.join(cfg.task_types)})"))
        else:
            factors.append(Factor("task_type", base, f"task type {task_type!r}"))
        n = len(text)
        for band in self._bands:
            if n > band.over_chars:
                factors.append(Factor("length", band.add,
                                      f"{n:,} characters > {band.over_chars:,}"))
                break
        lowered = text.lower()
        for signal, terms in self._signals:
            if signal.any is not None:
                hit = any(t in lowered for t in terms)
            elif signal.all is not None:
                hit = all(t in lowered for t in terms)
            else:
                hit = lowered.count(terms[0]) > signal.more_than
            if hit:
                factors.append(Factor(f"signal:{signal.name}", signal.add, signal.describe()))
        raw = round(sum(f.contribution for f in factors), _DIGITS)
        capped = raw > cfg.cap
        score = cfg.cap if capped else raw
        if capped:
            factors.append(Factor("cap", round(cfg.cap - raw, _DIGITS),
                                  f"capped at {cfg.cap} (sum was {raw})"))
        return Complexity(score=score, raw_score=raw, capped=capped, task_type=task_type,
                          task_type_known=known, chars=n, factors=tuple(factors))
