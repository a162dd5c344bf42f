"""A malformed upstream response: the guard's error names the problem, never the bytes sent."""

from __future__ import annotations

import asyncio

import pytest

from keyside.guard import GuardDenied, GuardedClient, GuardLimits, GuardPolicy, StaticResolver

ECHOED_KEY = "sk-echoed-key-0123456789abcdef"
MALFORMED_RESPONSES = {
    "space-in-header-name": f"HTTP/1.1 200 OK\r\nX Echo {ECHOED_KEY}: 1\r\nContent-Length: 0\r\n\r\n",
    "bad-status-line": f"HTTP/1.1 2x0 {ECHOED_KEY}\r\nContent-Length: 0\r\n\r\n",
    "header-without-colon": f"HTTP/1.1 200 OK\r\n{ECHOED_KEY}\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED_RESPONSES.values(), ids=MALFORMED_RESPONSES.keys())
async def test_invalid_response_hides_bytes(raw: str) -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = GuardLimits(connect_timeout_s=2.0, read_timeout_s=5.0, total_timeout_s=10.0)
    policy = GuardPolicy.from_strings([f"127.0.0.1:{port}"], limits=limits)
    try:
        async with GuardedClient(policy, StaticResolver({})) as client:
            with pytest.raises(GuardDenied) as caught:
                async with client.request("GET", f"http://127.0.0.1:{port}/v1/ping"):
                    pass
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.reason == "response_invalid"
    assert ECHOED_KEY not in str(caught.value)
    assert "sk-echoed" not in str(caught.value)
