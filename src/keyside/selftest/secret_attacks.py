"""Attack classes aimed at the keys themselves: a caller overriding the credential, an upstream
echoing it, a redirect carrying it to another origin, and the sidecar's own log.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from keyside.redact import MASK
from keyside.selftest import corpus
from keyside.selftest.probes import (
    expect_verdict,
    leak_forms,
    leaked_in_reply,
    request,
    run_case,
    secret_labels,
)
from keyside.selftest.results import ClassResult
from keyside.selftest.session import Target
from keyside.selftest.upstream import RecordedRequest
from keyside.sidecar.logsetup import LOG_FILE_NAME

# Path of the request that a redirect case sends to its target upstream.
LANDING_PATH = "/echo/landed"


async def _forward_once(target: Target, path: str, headers: list[tuple[str, str]] | None = None,
                        connection: str = "close") -> tuple[list[str], RecordedRequest | None]:
    """Send a GET through the sidecar; return its problems and the one request the upstream received."""
    upstream = target.upstreams.service
    upstream.clear()
    reply = await request(target, "GET", path, headers or [], connection=connection)
    problems = expect_verdict(reply, 200)
    if len(upstream.requests) != 1:
        return problems + [f"expected one upstream request, got {len(upstream.requests)}"], None
    return problems, upstream.requests[0]


def _leaks_in_request(target: Target, received: RecordedRequest, allowed_key: str | None) -> list[str]:
    """Return a problem for each key or token in an upstream request, except `allowed_key`."""
    problems = []
    for label, value in secret_labels(target):
        if value == allowed_key:
            continue
        if any(received.contains(form) for form in leak_forms(value)):
            problems.append(f"the upstream received the {label}")
    return problems


async def credential_override(target: Target) -> ClassResult:
    """Check that the caller's credentials are stripped, so the upstream receives only the injected key."""
    result = ClassResult("credential_override", "caller credentials stripped, only the injected key goes upstream")
    header_cases = corpus.load("sidecar_request_headers.json")
    stripped = [tuple(pair) for pair in header_cases["stripped"]]
    forwarded = [tuple(pair) for pair in header_cases["forwarded"]]

    async def stripped_headers() -> list[str]:
        # "close, X-Hop" nominates X-Hop as a hop-by-hop header, which must not be forwarded.
        problems, received = await _forward_once(target, "/api/svc/header/echo/override", stripped + forwarded,
                                                 connection="close, X-Hop")
        if received is None:
            return problems
        if received.header_values("X-Api-Key") != [target.keys["header"]]:
            problems.append("the upstream did not receive exactly the injected X-Api-Key")
        if received.header_values("Authorization"):
            problems.append("the caller's Authorization header reached the upstream")
        for name, value in stripped:
            if received.contains(value):
                problems.append(f"the caller's {name} reached the upstream")
        for name, value in forwarded:
            if received.header_values(name) != [value]:
                problems.append(f"the ordinary header {name} was not forwarded unchanged")
        return problems + _leaks_in_request(target, received, target.keys["header"])

    async def bearer_replaces_authorization() -> list[str]:
        problems, received = await _forward_once(target, "/api/svc/bearer/echo/override")
        if received is None:
            return problems
        if received.header_values("Authorization") != [f"Bearer {target.keys['bearer']}"]:
            problems.append("the upstream's Authorization is not exactly the injected key")
        return problems + _leaks_in_request(target, received, target.keys["bearer"])

    async def header_key_other_spellings() -> list[str]:
        problems, received = await _forward_once(target, "/api/svc/header/echo/override", [
            ("X-API-KEY", "attacker-upper-0001"), ("x-api-key", "attacker-lower-0002")])
        if received is None:
            return problems
        if received.header_values("X-Api-Key") != [target.keys["header"]]:
            problems.append("the upstream did not receive exactly the injected X-Api-Key")
        if received.contains("attacker-upper-0001") or received.contains("attacker-lower-0002"):
            problems.append("a caller's X-Api-Key reached the upstream")
        return problems

    async def query_key_replaced() -> list[str]:
        problems, received = await _forward_once(target, "/api/svc/query/echo/override?api_key=attacker"
                                                 "&API_KEY=again&a=1")
        if received is None:
            return problems
        expected = f"a=1&api_key={quote(target.keys['query'], safe='')}"
        if received.query != expected:
            problems.append("the upstream query is not the caller's query with only the injected api_key")
        return problems + _leaks_in_request(target, received, target.keys["query"])

    await run_case(result, "stripped_headers", stripped_headers)
    await run_case(result, "bearer_replaces_caller_authorization", bearer_replaces_authorization)
    await run_case(result, "header_key_other_spellings", header_key_other_spellings)
    await run_case(result, "query_key_replaced", query_key_replaced)
    return result


async def key_echo(target: Target) -> ClassResult:
    """Check that a key sent back by the upstream, in a header or split across chunks, reaches the caller masked."""
    result = ClassResult("key_echo", "keys echoed by the upstream come back masked")
    for case in corpus.cases("sidecar_key_echo.json"):
        async def probe(case: dict = case) -> list[str]:
            service = case["service"]
            if case["route"] == "echo":
                path = f"/api/svc/{service}/echo/x?a=1"
            else:
                path = f"/api/svc/{service}/leak?split={case['split']}"
            reply = await request(target, "GET", path)
            problems = expect_verdict(reply, 200) + leaked_in_reply(target, reply)
            if MASK.encode("ascii") not in reply.body:
                problems.append("the body shows no mask, so the upstream saw no key to echo")
            if case["route"] == "leak" and reply.header("x-echo-key") != MASK:
                problems.append("the echoed key header is not masked")
            return problems

        await run_case(result, case["id"], probe)
    return result


async def redirect(target: Target) -> ClassResult:
    """Check that a redirect to another origin never carries the key, and one to an unallowed origin is denied."""
    result = ClassResult("redirect", "cross-origin redirects never carry the key")
    upstreams = target.upstreams
    landings = {"same": upstreams.service, "allowed": upstreams.allowed, "stranger": upstreams.stranger}
    for case in corpus.cases("sidecar_redirects.json"):
        async def probe(case: dict = case) -> list[str]:
            upstreams.clear()
            landing = landings[case["to"]]
            service = case["service"]
            path = f"/api/svc/{service}/redirect?to={quote(landing.origin + LANDING_PATH, safe='')}"
            if "redirect_status" in case:
                path += f"&status={case['redirect_status']}"
            if case.get("keep_query"):
                path += "&keep_query=1"
            reply = await request(target, "GET", path)
            problems = leaked_in_reply(target, reply)
            landed = [item for item in landing.requests if item.path == LANDING_PATH]

            if case["status"] != 200:
                problems += expect_verdict(reply, case["status"], case["reason"])
                if landed:
                    problems.append(f"the {case['to']} upstream received the redirected request")
                return problems

            problems += expect_verdict(reply, 200)
            if len(landed) != 1:
                return problems + [f"expected one request on the {case['to']} upstream, got {len(landed)}"]
            key = target.keys[service]
            carries_key = any(landed[0].contains(form) for form in leak_forms(key))
            if case["key_expected"] and not carries_key:
                problems.append("the same-origin hop lost the key, so the other cases prove nothing")
            if not case["key_expected"]:
                if carries_key:
                    problems.append(f"the key followed the redirect to the {case['to']} upstream")
                if landed[0].header_values("Authorization"):
                    problems.append("an Authorization header followed the redirect")
            return problems + _leaks_in_request(target, landed[0], key if case["key_expected"] else None)

        await run_case(result, case["id"], probe)
    return result


async def log_redaction(target: Target) -> ClassResult:
    """Check that, after every other attack, the sidecar's log contains no key and no token in any spelling."""
    result = ClassResult("log_redaction", "the sidecar log contains no key or token")
    log_dir = target.log_dir
    files = sorted(Path(log_dir).glob(f"{LOG_FILE_NAME}*")) if log_dir is not None else []
    text = "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in files)

    async def log_written() -> list[str]:
        return [] if "request rejected" in text else ["the sidecar log has no rejected request, so it proves nothing"]

    await run_case(result, "log_written", log_written)
    for label, value in secret_labels(target):
        async def probe(value: str = value, label: str = label) -> list[str]:
            return [f"the log contains the {label}"] if any(form in text for form in leak_forms(value)) else []

        await run_case(result, label.replace(" ", "_") + "_absent", probe)
    return result

