"""Attack classes aimed at the sidecar's request checks: Host, Origin, token, control characters
and paths. Each case asserts the sidecar's verdict and that nothing reached an upstream.
"""

from __future__ import annotations

import secrets

from keyside.selftest import corpus
from keyside.selftest.probes import (
    error_reason,
    expect_nothing_upstream,
    expect_verdict,
    leaked_in_reply,
    request,
    run_case,
)
from keyside.selftest.rawhttp import build_request, send_raw
from keyside.selftest.results import ClassResult
from keyside.selftest.session import PATH_SERVICE, Target

# A keyed service route that forwards to the upstream when every check passes.
PROBE_PATH = "/api/svc/bearer/echo/selftest"


async def host_header(target: Target) -> ClassResult:
    """Check that forged Host headers (DNS rebinding) are rejected before CORS and token, even with a token."""
    result = ClassResult("host_header", "forged Host headers rejected before CORS and token")
    data = corpus.load("sidecar_host_headers.json")
    other_port = target.port % 65535 + 1

    for case in data["cases"]:
        async def probe(case: dict = case) -> list[str]:
            target.upstreams.clear()
            host = case["host"].format(port=target.port, other=other_port)
            headers = [("Host", host), ("Authorization", f"Bearer {target.token}"),
                       ("Origin", target.app_origins[0]), ("Connection", "close")]
            raw = f"GET {PROBE_PATH} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
            reply = await send_raw(target.port, raw.encode("utf-8"))
            if case.get("allowed"):
                problems = expect_verdict(reply, 200)
                if len(target.upstreams.service.requests) != 1:
                    problems.append("an allowed Host did not reach the upstream")
                return problems
            problems = expect_verdict(reply, case["status"], case["reason"])
            if reply.header("access-control-allow-origin") is not None:
                problems.append("a rejected request got a CORS grant")
            return problems + expect_nothing_upstream(target) + leaked_in_reply(target, reply)

        await run_case(result, case["id"], probe)

    for case in data["raw_cases"]:
        async def raw_probe(case: dict = case) -> list[str]:
            target.upstreams.clear()
            reply = await send_raw(target.port, case["request"].format(port=target.port).encode("utf-8"))
            return expect_verdict(reply, case["status"], case.get("reason")) + expect_nothing_upstream(target)

        await run_case(result, case["id"], raw_probe)
    return result


async def origin(target: Target) -> ClassResult:
    """Check that only the app's exact origins get CORS grants, and foreign and null origins are rejected whole."""
    result = ClassResult("origin", "foreign and null origins rejected, app origins granted exactly")
    for case in corpus.cases("sidecar_origins.json"):
        async def probe(case: dict = case) -> list[str]:
            value = case["origin"]
            target.upstreams.clear()
            reply = await request(target, "GET", PROBE_PATH, [("Origin", value)])
            preflight = await request(target, "OPTIONS", PROBE_PATH, [
                ("Origin", value), ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization, content-type"),
                ("Access-Control-Request-Private-Network", "true")], token=False)
            if case["allowed"]:
                problems = expect_verdict(reply, 200) + expect_verdict(preflight, 204)
                if reply.header("access-control-allow-origin") != value:
                    problems.append("the app origin did not get its exact CORS grant")
                if "origin" not in (reply.header("vary") or "").lower():
                    problems.append("the grant lacks Vary: Origin")
                if reply.header("access-control-allow-credentials") is not None:
                    problems.append("the grant allows credentials")
                return problems

            # A form post from a foreign page is a simple request: the browser sends it without a
            # preflight, so the sidecar must refuse the request itself, not only the CORS grant.
            form = await request(target, "POST", PROBE_PATH, [
                ("Origin", value), ("Content-Type", "application/x-www-form-urlencoded")], body=b"prompt=x",
                token=False)
            problems = expect_verdict(reply, 403, "origin_not_allowed")
            problems += [f"preflight: {problem}" for problem in expect_verdict(preflight, 403)]
            problems += [f"form post: {problem}" for problem in expect_verdict(form, 403, "origin_not_allowed")]
            for name, answer in (("request", reply), ("preflight", preflight), ("form post", form)):
                if answer.header("access-control-allow-origin") is not None:
                    problems.append(f"the {name} got a CORS grant")
                if answer.header("access-control-allow-private-network") is not None:
                    problems.append(f"the {name} got a private-network grant")
            return problems + expect_nothing_upstream(target)

        await run_case(result, case["id"], probe)
    return result


async def token(target: Target) -> ClassResult:
    """Check that missing, wrong and misplaced tokens (query, cookie, wrong scheme) authenticate nothing."""
    result = ClassResult("token", "missing, wrong and misplaced tokens rejected")
    other = secrets.token_hex(32)
    for case in corpus.cases("sidecar_tokens.json"):
        async def probe(case: dict = case) -> list[str]:
            target.upstreams.clear()
            path = case["path"].format(token=target.token, other=other)
            headers = [(name, value.format(token=target.token, other=other)) for name, value in case["headers"]]
            reply = await request(target, "GET", path, headers, token=False)
            problems = expect_verdict(reply, case["status"], case["reason"])
            return problems + expect_nothing_upstream(target) + leaked_in_reply(target, reply)

        await run_case(result, case["id"], probe)
    return result


async def control_characters(target: Target) -> ClassResult:
    """Check that CR, LF and NUL in headers, paths and queries never reach an upstream."""
    result = ClassResult("crlf", "CR, LF and NUL in headers, paths and queries rejected")
    for case in corpus.cases("sidecar_control_characters.json"):
        async def probe(case: dict = case) -> list[str]:
            target.upstreams.clear()
            raw = case["request"].replace("{port}", str(target.port)).replace("{token}", target.token)
            reply = await send_raw(target.port, raw.encode("utf-8"))
            return expect_verdict(reply, case["status"], case.get("reason")) + expect_nothing_upstream(target)

        await run_case(result, case["id"], probe)
    return result


async def paths(target: Target) -> ClassResult:
    """Check that a caller's path stays under the service's prefixes, with no traversal or encoded separators."""
    result = ClassResult("path", "path traversal and encoded separators rejected")
    for case in corpus.cases("sidecar_paths.json"):
        async def probe(case: dict = case) -> list[str]:
            target.upstreams.clear()
            reply = await send_raw(target.port, build_request(
                "GET", f"/api/svc/{PATH_SERVICE}{case['path']}", target.port,
                [("Authorization", f"Bearer {target.token}")]))
            if case["status"] == 200:
                received = [item.path for item in target.upstreams.service.requests]
                if received != [case["path"]]:
                    return [f"expected the upstream to receive {case['path']!r} once, got {received!r}"]
                return []
            # The HTTP parser may reject a raw non-ASCII or backslash target before the sidecar
            # receives it, and then the 400 has no JSON reason.
            reason = case["reason"] if error_reason(reply) is not None or case["status"] != 400 else None
            return expect_verdict(reply, case["status"], reason) + expect_nothing_upstream(target)

        await run_case(result, case["id"], probe)
    return result
