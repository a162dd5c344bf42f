"""The self-test can fail: pointed at an unsafe proxy, or at a guard without its address check,
every class reports the cases that get through, and the report names no secret value.

The unsafe proxy below is what keyside must not be: it injects keys but checks no Host, Origin,
token or path, passes the caller's headers on, relays the upstream's bytes unscrubbed and follows
redirects with every header. It runs on 127.0.0.1 and forwards only to the loopback upstreams of
the test. It rejects any other destination itself, and the socket fence would stop one as well.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

import keyside.guard.policy
from keyside.guard import Verdict
from keyside.selftest import ssrf
from keyside.selftest.results import ClassResult
from keyside.selftest.runner import run_sidecar_classes
from keyside.selftest.secret_attacks import log_redaction
from keyside.selftest.session import KEYED_SERVICES, Target, Upstreams, new_key

HOP_BY_HOP = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}
MAX_HOPS = 5


class UnsafeProxy:
    """A key-injecting proxy with none of the sidecar's checks."""

    def __init__(self, upstreams: Upstreams, keys: dict[str, str]):
        self.upstreams = upstreams
        self.keys = keys
        self.port = 0
        self._runner: web.ServerRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.ServerRunner(web.Server(self._handle))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        prefix = "/api/svc/"
        if not request.raw_path.startswith(prefix):
            return web.json_response({"ok": True})
        service, _, rest = request.raw_path[len(prefix):].partition("/")
        url = f"{self.upstreams.service.origin}/{rest}"
        headers = CIMultiDict((name, value) for name, value in request.headers.items()
                              if name.lower() not in HOP_BY_HOP)
        key = self.keys.get(service)
        if service == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif service == "header":
            headers.setdefault("X-Api-Key", str(key))  # a caller's own key wins
        elif service == "query":
            url += ("&" if "?" in url else "?") + f"api_key={key}"
        body = await request.read()
        return await self._forward(request, url, headers, body)

    async def _forward(self, request: web.BaseRequest, url: str, headers: CIMultiDict[str],
                       body: bytes) -> web.StreamResponse:
        assert self._client is not None
        for _ in range(MAX_HOPS):
            host = urlsplit(url).hostname or ""
            if not ipaddress.ip_address(host).is_loopback:
                raise web.HTTPBadGateway(text="the unsafe test proxy forwards to loopback only")
            async with self._client.request(request.method, url, headers=headers, data=body or None,
                                            allow_redirects=False) as upstream:
                location = upstream.headers.get("Location")
                if upstream.status in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    continue
                response = web.Response(status=upstream.status, body=await upstream.read())
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding":
                        response.headers[name] = value
                return response
        raise web.HTTPBadGateway(text="too many redirects")


@pytest.fixture
async def unsafe_target() -> AsyncIterator[Target]:
    upstreams = await Upstreams().start()
    keys = {name: new_key(name) for name in KEYED_SERVICES}
    proxy = UnsafeProxy(upstreams, keys)
    await proxy.start()
    try:
        yield Target(proxy.port, secrets.token_hex(32), keys, upstreams,
                     ["http://127.0.0.1:5173", "https://app.example"], log_dir=None)
    finally:
        await proxy.close()
        await upstreams.close()


# For each sidecar class, cases the unsafe proxy must fail and a case it must still pass (None
# where every case of the class needs a check the proxy lacks).
EXPECTED_DETECTIONS = {
    "host_header": (["rebinding_name", "decimal_loopback", "suffix_trick"], "ipv4_loopback"),
    "origin": (["null", "foreign_site", "suffix_match"], None),
    "token": (["no_authorization", "token_in_query", "basic_scheme"], None),
    "crlf": (["encoded_crlf_in_query", "encoded_crlf_in_path"], "bare_cr_in_header_value"),
    "path": (["dot_dot", "encoded_slash", "outside_prefixes"], "plain"),
    "credential_override": (["stripped_headers", "header_key_other_spellings"], None),
    "key_echo": (["echo_bearer", "leak_split_inside_key", "echo_query_percent_encoded"], None),
    "redirect": (["unallowed_loopback_denied", "cross_origin_bearer_drops_key", "cross_origin_key_in_location_denied"],
                 None),
}


def failed_ids(result: ClassResult) -> set[str]:
    return {failure.case_id for failure in result.failures}


async def test_unsafe_proxy_fails_every_class(unsafe_target: Target) -> None:
    results = {result.name: result for result in await run_sidecar_classes(unsafe_target)}
    assert set(results) == set(EXPECTED_DETECTIONS)
    for name, (must_fail, must_pass) in EXPECTED_DETECTIONS.items():
        result = results[name]
        assert not result.passed, name
        assert set(must_fail) <= failed_ids(result), (name, failed_ids(result))
        if must_pass is not None:
            assert must_pass not in failed_ids(result), (name, must_pass)


async def test_failure_report_names_no_secret(unsafe_target: Target) -> None:
    results = await run_sidecar_classes(unsafe_target)
    text = "\n".join(result.summary() for result in results)
    text += "\n".join(failure.problem for result in results for failure in result.failures)
    assert "the reply contains the bearer key" in text
    for value in unsafe_target.secret_values():
        assert value not in text


async def test_missing_log_fails_log_class(unsafe_target: Target) -> None:
    result = await log_redaction(unsafe_target)
    assert not result.passed
    assert "log_written" in failed_ids(result)


async def test_log_with_key_fails_log_class(unsafe_target: Target, tmp_path: Path) -> None:
    (tmp_path / "sidecar.log").write_text(f"request rejected path=/x?k={unsafe_target.keys['query']}\n")
    unsafe_target.log_dir = tmp_path
    result = await log_redaction(unsafe_target)
    assert failed_ids(result) == {"query_key_absent"}


def _allow_everything(address: object) -> Verdict:
    return Verdict(True, "allow_public", str(address))


async def test_guard_without_address_check_fails_ssrf(monkeypatch: pytest.MonkeyPatch) -> None:
    # A guard whose policy skips the address classification: URL syntax checks still apply, but
    # every numeric spelling of loopback and every private DNS answer gets through.
    monkeypatch.setattr(keyside.guard.policy, "classify_address", _allow_everything)
    urls = await ssrf.ssrf_urls()
    allowances = await ssrf.ssrf_allowances()
    assert not urls.passed
    assert {"ipv4-decimal-integer", "ipv6-mapped-metadata", "name-metadata-google"} <= failed_ids(urls)
    assert "scheme-file" not in failed_ids(urls)
    assert "metadata-never-lifted" in failed_ids(allowances)


async def test_classifier_allowing_all_fails_address_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssrf, "classify_address", _allow_everything)
    result = await ssrf.ssrf_addresses()
    assert not result.passed
    assert "v4-unspecified" in failed_ids(result)
    assert "v4-public-above-172-31" not in failed_ids(result)


async def test_problems_masked_with_target_secrets(unsafe_target: Target) -> None:
    async def quoting_attack(target: Target) -> ClassResult:
        result = ClassResult("quoting", "a class whose problem quotes what a broken sidecar sent")
        result.record("echo", [f"expected reason token_invalid, got {target.token}",
                               f"upstream path /x/{target.keys['query']}"])
        return result

    (result,) = await run_sidecar_classes(unsafe_target, (quoting_attack,))
    problem = result.failures[0].problem
    assert unsafe_target.token not in problem
    assert unsafe_target.keys["query"] not in problem
    assert "[REDACTED]" in problem
