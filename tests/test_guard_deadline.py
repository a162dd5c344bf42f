"""The guard's cheap deadline: the same outcomes as asyncio.timeout_at, on one timer handle."""

from __future__ import annotations

import asyncio

import pytest

from keyside.guard.deadline import Deadline


async def test_deadline_turns_into_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        with Deadline(loop, loop.time() + 0.05):
            await asyncio.sleep(5)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline withdrew its own cancel


async def test_deadline_not_reached_changes_nothing() -> None:
    loop = asyncio.get_running_loop()
    with Deadline(loop, loop.time() + 5):
        await asyncio.sleep(0)
        result = 42
    assert result == 42
    await asyncio.sleep(0.01)  # a timer left armed would cancel this sleep


async def test_past_deadline_fires_at_next_await() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        with Deadline(loop, loop.time() - 1):
            await asyncio.sleep(1)


async def test_outside_cancellation_stays_a_cancellation() -> None:
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    async def wait_long() -> None:
        with Deadline(loop, loop.time() + 5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(wait_long())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_same_turn_cancellation_wins() -> None:
    # The deadline and a caller cancel the task in the same loop turn: the caller's cancellation
    # wins, as with asyncio.timeout_at. Both timers share one `when`, so they run in one turn.
    loop = asyncio.get_running_loop()
    when = loop.time() + 0.05

    async def wait_long() -> None:
        with Deadline(loop, when):
            await asyncio.sleep(5)

    task = asyncio.create_task(wait_long())
    loop.call_at(when, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task


def test_deadline_needs_a_task() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="needs a running task"):
            Deadline(loop, 0.0).__enter__()
    finally:
        loop.close()
