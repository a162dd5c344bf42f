"""Run every attack class in order and return one ClassResult per class.

Steps:
  1. Install the loopback fence for this process.
  2. Run the SSRF classes: pure checks with a stub resolver, no sockets at all.
  3. Start the fake upstreams and a throwaway sidecar, run the sidecar classes against it.
  4. Stop the sidecar, then read its log for leaked values.
  5. Report any attempt to leave loopback as a failed class of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from keyside.redact import Redactor
from keyside.selftest import request_attacks, secret_attacks, ssrf
from keyside.selftest.loopback import LoopbackFence
from keyside.selftest.results import CaseFailure, ClassResult
from keyside.selftest.session import SelftestSidecar, SidecarStartError, Target, Upstreams

logger = logging.getLogger(__name__)

# The whole self-test normally takes a few seconds; this bounds a hung sidecar or upstream.
SELFTEST_TIMEOUT_S = 180.0

SidecarAttack = Callable[[Target], Awaitable[ClassResult]]
SIDECAR_CLASSES: tuple[SidecarAttack, ...] = (
    request_attacks.host_header,
    request_attacks.origin,
    request_attacks.token,
    request_attacks.control_characters,
    request_attacks.paths,
    secret_attacks.credential_override,
    secret_attacks.key_echo,
    secret_attacks.redirect,
)


async def run_guard_classes() -> list[ClassResult]:
    """Run the SSRF classes, which need no sidecar and no network."""
    return [await ssrf.ssrf_urls(), await ssrf.ssrf_addresses(), await ssrf.ssrf_allowances()]


async def run_sidecar_classes(target: Target, classes: tuple[SidecarAttack, ...] = SIDECAR_CLASSES
                              ) -> list[ClassResult]:
    """Run the sidecar classes against `target`, which may be any sidecar on loopback.

    Problems are masked with the target's keys and token, because a broken sidecar could put
    them into what a problem quotes (a reason or a path).
    """
    redactor = Redactor(target.secret_values())
    results = []
    for attack in classes:
        result = await attack(target)
        result.failures = [CaseFailure(failure.case_id, redactor.redact(failure.problem))
                           for failure in result.failures]
        results.append(result)
    return results


async def _run_all() -> list[ClassResult]:
    results = await run_guard_classes()
    upstreams = await Upstreams().start()
    try:
        sidecar = SelftestSidecar(upstreams)
        async with sidecar as target:
            results += await run_sidecar_classes(target)
            await sidecar.stop_sidecar()
            results.append(await secret_attacks.log_redaction(target))
    except SidecarStartError as error:
        logger.warning("self-test sidecar did not start reason=%s", error.reason)
        failed = ClassResult("sidecar_start", "throwaway sidecar started on 127.0.0.1")
        failed.record("start", [f"{error.reason}: {error.message}"])
        results.append(failed)
    finally:
        await upstreams.close()
    return results


def loopback_result(violations: list[str]) -> ClassResult:
    """Turn the fence's record into a class: it fails when anything tried to leave loopback."""
    result = ClassResult("loopback_only", "the self-test sent nothing beyond loopback and resolved no name")
    result.cases = 1
    result.failures = [CaseFailure("attempt", violation) for violation in violations]
    return result


def run_selftest(timeout_s: float = SELFTEST_TIMEOUT_S) -> list[ClassResult]:
    """Run the whole self-test in a fresh event loop; return one result per class.

    Raises TimeoutError when the run takes longer than `timeout_s`.
    """
    with LoopbackFence() as fence:
        results = asyncio.run(asyncio.wait_for(_run_all(), timeout_s))
    results.append(loopback_result(fence.violations))
    for result in results:
        logger.info("self-test class=%s passed=%s cases=%d failed=%d", result.name, result.passed,
                    result.cases, len(result.failures))
    return results
