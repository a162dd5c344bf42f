"""Concurrency caps for outbound requests: overall and per host, served first come, first served.

A request over a cap waits in a queue instead of failing, and a released slot goes straight
to the longest waiter, so a burst to one host cannot starve requests that arrived earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class FairSemaphore:
    """A counting semaphore that hands slots to waiters strictly in arrival order."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a semaphore needs at least one slot, got {slots}")
        self.slots = slots
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        if self.in_use < self.slots and not self._waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just before the cancellation; pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        # A released slot goes to the next live waiter, so in_use stays the same. The count
        # drops only when no waiter is left.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_use -= 1

    @property
    def idle(self) -> bool:
        return self.in_use == 0 and not self._waiters


class ConcurrencyLimiter:
    """One FairSemaphore for all requests and one per host, created on first use."""

    def __init__(self, max_concurrent: int, max_concurrent_per_host: int):
        self.total = FairSemaphore(max_concurrent)
        self.max_concurrent_per_host = max_concurrent_per_host
        self._hosts: dict[str, FairSemaphore] = {}

    async def acquire(self, host: str) -> None:
        # The host slot comes first: a request that waits for its busy host then holds no
        # overall slot, so it cannot block requests to other hosts.
        per_host = self._hosts.get(host)
        if per_host is None:
            per_host = self._hosts[host] = FairSemaphore(self.max_concurrent_per_host)
        await per_host.acquire()
        try:
            await self.total.acquire()
        except BaseException:
            self._release_host(host)
            raise

    def release(self, host: str) -> None:
        self.total.release()
        self._release_host(host)

    def _release_host(self, host: str) -> None:
        per_host = self._hosts[host]
        per_host.release()
        if per_host.idle:
            del self._hosts[host]

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        await self.acquire(host)
        try:
            yield
        finally:
            self.release(host)
