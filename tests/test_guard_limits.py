"""Limits: connect, idle-read and total timeouts; fair concurrency caps; limit validation."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web

import test_guard_client
from keyside.guard import GuardDenied, GuardLimits, GuardPolicy, InvalidPolicy
from keyside.guard.concurrency import ConcurrencyLimiter, FairSemaphore
from test_guard_client import Serve, echo_app, make_client

# Fixtures shared with test_guard_client.
serve = test_guard_client.serve


# Short enough to keep the suite fast; no test asserts how long anything took.
SHORT = GuardLimits(connect_timeout_s=0.3, read_timeout_s=0.3, total_timeout_s=5.0)


def stalling_app(stop: asyncio.Event) -> web.Application:
    async def no_headers(request: web.Request) -> web.Response:
        await stop.wait()
        return web.Response(text="late")

    async def stall_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        await stop.wait()
        return response

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(400):
            if stop.is_set():
                break
            await response.write(b".")
            await asyncio.sleep(0.02)
        return response

    app = web.Application()
    app.router.add_get("/no-headers", no_headers)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/trickle", trickle)
    return app


@pytest.fixture
async def stop_event() -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A loopback listener whose accept queue is full, so new connects hang until they time out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield port
    filler.close()
    listener.close()


async def test_connect_timeout(full_backlog_port: int) -> None:
    async with make_client([f"127.0.0.1:{full_backlog_port}"], limits=SHORT) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{full_backlog_port}/"):
                pass
    assert caught.value.reason == "timeout_connect"


async def test_headers_idle_timeout(serve: Serve, stop_event: asyncio.Event) -> None:
    port = await serve(stalling_app(stop_event))
    async with make_client([f"127.0.0.1:{port}"], limits=SHORT) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{port}/no-headers"):
                pass
    assert caught.value.reason == "timeout_read"


async def test_body_idle_timeout(serve: Serve, stop_event: asyncio.Event) -> None:
    port = await serve(stalling_app(stop_event))
    async with make_client([f"127.0.0.1:{port}"], limits=SHORT) as client:
        async with client.request("GET", f"http://127.0.0.1:{port}/stall-body") as response:
            with pytest.raises(GuardDenied) as caught:
                await response.read()
    assert caught.value.reason == "timeout_read"


async def test_total_deadline(serve: Serve, stop_event: asyncio.Event) -> None:
    # Each byte arrives well within the idle timeout, so only the total deadline can stop it.
    limits = GuardLimits(connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=0.5)
    port = await serve(stalling_app(stop_event))
    async with make_client([f"127.0.0.1:{port}"], limits=limits) as client:
        async with client.request("GET", f"http://127.0.0.1:{port}/trickle") as response:
            with pytest.raises(GuardDenied) as caught:
                await response.read()
    assert caught.value.reason == "timeout_total"


def holding_app(gate: asyncio.Event, log: list[tuple[str, str]], in_flight: list[int]) -> web.Application:
    async def hold(request: web.Request) -> web.Response:
        log.append(("start", request.query["id"]))
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await gate.wait()
        in_flight[0] -= 1
        return web.Response(text=request.query["id"])

    app = web.Application()
    app.router.add_get("/hold", hold)
    return app


async def _wait_for(condition: object, limit: int = 500) -> None:
    for _ in range(limit):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_per_host_cap_queues_in_order(serve: Serve) -> None:
    gate = asyncio.Event()
    log: list[tuple[str, str]] = []
    in_flight = [0, 0]
    port = await serve(holding_app(gate, log, in_flight))
    limits = GuardLimits(max_concurrent=10, max_concurrent_per_host=2, connect_timeout_s=2.0,
                         read_timeout_s=10.0, total_timeout_s=20.0)
    async with make_client([f"127.0.0.1:{port}"], limits=limits) as client:
        async def fetch(index: int) -> str:
            async with client.request("GET", f"http://127.0.0.1:{port}/hold?id={index}") as response:
                return (await response.read()).decode()

        tasks = []
        for index in range(6):
            tasks.append(asyncio.create_task(fetch(index)))
            await asyncio.sleep(0)
        await _wait_for(lambda: len(log) == 2)
        assert [entry[1] for entry in log] == ["0", "1"]
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert results == [str(index) for index in range(6)]
    assert in_flight[1] == 2
    assert [entry[1] for entry in log] == [str(index) for index in range(6)]


async def test_overall_cap_across_hosts(serve: Serve) -> None:
    gate = asyncio.Event()
    log: list[tuple[str, str]] = []
    in_flight = [0, 0]
    first = await serve(holding_app(gate, log, in_flight))
    second = await serve(holding_app(gate, log, in_flight))
    limits = GuardLimits(max_concurrent=3, max_concurrent_per_host=3, connect_timeout_s=2.0,
                         read_timeout_s=10.0, total_timeout_s=20.0)
    async with make_client([f"127.0.0.1:{first}", f"127.0.0.1:{second}"], limits=limits) as client:
        async def fetch(port: int, index: int) -> None:
            async with client.request("GET", f"http://127.0.0.1:{port}/hold?id={index}") as response:
                await response.read()

        tasks = [asyncio.create_task(fetch(first if index % 2 else second, index)) for index in range(8)]
        await _wait_for(lambda: len(log) == 3)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert in_flight[1] == 3
    assert len(log) == 8


async def test_slot_released_after_denial(serve: Serve) -> None:
    port = await serve(echo_app())
    limits = GuardLimits(max_concurrent=1, max_concurrent_per_host=1, connect_timeout_s=2.0,
                         read_timeout_s=5.0, total_timeout_s=10.0)
    async with make_client([f"127.0.0.1:{port}"], limits=limits) as client:
        for _ in range(3):
            with pytest.raises(GuardDenied):
                async with client.request("GET", f"http://127.0.0.1:{port}/redirect?to=http://10.0.0.1/"):
                    pass
        async with client.request("GET", f"http://127.0.0.1:{port}/echo") as response:
            assert response.status == 200


# --- FairSemaphore and ConcurrencyLimiter on their own ---

async def test_fair_semaphore_order() -> None:
    semaphore = FairSemaphore(1)
    await semaphore.acquire()
    order: list[int] = []

    async def waiter(index: int) -> None:
        await semaphore.acquire()
        order.append(index)
        semaphore.release()

    tasks = [asyncio.create_task(waiter(index)) for index in range(5)]
    await asyncio.sleep(0)
    semaphore.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert semaphore.idle


async def test_fair_semaphore_cancelled_waiter() -> None:
    semaphore = FairSemaphore(1)
    await semaphore.acquire()
    cancelled = asyncio.create_task(semaphore.acquire())
    next_waiter = asyncio.create_task(semaphore.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    semaphore.release()
    await asyncio.wait_for(next_waiter, timeout=5)
    assert semaphore.in_use == 1
    semaphore.release()
    assert semaphore.idle


async def test_limiter_forgets_idle_hosts() -> None:
    limiter = ConcurrencyLimiter(4, 2)
    async with limiter.slot("a.example"):
        assert "a.example" in limiter._hosts
    assert limiter._hosts == {}
    assert limiter.total.idle


# --- limits and policy validation ---

@pytest.mark.parametrize("field,value", [
    ("connect_timeout_s", 0),
    ("read_timeout_s", -1.0),
    ("total_timeout_s", "10"),
    ("max_response_bytes", 0),
    ("max_response_bytes", 1.5),
    ("max_redirects", -1),
    ("max_concurrent", 0),
    ("max_concurrent_per_host", True),
])
def test_invalid_limit_rejected(field: str, value: object) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        GuardLimits(**{field: value})
    assert field in str(caught.value)


def test_zero_redirects_allowed() -> None:
    assert GuardLimits(max_redirects=0).max_redirects == 0


def test_policy_pairs_normalised() -> None:
    policy = GuardPolicy(frozenset({("LocalHost.", 8080), ("::1", 11434), ("0x7f.1", 80)}))
    assert policy.allow_private == frozenset({("localhost", 8080), ("::1", 11434), ("127.0.0.1", 80)})


@pytest.mark.parametrize("pair", [("localhost", 0), ("localhost", "80"), ("a b", 80), "localhost:80"])
def test_policy_bad_pair_rejected(pair: object) -> None:
    with pytest.raises((InvalidPolicy, GuardDenied)):
        GuardPolicy(frozenset({pair}))  # type: ignore[arg-type]


def test_policy_from_strings() -> None:
    policy = GuardPolicy.from_strings(["127.0.0.1:8080", "[::1]:11434"])
    assert policy.allow_private == frozenset({("127.0.0.1", 8080), ("::1", 11434)})
