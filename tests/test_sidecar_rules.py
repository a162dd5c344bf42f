"""The sidecar's rules as plain functions: paths, forwarded headers, injection, tokens, bootstrap."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from keyside.manifest import InjectSpec, ServiceSpec, ValidateSpec
from keyside.redact import MASK, Redactor
from keyside.sidecar.config import BootstrapError, check_secret_value, normalise_origin, parse_bootstrap
from keyside.sidecar.forward_headers import forward_request_headers, response_headers
from keyside.sidecar.inject import build_outbound
from keyside.sidecar.proxy_paths import check_forward_path, check_query, drop_query_param, path_allowed
from keyside.sidecar.responses import SidecarHttpError
from keyside.sidecar.scrub import ScrubPattern
from keyside.sidecar.tokens import TokenConflict, TokenRegistry
from keyside.sidecar.traffic import TrafficLog
from keyside.sidecar.validation import classify_status

DATA = Path(__file__).parent / "data"
PATH_CASES = json.loads((DATA / "sidecar_paths.json").read_text())["cases"]
HEADER_CASES = json.loads((DATA / "sidecar_request_headers.json").read_text())
PREFIXES = ("/v1/", "/api/quote")
KEY = "sk-test-key/with+chars"
TOKEN = "f" * 64


def make_service(inject: InjectSpec | None, **overrides: Any) -> ServiceSpec:
    fields: dict[str, Any] = {"name": "svc", "upstream": "https://api.example", "secret": "API_KEY" if inject else None,
                              "inject": inject, "methods": ("GET", "POST"), "paths": PREFIXES}
    fields.update(overrides)
    return ServiceSpec(**fields)


# ---- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PATH_CASES, ids=[case["id"] for case in PATH_CASES])
def test_forward_path_rules(case: dict[str, Any]) -> None:
    path = case["path"]
    if case["status"] == 400:
        with pytest.raises(SidecarHttpError) as caught:
            check_forward_path(path)
        assert caught.value.status == 400
        assert caught.value.reason == case["reason"]
        return
    check_forward_path(path)
    assert path_allowed(path, PREFIXES) is (case["status"] == 200)


@pytest.mark.parametrize("query", ["a=%0d%0aX: y", "a=%0A", "a=%00", "a=\x01"],
                         ids=["crlf", "lf", "nul", "raw_control"])
def test_query_control_characters_rejected(query: str) -> None:
    with pytest.raises(SidecarHttpError) as caught:
        check_query(query)
    assert caught.value.reason == "invalid_query"


def test_query_plain_accepted() -> None:
    check_query("symbol=AAPL&q=a%20b%09c")


@pytest.mark.parametrize(("query", "expected"), [
    ("api_key=attacker&symbol=AAPL", "symbol=AAPL"),
    ("symbol=AAPL&API_KEY=attacker&Api_Key=x", "symbol=AAPL"),
    ("api%5Fkey=attacker&x=1", "x=1"),
    ("api_key&x=1", "x=1"),
    ("x=api_key", "x=api_key"),
    ("", ""),
], ids=["first", "case_variants", "encoded_name", "no_value", "value_only", "empty"])
def test_drop_query_param(query: str, expected: str) -> None:
    assert drop_query_param(query, "api_key") == expected


# ---- request and response headers --------------------------------------------------------------


def incoming(pairs: list[list[str]]) -> CIMultiDictProxy[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        headers.add(name, value)
    headers.add("Connection", "keep-alive, X-Hop")
    headers.add("Authorization", f"Bearer {TOKEN}")
    return CIMultiDictProxy(headers)


def test_credential_headers_stripped() -> None:
    service = make_service(InjectSpec("header", name="X-Provider-Key"), client_key_header="x-sdk-key")
    pairs = HEADER_CASES["stripped"] + HEADER_CASES["forwarded"] + [["X-Provider-Key", "attacker"],
                                                                     ["X-Sdk-Key", "attacker"]]
    forwarded = forward_request_headers(incoming(pairs), service)
    for name, _ in HEADER_CASES["stripped"] + [["X-Provider-Key", ""], ["X-Sdk-Key", ""], ["Authorization", ""]]:
        assert name not in forwarded, name
    for name, value in HEADER_CASES["forwarded"]:
        assert forwarded.get(name) == value, name


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "a\x7fb"], ids=["nul", "cr", "lf", "del"])
def test_control_characters_in_header_rejected(value: str) -> None:
    with pytest.raises(SidecarHttpError) as caught:
        forward_request_headers(CIMultiDictProxy(CIMultiDict({"X-Note": value})), make_service(None))
    assert caught.value.status == 400
    assert caught.value.reason == "header_control_characters"


def test_response_headers_filtered_and_scrubbed() -> None:
    pattern = ScrubPattern([KEY])
    upstream = [
        ("Content-Type", "application/json"), ("Set-Cookie", "s=1"), ("WWW-Authenticate", "Basic"),
        ("Access-Control-Allow-Origin", "*"), ("Strict-Transport-Security", "max-age=1"),
        ("Content-Encoding", "gzip"), ("Content-Length", "10"), ("Location", "https://x.example"),
        ("X-Echo", f"key={KEY}"), ("X-RateLimit-Remaining", "99"), ("Clear-Site-Data", '"*"'),
        (f"X-{KEY}", "1"),
    ]
    kept = response_headers(upstream, pattern)
    assert sorted(kept.keys()) == ["Content-Type", "X-Echo", "X-RateLimit-Remaining"]
    assert kept["X-Echo"] == "key=[REDACTED]"


# ---- injection ---------------------------------------------------------------------------------


def test_inject_header() -> None:
    outbound = build_outbound(make_service(InjectSpec("header", name="X-Api-Key")), KEY, "/v1/x", "a=1",
                              CIMultiDict())
    assert outbound.url == "https://api.example/v1/x?a=1"
    assert outbound.headers["X-Api-Key"] == KEY
    assert outbound.sensitive_headers == ("X-Api-Key",)


def test_inject_bearer() -> None:
    outbound = build_outbound(make_service(InjectSpec("bearer")), KEY, "/v1/x", "", CIMultiDict())
    assert outbound.headers["Authorization"] == f"Bearer {KEY}"
    assert outbound.url == "https://api.example/v1/x"


@pytest.mark.parametrize(("username", "pair"), [("user", f"user:{KEY}"), (None, f"{KEY}:")],
                         ids=["key_as_password", "key_as_user"])
def test_inject_basic(username: str | None, pair: str) -> None:
    outbound = build_outbound(make_service(InjectSpec("basic", username=username)), KEY, "/v1/x", "", CIMultiDict())
    assert outbound.headers["Authorization"] == "Basic " + base64.b64encode(pair.encode()).decode()


def test_inject_query_replaces_caller_param() -> None:
    outbound = build_outbound(make_service(InjectSpec("query", name="api_key")), KEY, "/v1/x",
                              "api_key=attacker&symbol=AAPL", CIMultiDict())
    assert outbound.url == "https://api.example/v1/x?symbol=AAPL&api_key=sk-test-key%2Fwith%2Bchars"
    assert outbound.sensitive_query_params == ("api_key",)
    assert "sk-test-key%2Fwith%2Bchars" in outbound.sensitive_values


def test_inject_path_template() -> None:
    outbound = build_outbound(make_service(InjectSpec("path", template="/bot{key}")), KEY, "/getMe", "",
                              CIMultiDict())
    assert outbound.url == "https://api.example/botsk-test-key%2Fwith%2Bchars/getMe"


def test_keyless_service_injects_nothing() -> None:
    outbound = build_outbound(make_service(None), None, "/v1/x", "", CIMultiDict({"Accept": "*/*"}))
    assert outbound.url == "https://api.example/v1/x"
    assert "Authorization" not in outbound.headers
    assert outbound.sensitive_values == ()


# ---- tokens ------------------------------------------------------------------------------------


def test_token_registry_grants() -> None:
    registry = TokenRegistry("u" * 64)
    registry.add_exec_token("exec-1", "e" * 64, frozenset({"openai"}))
    ui = registry.match("u" * 64)
    exec_grant = registry.match("e" * 64)
    assert ui is not None and ui.is_ui
    assert exec_grant is not None and not exec_grant.is_ui
    assert exec_grant.allows_service("openai")
    assert not exec_grant.allows_service("finnhub")
    assert registry.match("e" * 64, allow_ui=False) == exec_grant
    assert registry.match("u" * 64, allow_ui=False) is None


@pytest.mark.parametrize("presented", [None, "", "u" * 63, "u" * 65, "U" * 64, "x" * 5000],
                         ids=["none", "empty", "short", "long", "case", "huge"])
def test_token_registry_rejects(presented: str | None) -> None:
    assert TokenRegistry("u" * 64).match(presented) is None


def test_empty_registry_matches_nothing() -> None:
    registry = TokenRegistry()
    assert registry.match("") is None
    assert registry.match("u" * 64) is None


def test_rotation_keeps_exec_tokens() -> None:
    registry = TokenRegistry("u" * 64)
    registry.add_exec_token("exec-1", "e" * 64, frozenset({"openai"}))
    registry.set_ui_token("v" * 64)
    assert registry.match("u" * 64) is None
    assert registry.match("v" * 64) is not None
    assert registry.match("e" * 64) is not None


def test_revoke_keeps_ui_token() -> None:
    registry = TokenRegistry("u" * 64)
    registry.add_exec_token("exec-1", "e" * 64, frozenset({"openai"}))
    assert registry.revoke_exec_token("exec-1") is True
    assert registry.revoke_exec_token("exec-1") is False
    assert registry.match("e" * 64) is None
    assert registry.match("u" * 64) is not None


@pytest.mark.parametrize(("token_id", "token"), [("exec-1", "f" * 64), ("ui", "g" * 64), ("exec-2", "u" * 64)],
                         ids=["id_taken", "ui_id", "equals_ui_token"])
def test_exec_token_conflicts(token_id: str, token: str) -> None:
    registry = TokenRegistry("u" * 64)
    registry.add_exec_token("exec-1", "e" * 64, frozenset({"openai"}))
    with pytest.raises(TokenConflict):
        registry.add_exec_token(token_id, token, frozenset({"openai"}))


# ---- bootstrap ---------------------------------------------------------------------------------


def bootstrap(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "bootstrap", "version": 1, "token": TOKEN, "nonce": "a" * 64,
        "secrets": {"API_KEY": "sk-abc-123"},
        "services": [make_service(InjectSpec("bearer"), validate=ValidateSpec("/v1/models")).to_dict()],
        "origins": ["http://127.0.0.1:5173", "HTTPS://App.Example:443"], "preferred_port": 0,
        "allow_private": ["127.0.0.1:8080", "[::1]:9000"], "nameservers": ["127.0.0.1:5353"],
        "log_dir": None, "log_level": "INFO",
    }
    message.update(overrides)
    return message


def test_bootstrap_parsed() -> None:
    config = parse_bootstrap(bootstrap(limits={"read_timeout_s": 0.5}))
    assert config.services["svc"].inject == InjectSpec("bearer")
    assert config.origins == frozenset({"http://127.0.0.1:5173", "https://app.example"})
    assert config.allow_private == frozenset({("127.0.0.1", 8080), ("::1", 9000)})
    assert config.nameservers == (("127.0.0.1", 5353),)
    assert config.timeouts == {"read_timeout_s": 0.5}


BAD_BOOTSTRAPS = [
    ("wrong_type", {"type": "set_secret"}),
    ("wrong_version", {"version": 2}),
    ("short_token", {"token": "abc"}),
    ("token_with_newline", {"token": "a" * 60 + "\nabc"}),
    ("missing_nonce", {"nonce": None}),
    ("secret_with_newline", {"secrets": {"API_KEY": "sk-abc\r\nX-Evil: 1"}}),
    ("secret_non_ascii", {"secrets": {"API_KEY": "sk-\u00e9"}}),
    ("secret_bad_name", {"secrets": {"api key": "x"}}),
    ("secret_not_string", {"secrets": {"API_KEY": 5}}),
    ("origin_with_path", {"origins": ["http://127.0.0.1:5173/app"]}),
    ("origin_null", {"origins": ["null"]}),
    ("service_bad_upstream", {"services": [{**bootstrap()["services"][0], "upstream": "ftp://x"}]}),
    ("service_upstream_path", {"services": [{**bootstrap()["services"][0], "upstream": "https://x/p"}]}),
    ("service_bad_method", {"services": [{**bootstrap()["services"][0], "methods": ["TRACE"]}]}),
    ("service_path_traversal", {"services": [{**bootstrap()["services"][0], "paths": ["/v1/../"]}]}),
    ("service_twice", {"services": bootstrap()["services"] * 2}),
    ("nameserver_name", {"nameservers": ["dns.example:53"]}),
    ("allow_private_no_port", {"allow_private": ["127.0.0.1"]}),
    ("relative_log_dir", {"log_dir": "logs"}),
    ("bad_log_level", {"log_level": "LOUD"}),
    ("bad_limit", {"limits": {"read_timeout_s": -1}}),
    ("unknown_limit", {"limits": {"max_redirects": 1}}),
]


@pytest.mark.parametrize(("overrides"), [case[1] for case in BAD_BOOTSTRAPS], ids=[case[0] for case in BAD_BOOTSTRAPS])
def test_bad_bootstrap_rejected(overrides: dict[str, Any]) -> None:
    message = bootstrap(**overrides)
    with pytest.raises(BootstrapError) as caught:
        parse_bootstrap(message)
    text = str(caught.value)
    assert "sk-abc" not in text
    assert TOKEN not in text


def test_secret_value_error_names_secret_not_value() -> None:
    with pytest.raises(BootstrapError) as caught:
        check_secret_value("API_KEY", "sk-secret\n")
    assert "API_KEY" in str(caught.value)
    assert "sk-secret" not in str(caught.value)
    assert caught.value.reason == "invalid_secret_value"


@pytest.mark.parametrize(("origin", "expected"), [
    ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
    ("HTTP://LOCALHOST:80", "http://localhost"),
    ("https://[::1]:8443/", "https://[::1]:8443"),
], ids=["plain", "default_port", "ipv6"])
def test_origin_normalised(origin: str, expected: str) -> None:
    assert normalise_origin(origin) == expected


@pytest.mark.parametrize(("status", "result", "reason"), [
    (200, "valid", "status_expected"), (401, "invalid", "key_rejected"), (403, "invalid", "key_rejected"),
    (404, "invalid", "unexpected_status"), (429, "unreachable", "upstream_status"),
    (503, "unreachable", "upstream_status"),
], ids=["ok", "unauthorized", "forbidden", "not_found", "rate_limited", "unavailable"])
def test_validation_status_classified(status: int, result: str, reason: str) -> None:
    classified = classify_status(status, 200)
    assert classified.result == result
    assert classified.reason == reason
    assert classified.status == status


# --- the token list and the traffic log, which run on every request ---

def test_token_values_follow_every_change() -> None:
    registry = TokenRegistry("ui-token-0123456789")
    registry.add_exec_token("job", "exec-token-0123456789", frozenset({"openai"}))
    assert set(registry.values()) == {"ui-token-0123456789", "exec-token-0123456789"}
    registry.set_ui_token("ui-token-rotated-0123")
    assert set(registry.values()) == {"ui-token-rotated-0123", "exec-token-0123456789"}
    assert registry.match("ui-token-0123456789") is None
    assert registry.revoke_exec_token("job")
    assert registry.values() == ("ui-token-rotated-0123",)
    assert registry.match("exec-token-0123456789") is None


def test_traffic_entry_masks_path_and_drops_query() -> None:
    traffic = TrafficLog(Redactor(["sk-live-0123456789"]))
    traffic.record(started_wall=1.0, method="GET", raw_path="/api/svc/x/sk-live-0123456789?key=other-secret",
                   status=200, duration_s=0.0015, service="x", reason=None)
    traffic.record(started_wall=2.0, method="POST", raw_path="/api/nowhere", status=404, duration_s=0.0,
                   service=None, reason="not_found")
    first, second = traffic.entries()
    assert first["path"] == f"/api/svc/x/{MASK}"
    assert "other-secret" not in json.dumps(traffic.entries())
    assert first["duration_ms"] == 1.5
    assert second["reason"] == "not_found"
    counters = traffic.counters()
    assert counters["by_status"] == {"2xx": 1, "4xx": 1}
    assert counters["by_reason"] == {"not_found": 1}
    assert counters["by_service"] == {"x": 1}
    assert counters["requests"] == 2
