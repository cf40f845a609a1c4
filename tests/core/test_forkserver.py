"""The engine forkserver's pure parts; forked engines on real vLLM are in test_vllm_engine.py."""

from __future__ import annotations

import pytest

from core.engine.forkserver import _cpu_list


@pytest.mark.parametrize(("value", "cpus"), [
    ("0 1 2", {0, 1, 2}),  # GOMP_CPU_AFFINITY, as vLLM writes it for libgomp
    ("{4,5,7}", {4, 5, 7}),  # OMP_PLACES
    ("granularity=fine,explicit,proclist=[2,3]", {2, 3}),  # KMP_AFFINITY (Intel OpenMP)
    ("0-3 8", {0, 1, 2, 3, 8}),
    ("cores", set()),  # not a list: nothing applied
])
def test_openmp_cpu_lists(value: str, cpus: set[int]) -> None:
    assert _cpu_list(value) == cpus
