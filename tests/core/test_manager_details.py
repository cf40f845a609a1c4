"""What the manager hands the engine and records, in detail: the no-op result, the load spec, the
prefetch, the device-activity record during a load, the warm-up, the history row's figures."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from core.engine.base import ContextTooLongError, EngineError, EngineTimeoutError
from core.manager.events import SwitchEvent, SwitchPhase
from core.manager.manager import SwitchResult
from tests.core.manager_fakes import RecordingEngine, make_rig

FOUR_B, B8 = "qwen3-4b-instruct-2507", "qwen3-8b"


def test_switching_to_the_active_model_is_a_noop_result(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    async def run() -> SwitchResult:
        await rig.manager.switch_to(FOUR_B)
        return await rig.manager.switch_to(FOUR_B, reason="router")

    assert asyncio.run(run()) == SwitchResult(FOUR_B, FOUR_B, "noop", "router", None, 0.0)
    assert len(rig.engines) == 1
    state = rig.manager.state
    assert (state.active_model, state.switching_to, state.phase) == (FOUR_B, None, None)


def test_the_load_spec_carries_the_catalog_entry(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(B8))
    entry = rig.catalog.get(B8)
    spec = rig.engines[-1].spec
    assert spec is not None
    assert (spec.model_id, spec.path) == (B8, str(rig.catalog.local_path(entry)))
    assert (spec.quantization, spec.dtype, spec.trust_remote_code) == (
        entry.vllm_quantization, entry.vllm_dtype, entry.trust_remote_code)
    assert spec.quantization is not None  # the 8B is AWQ: a real value went through
    assert spec.max_model_len == rig.manager.state.max_model_len > 0
    assert 0 < spec.memory_utilization <= 1


def test_a_remote_load_spec_points_at_the_endpoint(tmp_path: Path) -> None:
    from tests.core.test_manager_safety import remote_rig

    rig = remote_rig(tmp_path)
    asyncio.run(rig.manager.switch_to("remote"))
    spec = rig.engines[-1].spec
    assert spec is not None
    assert (spec.model_id, spec.path) == ("remote", "http://127.0.0.1:9/v1")


def test_prefetch_reads_the_local_model_files_ahead_never_the_remote(tmp_path: Path) -> None:
    from tests.core.test_manager_safety import remote_rig

    for sub in "abc":
        (tmp_path / sub).mkdir()
    read: list[Path] = []
    rig = make_rig(tmp_path / "a", prefetch=read.append)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    assert read == [rig.catalog.local_path(rig.catalog.get(FOUR_B))]

    read.clear()
    rig = make_rig(tmp_path / "c", prefetch=read.append,
                   catalog=remote_rig(tmp_path / "b").catalog)  # with the remote configured
    asyncio.run(rig.manager.switch_to("remote"))
    assert rig.manager.active_model == "remote"
    assert read == []


def test_the_device_activity_says_which_model_is_loading(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.block[B8] = asyncio.Event()

    async def run() -> None:
        task = asyncio.ensure_future(rig.manager.switch_to(B8))
        while not rig.engines:  # noqa: ASYNC110
            await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        during = rig.activity.state()
        assert (during.loading, during.model_id) == (True, B8)
        state = rig.manager.state
        assert (state.switching_to, state.phase) == (B8, SwitchPhase.LOADING)
        assert during.loaded_bytes == rig.manager.needed_bytes(B8) > 0  # taken while loading
        rig.script.block[B8].set()
        await task

    asyncio.run(run())
    after = rig.activity.state()
    assert (after.loading, after.model_id) == (False, B8)


def test_the_warm_up_is_one_short_request(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    asyncio.run(rig.manager.switch_to(FOUR_B))
    [request] = rig.engines[-1].requests
    assert request.request_id == f"warmup-{FOUR_B}"
    assert (request.temperature, [m.content for m in request.messages]) == (0.0, ["Hi"])


def test_one_attempt_when_retries_are_off_and_each_retry_names_the_last_error(
        tmp_path: Path) -> None:
    from core.telemetry.config import ModelSwitching
    from tests.core.manager_fakes import CASCADE

    rig = make_rig(tmp_path, switching=ModelSwitching(max_retries=1, fallback_cascade=CASCADE))
    rig.script.fail_next(B8, EngineTimeoutError("slow"))
    result = asyncio.run(rig.manager.switch_to(B8))
    assert result.outcome == "fallback"
    assert [r.attempts for r in rig.history.recent(2)][::-1] == [1, 1]
    assert "slow (gave up after 1 attempts)" in result.errors[0]

    (tmp_path / "again").mkdir()
    rig = make_rig(tmp_path / "again")
    rig.script.fail_next(B8, EngineTimeoutError("slow"))
    asyncio.run(rig.manager.switch_to(B8))
    retries = [e.message for e in rig.events if isinstance(e, SwitchEvent)
               and e.phase is SwitchPhase.LOADING and "attempt" in e.message]
    assert retries == [f"loading {B8} (attempt 2: slow)"]


def test_the_history_row_has_the_switch_time_and_at_least_one_attempt(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.load_seconds = 7.0
    asyncio.run(rig.manager.switch_to(FOUR_B))
    asyncio.run(rig.manager.switch_to(B8))
    row = rig.history.recent()[0]
    assert row.to_model == B8
    assert 7.0 <= row.total_s < 20  # the clock's time across this switch only
    assert row.attempts == 1
    rig.probe.temperature_c = 99.0  # over the limit: refused before anything is unloaded
    asyncio.run(rig.manager.switch_to(FOUR_B))
    refused = [r for r in rig.history.recent() if r.outcome == "refused"]
    assert refused
    assert {r.attempts for r in refused} == {1}  # nothing was loaded: still one attempt


def test_a_subscriber_that_fails_does_not_stop_a_switch(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    def broken(event: object) -> None:
        raise RuntimeError("display gone")

    rig.manager.subscribe(broken)
    assert asyncio.run(rig.manager.switch_to(FOUR_B)).outcome == "ready"
    assert RecordingEngine.loaded


def test_a_context_that_already_is_the_most_that_fits_is_not_retried(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    # The 4B loads at 32768 here (test_manager: the retry after this error is at 4096).
    rig.script.fail_next(FOUR_B, ContextTooLongError(32768, 32768))
    asyncio.run(rig.manager.switch_to(FOUR_B))
    assert [e.spec.max_model_len for e in rig.engines if e.entry.id == FOUR_B
            and e.spec] == [32768]  # no second load at the same context
    row = [r for r in rig.history.recent() if r.to_model == FOUR_B][-1]
    assert (row.outcome, row.error) == ("failed", "A context of 32768 tokens does not fit in "
                                        "the KV cache; at most 32768 would.")


def test_a_fitted_retry_does_not_count_but_the_tries_after_it_do(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.script.fail_next(FOUR_B, ContextTooLongError(32768, 4096),
                         *[EngineTimeoutError("slow")] * 3)
    result = asyncio.run(rig.manager.switch_to(FOUR_B))
    assert result.outcome == "fallback"  # three tries at 4096 failed (max_retries 3)
    assert result.errors[0] == f"{FOUR_B}: slow (gave up after 4 attempts)"


def test_a_failed_clean_up_after_a_crash_is_logged(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(tmp_path)

    async def run() -> None:
        await rig.manager.switch_to(FOUR_B)
        engine = rig.engines[-1]

        async def shutdown() -> None:
            raise EngineError("already gone")

        engine.shutdown = shutdown  # type: ignore[method-assign]
        engine.crash()
        assert await rig.manager.check_engine() is False

    with caplog.at_level(logging.WARNING, logger="core.manager.manager"):
        asyncio.run(run())
    assert f"cleaning up after the crash of {FOUR_B}: already gone" in [
        r.getMessage() for r in caplog.records]
    assert rig.activity.state().loaded_bytes == 0


def test_a_queued_request_for_the_model_that_became_active_is_a_noop(tmp_path: Path) -> None:
    """A request queued behind other switches whose model is active by its turn loads
    nothing and says so."""
    rig = make_rig(tmp_path)
    rig.script.block[B8] = asyncio.Event()

    async def run() -> tuple[SwitchResult, SwitchResult]:
        first = asyncio.ensure_future(rig.manager.switch_to(B8))
        while not rig.engines:  # noqa: ASYNC110
            await asyncio.sleep(0)
        between = asyncio.ensure_future(rig.manager.switch_to(FOUR_B))
        await asyncio.sleep(0)
        again = asyncio.ensure_future(rig.manager.switch_to(B8, reason="router"))
        await asyncio.sleep(0)
        between.cancel()  # its caller gave up: it never runs
        rig.script.block[B8].set()
        return await first, await again

    first, again = asyncio.run(run())
    assert first.outcome == "ready"
    assert again == SwitchResult(B8, B8, "noop", "router", None, 0.0)
    assert len(rig.engines) == 1


def test_enforce_eager_is_the_models_choice_else_left_to_the_engine(tmp_path: Path) -> None:
    """`enforce_eager` in a model's catalog entry reaches the engine; unset, the engine's default
    for the device decides (None in the spec)."""
    from core.models.catalog import load_catalog

    catalog = load_catalog({FOUR_B: {"enforce_eager": True}, B8: {"enforce_eager": False}},
                           models_dir=tmp_path / "models")
    rig = make_rig(tmp_path, catalog=catalog)

    async def run() -> list[bool | None]:
        out = []
        for model in (FOUR_B, B8, "demo-small"):
            await rig.manager.switch_to(model)
            spec = rig.engines[-1].spec
            assert spec is not None
            out.append(spec.enforce_eager)
        return out

    assert asyncio.run(run()) == [True, False, None]


def test_background_work_leaves_no_asyncio_error_behind(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A read-ahead that fails (a model directory that went away) and the engine watchers that
    every switch replaces end quietly: no "exception was never retrieved", no failing
    done-callback in asyncio's log."""
    import gc

    def failing_prefetch(path: Path) -> None:
        raise OSError(f"{path} went away")

    rig = make_rig(tmp_path, prefetch=failing_prefetch)

    async def run() -> None:
        for model in (FOUR_B, B8, FOUR_B, B8):
            assert (await rig.manager.switch_to(model)).outcome == "ready"
            await asyncio.sleep(0.01)  # the read-ahead's thread ends; its callback runs
        await rig.manager.close()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        asyncio.run(run())
        gc.collect()  # a future whose exception nobody read complains when it is collected
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_the_load_spec_carries_the_fit_and_the_entrys_engine_settings(tmp_path: Path) -> None:
    """The utilization and KV-cache size the fit chose, and the entry's dtype and
    trust_remote_code, each reach the engine as they are (not the spec's defaults)."""
    from core.manager.fit import estimator_fit
    from core.models.catalog import load_catalog
    from core.models.estimator import Estimator

    catalog = load_catalog({"demo-small": {"quantization": "fp16", "trust_remote_code": True}},
                           models_dir=tmp_path / "models")
    fit = estimator_fit(Estimator(catalog), min_utilization=0.3, size_kv_cache=True)
    rig = make_rig(tmp_path, catalog=catalog, fit=fit)
    asyncio.run(rig.manager.switch_to("demo-small"))
    spec = rig.engines[-1].spec
    assert spec is not None
    assert spec.memory_utilization == 0.3  # the fit's floor, not LoadSpec's 0.1
    assert spec.kv_cache_tokens == spec.max_model_len == 1024  # sized to the fitted context
    assert (spec.dtype, spec.trust_remote_code) == ("float16", True)
