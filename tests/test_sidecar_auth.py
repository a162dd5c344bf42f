"""Token checks of a real sidecar: the UI token, scoped exec tokens, rotation and failure backoff.

Each test talks from its own loopback source address (127.0.0.N), because the sidecar slows
repeated failures per client address and the tests must not slow each other down.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from secrets import token_hex
from typing import Any

import aiohttp
import pytest

from keyside.sidecar.auth import FIRST_DELAY_S, FREE_FAILURES
from sidecar_process import SidecarProcess, bearer, header, service
from upstreams import BackgroundUpstreams, UpstreamServer

KEY = "sk-auth-test-Zm91cnR5LXR3bw"
ANTHROPIC_KEY = "sk-ant-test-3b9f0c2d7e"
_source_addresses = itertools.count(2)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with BackgroundUpstreams(UpstreamServer(KEY)) as (server,):
        yield server


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[UpstreamServer]:
    with BackgroundUpstreams(UpstreamServer(ANTHROPIC_KEY)) as (server,):
        yield server


@pytest.fixture(scope="module")
def sidecar(upstream: UpstreamServer, anthropic_upstream: UpstreamServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    services = [
        service("openai", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), methods=["GET", "POST"],
                paths=["/v1/", "/bearer/", "/echo/"]),
        service("anthropic", anthropic_upstream.origin, secret="ANTHROPIC_API_KEY", inject=header("x-api-key"),
                methods=["POST"], paths=["/v1/messages"], client_key_header="x-api-key"),
        service("other", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), paths=["/bearer/"]),
    ]
    with SidecarProcess(services=services, secrets={"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY},
                        origins=["http://127.0.0.1:5173"], log_dir=tmp_path_factory.mktemp("auth-logs")) as process:
        yield process


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose connections come from a loopback source address no other test uses."""
    connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{next(_source_addresses)}", 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def exec_token(sidecar: SidecarProcess) -> Iterator[str]:
    token = token_hex(32)
    reply = sidecar.control({"type": "add_token", "token_id": "exec-test", "token": token,
                             "services": ["openai", "anthropic"]})
    assert reply["ok"] is True, reply
    yield token
    sidecar.control({"type": "revoke_token", "token_id": "exec-test"})


async def call(client: aiohttp.ClientSession, sidecar: SidecarProcess, path: str, headers: dict[str, str],
               method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    async with client.request(method, sidecar.url(path), headers=headers, **kwargs) as response:
        body = await response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, None


def reason_of(body: dict[str, Any] | None) -> str | None:
    return (body or {}).get("error", {}).get("reason")


# ---- the UI token ------------------------------------------------------------------------------

TOKEN_CASES = [
    ("no_header", lambda token: {}, "token_missing"),
    ("wrong_token", lambda token: {"Authorization": f"Bearer {token_hex(32)}"}, "token_invalid"),
    ("empty_bearer", lambda token: {"Authorization": "Bearer "}, "token_invalid"),
    ("basic_scheme", lambda token: {"Authorization": f"Basic {token}"}, "token_invalid"),
    ("token_without_scheme", lambda token: {"Authorization": token}, "token_invalid"),
    ("truncated_token", lambda token: {"Authorization": f"Bearer {token[:-1]}"}, "token_invalid"),
    ("token_plus_suffix", lambda token: {"Authorization": f"Bearer {token}x"}, "token_invalid"),
    ("token_in_cookie", lambda token: {"Cookie": f"token={token}"}, "token_missing"),
    ("token_in_custom_header", lambda token: {"X-Token": token}, "token_missing"),
]


@pytest.mark.parametrize(("make_headers", "reason"), [case[1:] for case in TOKEN_CASES],
                         ids=[case[0] for case in TOKEN_CASES])
async def test_token_rejected(make_headers: Any, reason: str, sidecar: SidecarProcess, upstream: UpstreamServer,
                              client: aiohttp.ClientSession) -> None:
    upstream.clear()
    status, body = await call(client, sidecar, "/api/svc/openai/bearer/x", make_headers(sidecar.token))
    assert status == 401
    assert reason_of(body) == reason
    assert not upstream.requests


@pytest.mark.parametrize("parameter", ["token", "access_token", "key", "authorization"])
async def test_token_in_query_not_accepted(parameter: str, sidecar: SidecarProcess, upstream: UpstreamServer,
                                          client: aiohttp.ClientSession) -> None:
    upstream.clear()
    for path in (f"/api/svc/openai/bearer/x?{parameter}={sidecar.token}", f"/api/status?{parameter}={sidecar.token}"):
        status, body = await call(client, sidecar, path, {})
        assert status == 401, path
        assert reason_of(body) == "token_missing"
    assert not upstream.requests


async def test_bearer_scheme_case_insensitive(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    status, _ = await call(client, sidecar, "/api/svc/openai/bearer/x", {"Authorization": f"bearer {sidecar.token}"})
    assert status == 200


async def test_form_post_without_token(sidecar: SidecarProcess, upstream: UpstreamServer,
                                       client: aiohttp.ClientSession) -> None:
    upstream.clear()
    status, body = await call(client, sidecar, "/api/svc/openai/echo/x", {"Origin": "http://127.0.0.1:5173"},
                              method="POST", data={"prompt": "x"})
    assert status == 401
    assert reason_of(body) == "token_missing"
    assert not upstream.requests


async def test_ui_token_not_accepted_in_sdk_header(sidecar: SidecarProcess, anthropic_upstream: UpstreamServer,
                                                   client: aiohttp.ClientSession) -> None:
    anthropic_upstream.clear()
    status, body = await call(client, sidecar, "/api/svc/anthropic/v1/messages", {"x-api-key": sidecar.token},
                              method="POST", json={})
    assert status == 401
    assert reason_of(body) == "token_invalid"
    assert not anthropic_upstream.requests


# ---- exec tokens -------------------------------------------------------------------------------


async def test_exec_token_as_bearer(exec_token: str, sidecar: SidecarProcess, upstream: UpstreamServer,
                                    client: aiohttp.ClientSession) -> None:
    upstream.clear()
    status, body = await call(client, sidecar, "/api/svc/openai/v1/models", {"Authorization": f"Bearer {exec_token}"})
    assert status == 200
    assert body is not None and body["data"][0]["id"] == "fake-model"
    (received,) = upstream.requests
    assert received.header("Authorization") == f"Bearer {KEY}"
    assert not received.contains(exec_token)


async def test_exec_token_in_sdk_header(exec_token: str, sidecar: SidecarProcess,
                                        anthropic_upstream: UpstreamServer, client: aiohttp.ClientSession) -> None:
    anthropic_upstream.clear()
    status, body = await call(client, sidecar, "/api/svc/anthropic/v1/messages",
                              {"x-api-key": exec_token, "anthropic-version": "2023-06-01"}, method="POST",
                              json={"model": "m", "messages": []})
    assert status == 200
    assert body is not None and body["type"] == "message"
    (received,) = anthropic_upstream.requests
    assert received.header("x-api-key") == ANTHROPIC_KEY
    assert received.header("anthropic-version") == "2023-06-01"
    assert not received.contains(exec_token)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/svc/other/bearer/x"),
    ("GET", "/api/status"),
    ("GET", "/api/traffic"),
    ("GET", "/api/feed?url=http%3A%2F%2F127.0.0.1%2Ffeed"),
    ("GET", "/api/nosuch"),
], ids=["other_service", "status", "traffic", "feed", "unknown_route"])
async def test_exec_token_scope(method: str, path: str, exec_token: str, sidecar: SidecarProcess,
                                upstream: UpstreamServer, client: aiohttp.ClientSession) -> None:
    upstream.clear()
    status, body = await call(client, sidecar, path, {"Authorization": f"Bearer {exec_token}"}, method=method)
    assert status == 403
    assert reason_of(body) == "token_scope"
    assert not upstream.requests


async def test_exec_token_revoked(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    token = token_hex(32)
    assert sidecar.control({"type": "add_token", "token_id": "exec-revoke", "token": token,
                            "services": ["openai"]})["ok"] is True
    status, _ = await call(client, sidecar, "/api/svc/openai/bearer/x", {"Authorization": f"Bearer {token}"})
    assert status == 200
    reply = sidecar.control({"type": "revoke_token", "token_id": "exec-revoke"})
    assert reply == {"type": "reply", "id": reply["id"], "ok": True, "token_id": "exec-revoke", "revoked": True}
    status, body = await call(client, sidecar, "/api/svc/openai/bearer/x", {"Authorization": f"Bearer {token}"})
    assert status == 401
    assert reason_of(body) == "token_invalid"
    status, _ = await call(client, sidecar, "/api/svc/openai/bearer/x", sidecar.auth_headers())
    assert status == 200


BAD_ADD_TOKEN = [
    ("unknown_service", {"token_id": "exec-x", "services": ["nosuch"]}, "unknown_service"),
    ("no_services", {"token_id": "exec-x", "services": []}, "unknown_service"),
    ("short_token", {"token_id": "exec-x", "token": "abc", "services": ["openai"]}, "invalid_token"),
    ("bad_token_id", {"token_id": "exec x\n", "services": ["openai"]}, "invalid_message"),
    ("reuses_ui_token", {"token_id": "exec-x", "token": "{ui}", "services": ["openai"]}, "token_conflict"),
    ("ui_token_id", {"token_id": "ui", "services": ["openai"]}, "token_conflict"),
]


@pytest.mark.parametrize(("fields", "reason"), [case[1:] for case in BAD_ADD_TOKEN],
                         ids=[case[0] for case in BAD_ADD_TOKEN])
def test_add_token_rejected(fields: dict[str, Any], reason: str, sidecar: SidecarProcess) -> None:
    message = {"type": "add_token", "token": token_hex(32), **fields}
    if message["token"] == "{ui}":
        message["token"] = sidecar.token
    reply = sidecar.control(message)
    assert reply["ok"] is False
    assert reply["reason"] == reason
    assert sidecar.token not in json.dumps(reply)


async def test_rotation_keeps_exec_tokens(upstream: UpstreamServer, client: aiohttp.ClientSession) -> None:
    services = [service("openai", upstream.origin, secret="OPENAI_API_KEY", inject=bearer(), paths=["/bearer/"])]
    with SidecarProcess(services=services, secrets={"OPENAI_API_KEY": KEY}) as sidecar:
        old_token = sidecar.token
        exec_token = token_hex(32)
        assert sidecar.control({"type": "add_token", "token_id": "exec-1", "token": exec_token,
                                "services": ["openai"]})["ok"] is True
        new_token = token_hex(32)
        assert sidecar.control({"type": "rotate_token", "token": new_token})["ok"] is True

        status, body = await call(client, sidecar, "/api/status", {"Authorization": f"Bearer {old_token}"})
        assert status == 401
        assert reason_of(body) == "token_invalid"
        status, _ = await call(client, sidecar, "/api/status", {"Authorization": f"Bearer {new_token}"})
        assert status == 200
        status, _ = await call(client, sidecar, "/api/svc/openai/bearer/x", {"Authorization": f"Bearer {exec_token}"})
        assert status == 200
        assert old_token not in sidecar.stdout_text()
        assert new_token not in sidecar.stdout_text()


# ---- failure backoff ---------------------------------------------------------------------------


async def test_repeated_failures_slowed_and_logged(sidecar: SidecarProcess, client: aiohttp.ClientSession) -> None:
    attempts = FREE_FAILURES + 3
    elapsed = []
    for _ in range(attempts):
        started = time.monotonic()
        status, body = await call(client, sidecar, "/api/status", {"Authorization": f"Bearer {token_hex(32)}"})
        elapsed.append(time.monotonic() - started)
        assert status == 401
        assert reason_of(body) == "token_invalid"

    # The third slowed failure waits FIRST_DELAY_S * 4 before its 401. This is a lower bound that
    # a slow machine only makes larger.
    assert elapsed[-1] >= FIRST_DELAY_S * 4
    status, _ = await call(client, sidecar, "/api/status", sidecar.auth_headers())
    assert status == 200

    log_text = (Path(sidecar.bootstrap["log_dir"]) / "sidecar.log").read_text()
    warnings = [line for line in log_text.splitlines() if "token check failed repeatedly" in line]
    assert len(warnings) == 1
    assert sidecar.token not in log_text
