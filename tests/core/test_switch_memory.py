"""What a switch counts as the loaded model's memory, and how long it waits for it to come back.

The memory a model must give back at its unload is what the device really lost while it loaded
(never more than the estimate: what another program took meanwhile is not the engine's), and a
remote endpoint holds none. The memory wait after an unload ends once the next model and the
buffer fit, even if the rest never comes back. Driven on the simulated 16 GB GPU, with another
program's memory moved at the probe (the hardware seam).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.base import LoadSpec
from core.models.catalog import load_catalog
from tests.core.manager_fakes import GIB, FixedFit, RecordingEngine, Rig, make_rig

A, B = "qwen3-8b", "qwen3-4b-instruct-2507"
NEED = 4 * GIB
BUFFER = GIB  # ModelSwitching's default vram_buffer_gb


class ShiftingEngine(RecordingEngine):
    """While it loads, the device's free memory moves by `shift` on top of what the manager
    reports for it (negative: the engine is not all resident; positive: another program took
    memory during the load)."""

    rig: Rig | None = None
    shift = 0

    async def load(self, spec: LoadSpec) -> None:
        await super().load(spec)
        assert ShiftingEngine.rig is not None
        ShiftingEngine.rig.probe.other_process_bytes += ShiftingEngine.shift


def shifting_rig(tmp_path: Path, shift: int, **kwargs: object) -> tuple[Rig, FixedFit]:
    fit = FixedFit(NEED)
    rig = make_rig(tmp_path, engine_class=ShiftingEngine, fit=fit, **kwargs)  # type: ignore[arg-type]
    ShiftingEngine.rig, ShiftingEngine.shift = rig, shift
    return rig, fit


def given_back(rig: Rig, fit: FixedFit, target: str) -> int:
    """What the next plan counts the active model as giving back at its unload."""
    free = rig.probe.read().free_bytes
    rig.manager.plan_switch(target)
    counted = fit.seen[-1][0]
    assert free is not None
    assert counted is not None
    return counted - free


@pytest.mark.parametrize(("shift", "expected"), [
    (-2 * GIB, NEED - 2 * GIB),  # the host's reservation is not all resident: what it took
    (GIB, NEED),                 # another program took 1 GiB meanwhile: not ours to give back
    (-NEED, 0),                  # the device lost nothing
], ids=["less-than-the-estimate", "another-program-took-more", "nothing"])
def test_what_must_come_back_is_what_the_load_took_from_the_device(
        tmp_path: Path, shift: int, expected: int) -> None:
    rig, fit = shifting_rig(tmp_path, shift)
    result = asyncio.run(rig.manager.switch_to(A))
    assert (result.outcome, result.active) == ("ready", A)
    assert rig.manager.state.loaded_bytes == NEED  # what is reported is still the estimate
    assert given_back(rig, fit, B) == expected


def test_a_remote_endpoint_holds_nothing_on_the_device(tmp_path: Path) -> None:
    catalog = load_catalog(models_dir=tmp_path / "models")
    catalog = catalog.with_entry(catalog.get("remote").model_copy(update={
        "enabled": True, "base_url": "http://gpu-box:8000/v1", "remote_model": "served"}))
    # Another program takes 2 GiB while the endpoint connects.
    rig, fit = shifting_rig(tmp_path, 2 * GIB, catalog=catalog)
    result = asyncio.run(rig.manager.switch_to("remote"))
    assert (result.outcome, result.active) == ("ready", "remote")
    assert rig.manager.state.loaded_bytes == 0
    assert rig.activity.state().loaded_bytes == 0
    assert given_back(rig, fit, A) == 0
    # Switching to a local model then waits for nothing to come back.
    ShiftingEngine.shift = 0
    result = asyncio.run(rig.manager.switch_to(A))
    assert (result.outcome, result.active) == ("ready", A)
    assert rig.history.recent()[0].phases["waiting_for_memory"] == 0.0


def crowd_after_unload(rig: Rig, free_left: int, reads: int) -> list[int]:
    """Once nothing is loaded, another program leaves only `free_left` free for the next
    `reads` readings, then goes. Returns the readings left (a one-item list)."""
    left = [reads]
    device_free = 16 * GIB - int(rig.gpu.profile.baseline_vram_used_mib * 1024**2)

    def before_read() -> None:
        crowded = left[0] > 0 and rig.activity.state().loaded_bytes == 0
        rig.probe.other_process_bytes = device_free - free_left if crowded else 0
        if crowded:
            left[0] -= 1

    rig.probe.before_read = before_read
    return left


def test_the_memory_wait_goes_on_while_one_byte_of_the_next_need_is_missing(
        tmp_path: Path) -> None:
    rig, _ = shifting_rig(tmp_path, 0)
    asyncio.run(rig.manager.switch_to(A))
    left = crowd_after_unload(rig, NEED + BUFFER - 1, reads=3)
    result = asyncio.run(rig.manager.switch_to(B))
    assert (result.outcome, result.active) == ("ready", B)
    assert left == [0]  # it waited the crowd out
    row = rig.history.recent()[0]
    assert row.phases["waiting_for_memory"] == pytest.approx(3 * 0.25)


def test_the_memory_wait_ends_when_exactly_the_next_need_and_the_buffer_are_free(
        tmp_path: Path) -> None:
    rig, _ = shifting_rig(tmp_path, 0)
    asyncio.run(rig.manager.switch_to(A))
    left = crowd_after_unload(rig, NEED + BUFFER, reads=2)
    result = asyncio.run(rig.manager.switch_to(B))
    assert (result.outcome, result.active) == ("ready", B)
    assert left == [0]  # the wait's one reading and the check's were both crowded
    row = rig.history.recent()[0]
    assert row.phases["waiting_for_memory"] == 0.0


def test_with_nothing_loaded_the_plan_counts_only_the_free_memory(tmp_path: Path) -> None:
    """Exactly the need and the buffer free: allowed; one byte less: refused (nothing loaded
    gives anything back)."""
    rig, _ = shifting_rig(tmp_path, 0)
    device_free = rig.probe.read().free_bytes
    assert device_free is not None
    rig.probe.other_process_bytes = device_free - (NEED + BUFFER)
    assert rig.manager.plan_switch(A).ok
    rig.probe.other_process_bytes += 1
    short = rig.manager.plan_switch(A)
    assert [c.name for c in short.checks if not c.passed] == ["memory"]
