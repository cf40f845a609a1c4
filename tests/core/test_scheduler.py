"""The fair scheduler on the real manager with the in-test engine: grouping by model, the bounded
queue, the thermal concurrency limit, cancellation, a failed switch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.chat_session import ChatSession
from core.engine.base import ChatMessage, GenerationRequest
from core.manager.manager import SwitchResult
from core.router import load_router_config
from core.router.selection import Router
from core.scheduler import NoModelError, QueueFullError, RequestScheduler
from tests.core.manager_fakes import Rig, make_rig, until

A, B = "demo-tiny-a", "demo-tiny-b"


def switch_rows(rig: Rig) -> list[tuple[str | None, str, str]]:
    return [(r.from_model, r.to_model, r.outcome) for r in reversed(rig.history.recent())]


def test_interleaved_requests_for_two_models_are_grouped(tmp_path: Path) -> None:
    """8 concurrent requests alternating A/B: all answered, at most 3 switches (main: 8)."""
    rig = make_rig(tmp_path)
    chat = ChatSession(rig.manager, Router(load_router_config(rig.catalog), rig.catalog),
                       rig.history, rig.probe)

    async def one(i: int) -> tuple[str, int]:
        req = GenerationRequest((ChatMessage("user", f"q{i}"),), max_tokens=3,
                                request_id=f"r{i}")
        model = (A, B)[i % 2]
        n = 0
        async for d in chat.generate(req, model):
            n = d.tokens
        return model, n

    async def main() -> list[tuple[str, int]]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    results = asyncio.run(main())
    assert [n for _, n in results] == [3] * 8
    rows = switch_rows(rig)
    assert all(outcome == "ready" for *_, outcome in rows)
    assert len(rows) <= 3, rows
    assert chat.scheduler.stats().outcomes == {(A, "ok"): 4, (B, "ok"): 4}
    assert not type(rig.engines[0]).overlap_seen  # never two models loaded at once


def test_request_for_the_running_model_queues_behind_another_model(tmp_path: Path) -> None:
    """No starvation: while a B request waits, a new A request waits behind it."""
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager)
    order: list[str] = []

    async def hold(model: str, release: asyncio.Event) -> None:
        async with sched.admit(model):
            order.append(model)
            await release.wait()

    async def main() -> None:
        first, rest = asyncio.Event(), asyncio.Event()
        rest.set()
        t1 = asyncio.ensure_future(hold(A, first))
        await until(lambda: order)
        t2 = asyncio.ensure_future(hold(B, rest))
        await asyncio.sleep(0)
        t3 = asyncio.ensure_future(hold(A, rest))
        for _ in range(20):
            await asyncio.sleep(0)
        assert order == [A]
        assert sched.stats().queued == 2
        assert sched.stats().running == 1
        first.set()
        await asyncio.gather(t1, t2, t3)

    asyncio.run(main())
    assert order == [A, B, A]
    assert [r[:2] for r in switch_rows(rig)] == [(None, A), (A, B), (B, A)]


def test_full_queue_rejects_with_retry_after(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager, max_queue=2)

    async def main() -> QueueFullError:
        release = asyncio.Event()

        async def hold(model: str) -> None:
            async with sched.admit(model):
                await release.wait()

        running = asyncio.ensure_future(hold(A))
        await until(lambda: sched.stats().running > 0)
        waiting = [asyncio.ensure_future(hold(B)) for _ in range(2)]
        await asyncio.sleep(0)
        assert sched.queued == 2
        with pytest.raises(QueueFullError) as info:
            async with sched.admit(B):
                pass
        release.set()
        await asyncio.gather(running, *waiting)
        return info.value

    err = asyncio.run(main())
    assert err.retry_after_s >= 1
    assert "2 of 2" in str(err)
    assert sched.stats().outcomes[(B, "rejected")] == 1
    assert sched.stats().outcomes[(B, "ok")] == 2


def test_concurrency_limit_caps_running_requests(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager)
    inside = most = most_queued = 0

    async def one() -> None:
        nonlocal inside, most, most_queued
        async with sched.admit(A):
            inside += 1
            most = max(most, inside)
            most_queued = max(most_queued, sched.stats().queued)
            for _ in range(5):
                await asyncio.sleep(0)
            inside -= 1

    async def main() -> None:
        await rig.manager.set_max_concurrent(2)
        await asyncio.gather(*(one() for _ in range(6)))

    asyncio.run(main())
    assert most == 2
    assert most_queued >= 1  # the others wait for a slot, and are counted as queued
    assert sched.stats().queued == 0
    assert sched.stats().running == 0


def test_cancelled_waiter_leaves_the_queue_and_causes_no_switch(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager)

    async def main() -> None:
        release = asyncio.Event()

        async def hold(model: str) -> None:
            async with sched.admit(model):
                await release.wait()

        running = asyncio.ensure_future(hold(A))
        await until(lambda: sched.stats().running > 0)
        waiting = asyncio.ensure_future(hold(B))
        await asyncio.sleep(0)
        assert sched.queued == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert sched.queued == 0
        release.set()
        await running

    asyncio.run(main())
    assert [r[1] for r in switch_rows(rig)] == [A]  # B was never switched to
    assert sched.stats().outcomes[(B, "cancelled")] == 1


async def user_switch_held_at_load(rig: Rig, model: str
                                   ) -> tuple[asyncio.Event, asyncio.Future[SwitchResult]]:
    """A switch begun outside the scheduler (the user's click), held in its load until the
    returned event is set: the manager is busy meanwhile."""
    gate = asyncio.Event()
    rig.script.block[model] = gate
    user = asyncio.ensure_future(rig.manager.switch_to(model))
    await until(lambda: rig.manager.state.switching_to == model)
    return gate, user


def test_a_switch_nobody_waits_for_any_more_is_not_made(tmp_path: Path) -> None:
    """A request for B waits behind a switch to A begun elsewhere (the user's click), then is
    cancelled: B is not loaded for nobody once A is ready. (A soak ended by the user's switch
    once left no model at all: its orphan switch back ran, and was cancelled mid-load at exit.)"""
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager)

    async def main() -> None:
        gate, user = await user_switch_held_at_load(rig, A)

        async def want_b() -> None:
            async with sched.admit(B):
                pass

        waiting = asyncio.ensure_future(want_b())
        await until(lambda: sched.queued == 1)
        for _ in range(5):  # the scheduler's own switch to B is under way, waiting for A's
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        assert (await user).ok
        for _ in range(50):
            await asyncio.sleep(0)
        assert sched.queued == 0

    asyncio.run(main())
    assert rig.manager.active_model == A
    assert [r[1] for r in switch_rows(rig)] == [A]


def test_a_request_still_waiting_keeps_its_switch(tmp_path: Path) -> None:
    """Two requests wait for B behind the user's switch to A; one is cancelled: the other is
    still served by B."""
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager)
    served: list[str | None] = []

    async def main() -> None:
        gate, user = await user_switch_held_at_load(rig, A)

        async def want_b() -> None:
            async with sched.admit(B):
                served.append(rig.manager.active_model)

        first, second = asyncio.ensure_future(want_b()), asyncio.ensure_future(want_b())
        await until(lambda: sched.queued == 2)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        assert (await user).ok
        await asyncio.wait_for(second, 5)

    asyncio.run(main())
    assert served == [B]
    assert [r[1] for r in switch_rows(rig)] == [A, B]


def test_cancelled_stream_ends_the_engine_generation(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    chat = ChatSession(rig.manager, Router(load_router_config(rig.catalog), rig.catalog),
                       rig.history, rig.probe)
    closed: list[bool] = []
    started: list[bool] = []

    async def main() -> None:
        await rig.manager.switch_to(A)
        engine = rig.engines[-1]
        original = engine.generate

        async def tracked(request: GenerationRequest):  # type: ignore[no-untyped-def]
            try:
                async for d in original(request):
                    started.append(True)
                    yield d
            finally:
                closed.append(True)

        engine.generate = tracked  # type: ignore[method-assign]
        req = GenerationRequest((ChatMessage("user", "x"),), max_tokens=10_000, request_id="c")

        async def consume() -> None:
            async for _ in chat.generate(req, A):
                pass

        task = asyncio.ensure_future(consume())
        await until(lambda: started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == [True]
    stats = chat.scheduler.stats()
    assert stats.running == 0
    assert stats.outcomes[(A, "cancelled")] == 1


def test_failed_switch_fails_its_group_and_the_next_group_runs(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, on_disk=lambda e: e.id != B and not e.is_remote)
    sched = RequestScheduler(rig.manager)
    rig.manager.cascade = ()  # no fallback: the refusal reaches the waiters

    async def one(model: str) -> str:
        try:
            async with sched.admit(model) as admission:
                return str(admission.active)
        except NoModelError as exc:
            return str(exc)

    async def main() -> list[str]:
        return await asyncio.gather(one(B), one(B), one(A))

    out = asyncio.run(main())
    assert out[0].startswith(f"Could not make {B} active: ")
    assert "disk" in out[0]
    assert out[1] == out[0]
    assert out[2] == A
    assert sched.stats().outcomes[(B, "no_model")] == 2


def test_unknown_model_is_refused_before_queueing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    sched = RequestScheduler(rig.manager)

    async def main() -> None:
        with pytest.raises(KeyError, match="no-such"):
            async with sched.admit("no-such"):
                pass

    asyncio.run(main())
    assert sched.queued == 0
