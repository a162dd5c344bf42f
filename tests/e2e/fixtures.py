"""Servers the end-to-end tests start around `keyside run`: the fake providers and a foreign site."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from e2e.providers import FakeProviders

FOREIGN_PAGE = Path(__file__).parent.parent / "data" / "shell_foreign_attack.html"


@contextlib.asynccontextmanager
async def running_providers() -> AsyncIterator[FakeProviders]:
    fakes = await FakeProviders().start()
    try:
        yield fakes
    finally:
        await fakes.close()


@contextlib.asynccontextmanager
async def foreign_site() -> AsyncIterator[str]:
    """Serve tests/data/shell_foreign_attack.html on another loopback origin; yield that origin.

    It represents any site a keyside window or tab could be navigated to.
    """
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=FOREIGN_PAGE.read_text(), content_type="text/html")

    app = web.Application()
    app.router.add_get("/attack.html", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
