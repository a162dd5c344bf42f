"""Shared steps of the sidecar attack classes: send a request, compare the verdict, look for leaks."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import quote, quote_plus

from keyside.selftest.rawhttp import RawReply, build_request, send_raw
from keyside.selftest.results import ClassResult
from keyside.selftest.session import Target

logger = logging.getLogger(__name__)


def error_reason(reply: RawReply) -> str | None:
    """Return the sidecar's error reason from a JSON error body, or None."""
    try:
        return json.loads(reply.body)["error"]["reason"]
    except (ValueError, KeyError, TypeError):
        return None


def expect_verdict(reply: RawReply, status: int, reason: str | None = None) -> list[str]:
    """Return the differences between the reply and the expected status and reason."""
    problems = []
    if reply.status != status:
        problems.append(f"expected status {status}, got {reply.status or 'no reply'}")
    if reason is not None and error_reason(reply) != reason:
        problems.append(f"expected reason {reason}, got {error_reason(reply) or 'none'}")
    return problems


def leak_forms(value: str) -> set[str]:
    """Return the spellings of a secret that count as a leak: raw, URL-encoded and JSON-escaped."""
    return {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}


def leaked_in_reply(target: Target, reply: RawReply) -> list[str]:
    """Return a problem for each key or token that the reply's headers or body contain."""
    problems = []
    header_text = "\n".join(f"{name}: {value}" for name, value in reply.headers)
    for label, value in secret_labels(target):
        for form in leak_forms(value):
            if form in header_text or form.encode("utf-8") in reply.body:
                problems.append(f"the reply contains the {label}")
                break
    return problems


def secret_labels(target: Target) -> list[tuple[str, str]]:
    """Return (label, value) for every key and the token; labels never contain a value."""
    labels = [(f"{service} key", value) for service, value in target.keys.items()]
    labels.append(("session token", target.token))
    return labels


def expect_nothing_upstream(target: Target) -> list[str]:
    """Return a problem naming each upstream that received a request."""
    upstreams = target.upstreams
    names = {"service upstream": upstreams.service, "allowed upstream": upstreams.allowed,
             "stranger upstream": upstreams.stranger}
    return [f"the {name} received {len(upstream.requests)} request(s)"
            for name, upstream in names.items() if upstream.requests]


async def request(target: Target, method: str, path: str, headers: Sequence[tuple[str, str]] = (),
                  *, body: bytes = b"", token: bool = True, connection: str = "close") -> RawReply:
    """Send one request to the sidecar, with the session token in Authorization unless `token` is False."""
    all_headers = list(headers)
    if token:
        all_headers.insert(0, ("Authorization", f"Bearer {target.token}"))
    return await send_raw(target.port, build_request(method, path, target.port, all_headers, body, connection))


async def run_case(result: ClassResult, case_id: str, probe: Callable[[], Awaitable[list[str]]]) -> None:
    """Run one case and record its problems; an exception is recorded as a failure of the case."""
    try:
        problems = await probe()
    except Exception as error:  # one broken case must not hide the other cases' results
        logger.warning("self-test case failed to run class=%s case=%s error=%s", result.name, case_id,
                       type(error).__name__)
        problems = [f"the request failed: {type(error).__name__}"]
    result.record(case_id, problems)
