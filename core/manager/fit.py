"""Adapts the VRAM estimator (core.models.estimator) to the manager's FitEstimator hook."""

from __future__ import annotations

from core.manager.plan import FitEstimate, FitEstimator
from core.models.catalog import ModelEntry
from core.models.estimator import Estimator

# vLLM's CPU build reads gpu_memory_utilization as a share of host memory and takes the KV cache
# from it after the worker's own RSS: small shares leave it negative (0.1 of 7.84 GiB worked here).
CPU_MIN_UTILIZATION = 0.1


def estimator_fit(estimator: Estimator, *, min_utilization: float = 0.0,
                  size_kv_cache: bool = False) -> FitEstimator:
    """A FitEstimator answering with the context and utilization fitted to the free memory.

    min_utilization: a floor for the utilization passed to the engine (CPU_MIN_UTILIZATION when
    the engine is vLLM's CPU build and the probe reads host memory); the need grows to match.
    size_kv_cache: ask for a KV cache of the fitted context (vLLM's CPU build would otherwise
    allocate and zero the utilization's share of host RAM, gigabytes for a megabyte model, and
    run a warm-up pass to measure it: seconds of every load).
    """

    def fit(entry: ModelEntry, free: int | None, total: int | None, buffer: int) -> FitEstimate:
        if entry.is_remote:
            return FitEstimate(True, 0, entry.default_context or 0, 0.0, "remote endpoint")
        if free is None or total is None:
            # No memory figures: load at the default context with the footprint's own share.
            fp = estimator.footprint(entry)
            ctx = entry.default_context or fp.max_position
            return FitEstimate(True, fp.total_bytes(ctx), ctx, 0.1,
                               "device reports no memory; default context")
        est = estimator.fit_context(entry, total, max(0, free), buffer)
        util = est.gpu_memory_utilization
        if util is not None:
            util = max(util, min_utilization)
        needed = int(util * total) if util is not None else est.total_bytes
        fits = est.fits and needed <= max(0, free - buffer)
        return FitEstimate(fits, needed, est.context_tokens, util or 0.0, est.reason,
                           model_bytes=est.total_bytes,
                           kv_cache_tokens=est.context_tokens if size_kv_cache else None)

    return fit
