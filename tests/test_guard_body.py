"""Response bodies: decoded-byte cap while streaming, compression bombs, encodings, SSE."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from aiohttp import web

import test_guard_client
from keyside.guard import GuardDenied
from keyside.guard.body import DECODE_STEP_BYTES, BodyDecoder, parse_content_encoding
from test_guard_client import Serve, make_client

# Fixtures shared with test_guard_client.
serve = test_guard_client.serve


CAP = 64 * 1024


def body_app(release: asyncio.Event | None = None) -> web.Application:
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["n"]))

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(int(request.query["chunks"])):
            await response.write(b"y" * 8192)
        await response.write_eof()
        return response

    async def encoded(request: web.Request) -> web.Response:
        raw = b"z" * int(request.query["n"])
        kind = request.query["kind"]
        if kind == "gzip":
            body = gzip.compress(raw)
        elif kind == "gzip-twice":
            body = gzip.compress(gzip.compress(raw))
            kind = "gzip, gzip"
        elif kind == "deflate":
            body = zlib.compress(raw)
        elif kind == "deflate-raw":
            compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = compressor.compress(raw) + compressor.flush()
            kind = "deflate"
        elif kind == "broken":
            body = b"\x1f\x8b\x08\x00garbage-not-gzip"
            kind = "gzip"
        else:
            body = raw
        return web.Response(body=body, headers={"Content-Encoding": kind})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        assert release is not None
        await release.wait()
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async def head_big(request: web.Request) -> web.Response:
        return web.Response(headers={"Content-Length": str(10**12)})

    app = web.Application()
    app.router.add_get("/sized", sized)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/encoded", encoded)
    app.router.add_get("/events", events)
    app.router.add_route("HEAD", "/head", head_big)
    return app


async def _read_all(serve: Serve, path: str, cap: int = CAP, **options: object) -> tuple[bytes, object]:
    port = await serve(body_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        async with client.request("GET", f"http://127.0.0.1:{port}{path}", max_response_bytes=cap,
                                  **options) as response:
            return await response.read(), response.headers


async def _read_denied(serve: Serve, path: str, cap: int = CAP) -> tuple[GuardDenied, list[bytes]]:
    port = await serve(body_app())
    pieces: list[bytes] = []
    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{port}{path}", max_response_bytes=cap) as response:
                async for piece in response.iter_chunks():
                    pieces.append(piece)
    return caught.value, pieces


async def test_body_within_cap(serve: Serve) -> None:
    body, _ = await _read_all(serve, f"/sized?n={CAP}")
    assert body == b"x" * CAP


async def test_declared_length_over_cap(serve: Serve) -> None:
    error, pieces = await _read_denied(serve, f"/sized?n={CAP + 1}")
    assert error.reason == "response_too_large"
    assert pieces == []


async def test_chunked_body_over_cap(serve: Serve) -> None:
    error, pieces = await _read_denied(serve, "/chunked?chunks=64")
    assert error.reason == "response_too_large"
    assert sum(map(len, pieces)) <= CAP


@pytest.mark.parametrize("path", [f"/sized?n={CAP + 1}", "/chunked?chunks=64"])
async def test_read_of_plain_body_over_cap(serve: Serve, path: str) -> None:
    # read() has its own loop for a body without a content coding, and the cap applies there too.
    port = await serve(body_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{port}{path}", max_response_bytes=CAP) as response:
                await response.read()
    assert caught.value.reason == "response_too_large"


async def test_read_joins_chunked_plain_body(serve: Serve) -> None:
    body, _ = await _read_all(serve, "/chunked?chunks=3")
    assert body == b"y" * (3 * 8192)


@pytest.mark.parametrize("kind", ["gzip", "gzip-twice", "deflate", "deflate-raw"])
async def test_compression_bomb_stopped(kind: str, serve: Serve) -> None:
    # 64 MiB of one byte compresses to about 64 KiB; the cap is 64 KiB decoded.
    error, pieces = await _read_denied(serve, f"/encoded?kind={kind}&n={64 * 1024 * 1024}")
    assert error.reason == "response_too_large"
    assert sum(map(len, pieces)) <= CAP
    assert max(map(len, pieces)) <= DECODE_STEP_BYTES


@pytest.mark.parametrize("kind", ["gzip", "gzip-twice", "deflate", "deflate-raw", "identity"])
async def test_encoded_body_decoded(kind: str, serve: Serve) -> None:
    body, headers = await _read_all(serve, f"/encoded?kind={kind}&n=5000")
    assert body == b"z" * 5000
    assert "Content-Encoding" not in headers or headers["Content-Encoding"] == "identity"


async def test_decoded_headers_drop_encoding(serve: Serve) -> None:
    _, headers = await _read_all(serve, "/encoded?kind=gzip&n=100")
    assert "Content-Encoding" not in headers
    assert "Content-Length" not in headers


async def test_unsupported_encoding_rejected(serve: Serve) -> None:
    port = await serve(body_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        with pytest.raises(GuardDenied) as caught:
            async with client.request("GET", f"http://127.0.0.1:{port}/encoded?kind=br&n=10"):
                pass
    assert caught.value.reason == "response_encoding_unsupported"


async def test_broken_gzip_rejected(serve: Serve) -> None:
    error, _ = await _read_denied(serve, "/encoded?kind=broken&n=1")
    assert error.reason == "response_invalid_encoding"


async def test_per_request_cap_overrides_default(serve: Serve) -> None:
    error, _ = await _read_denied(serve, "/sized?n=101", cap=100)
    assert error.reason == "response_too_large"


async def test_head_ignores_announced_length(serve: Serve) -> None:
    port = await serve(body_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        async with client.request("HEAD", f"http://127.0.0.1:{port}/head", max_response_bytes=10) as response:
            assert response.status == 200
            assert await response.read() == b""


async def test_body_read_once(serve: Serve) -> None:
    port = await serve(body_app())
    async with make_client([f"127.0.0.1:{port}"]) as client:
        async with client.request("GET", f"http://127.0.0.1:{port}/sized?n=10") as response:
            await response.read()
            with pytest.raises(RuntimeError):
                await response.read()


async def test_event_stream_not_buffered(serve: Serve) -> None:
    # The server sends the second event only after the test has received the first, so a
    # client that buffered the body would never return.
    release = asyncio.Event()
    port = await serve(body_app(release))
    received: list[bytes] = []
    async with make_client([f"127.0.0.1:{port}"]) as client:
        async with client.request("GET", f"http://127.0.0.1:{port}/events") as response:
            async def consume() -> None:
                async for piece in response.iter_chunks():
                    received.append(piece)
                    release.set()
            await asyncio.wait_for(consume(), timeout=10)
    assert b"".join(received) == b"data: first\n\ndata: second\n\n"
    assert received[0] == b"data: first\n\n"


# --- BodyDecoder on its own ---

def test_decoder_steps_bounded() -> None:
    decoder = BodyDecoder(["gzip"])
    pieces = list(decoder.feed(gzip.compress(b"\0" * (DECODE_STEP_BYTES * 10))))
    pieces += list(decoder.finish())
    assert b"".join(pieces) == b"\0" * (DECODE_STEP_BYTES * 10)
    assert max(map(len, pieces)) <= DECODE_STEP_BYTES


def test_decoder_byte_by_byte() -> None:
    data = gzip.compress(b"hello world" * 100)
    decoder = BodyDecoder(["gzip"])
    out = b"".join(piece for index in range(len(data)) for piece in decoder.feed(data[index:index + 1]))
    out += b"".join(decoder.finish())
    assert out == b"hello world" * 100


def test_decoder_multiple_gzip_members() -> None:
    decoder = BodyDecoder(["gzip"])
    out = b"".join(decoder.feed(gzip.compress(b"one ") + gzip.compress(b"two"))) + b"".join(decoder.finish())
    assert out == b"one two"


def test_decoder_truncated_stream() -> None:
    decoder = BodyDecoder(["gzip"])
    list(decoder.feed(gzip.compress(b"a" * 1000)[:-10]))
    with pytest.raises(GuardDenied) as caught:
        list(decoder.finish())
    assert caught.value.reason == "response_invalid_encoding"


def test_decoder_empty_body() -> None:
    decoder = BodyDecoder(["gzip"])
    assert list(decoder.finish()) == []


@pytest.mark.parametrize("header,expected", [
    (None, []),
    ("", []),
    ("identity", []),
    ("GZIP", ["gzip"]),
    ("x-gzip", ["x-gzip"]),
    ("deflate, gzip", ["deflate", "gzip"]),
])
def test_content_encoding_parsed(header: str | None, expected: list[str]) -> None:
    assert parse_content_encoding(header) == expected


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, gzip, gzip"])
def test_content_encoding_rejected(header: str) -> None:
    with pytest.raises(GuardDenied) as caught:
        parse_content_encoding(header)
    assert caught.value.reason == "response_encoding_unsupported"
