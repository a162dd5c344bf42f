"""`keyside net check URL`: what the outbound guard would do with a URL, without requesting it."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from keyside.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from keyside.guard import (
    CheckResult,
    DnsResolver,
    GuardDenied,
    GuardedClient,
    GuardPolicy,
    SystemResolver,
    describe_verdict,
)
from keyside.guard.policy import LIFTABLE_REASONS
from keyside.redact import strip_url_queries

NAMESERVER_FIX = 'Write the nameserver as IP:PORT, for example "127.0.0.1:53" or "[::1]:53".'


def register(subparsers: argparse._SubParsersAction) -> None:
    net = subparsers.add_parser("net", help="inspect the outbound guard",
                                description="Inspect what the outbound guard allows.")
    net_commands = net.add_subparsers(dest="net_command", metavar="COMMAND")
    net.set_defaults(handler=lambda args: _usage(net))

    check = net_commands.add_parser(
        "check", help="print the guard's verdict for a URL without sending a request",
        description="Check a URL the way the outbound guard does: URL syntax, DNS resolution and the "
                    "class of every resolved address. No HTTP request is sent. Exit status: 0 allowed, "
                    "1 denied, 2 usage error.",
    )
    check.add_argument("url", help="the http:// or https:// URL to check")
    check.add_argument("--nameserver", action="append", default=[], metavar="IP:PORT",
                       help="query this DNS server instead of the OS resolver (repeatable)")
    check.add_argument("--allow-private", action="append", default=[], metavar="HOST:PORT",
                       help="treat HOST:PORT as an explicitly allowed private destination (repeatable)")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.set_defaults(handler=_check)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _check(args: argparse.Namespace) -> int:
    try:
        policy = GuardPolicy.from_strings(args.allow_private)
        resolver = _resolver(args.nameserver)
    except GuardDenied as error:
        print(f"keyside net check: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    result = _with_allowance_fix(asyncio.run(_run_check(policy, resolver, args.url)))
    if args.json:
        print(json.dumps(_as_json(result)))
    else:
        print(_as_text(result))
    return EXIT_OK if result.allowed else EXIT_FAILURE


def _resolver(nameservers: list[str]) -> DnsResolver | SystemResolver:
    if not nameservers:
        return SystemResolver()
    try:
        return DnsResolver.from_strings(nameservers)
    except GuardDenied as error:
        # The guard's host:port parser suggests web server ports, but a nameserver is an IP
        # address with the DNS port.
        message = error.message if error.message.startswith("Nameserver") else f"Nameserver {error.message}"
        raise GuardDenied(error.reason, message, fix=NAMESERVER_FIX) from None


def _with_allowance_fix(result: CheckResult) -> CheckResult:
    """Replace the guard's generic fix for a liftable denial with the options that lift it."""
    if result.allowed or result.reason not in LIFTABLE_REASONS or result.host is None or result.port is None:
        return result
    host_port = f"[{result.host}]:{result.port}" if ":" in result.host else f"{result.host}:{result.port}"
    # CheckResult.message is str(GuardDenied): the message, then " Fix: " and the guard's fix.
    message = result.message.split(" Fix: ", 1)[0]
    fix = (f"Only public addresses are reachable. If {host_port} is an intended local server, check it again "
           f"with --allow-private {host_port}, and allow it in keyside.toml with allow_private = "
           f"[\"{host_port}\"] under [network], or with allow_private_network = true in the [services.NAME] "
           "table whose upstream it is.")
    return dataclasses.replace(result, message=f"{message} Fix: {fix}")


async def _run_check(policy: GuardPolicy, resolver: DnsResolver | SystemResolver, url: str) -> CheckResult:
    async with GuardedClient(policy, resolver) as client:
        return await client.check(url)


def _as_text(result: CheckResult) -> str:
    lines = [f"verdict: {result.verdict}", f"reason:  {result.reason}"]
    if result.url is not None:
        lines.append(f"url:     {result.url}")
    if result.addresses:
        lines.append("addresses:")
        for verdict in result.addresses:
            decision = "allow" if verdict.allowed else "deny"
            lines.append(f"  {verdict.address:<39} {decision:<5} {describe_verdict(verdict)}")
    elif result.url is not None:
        lines.append("addresses: (none resolved)")
    lines.append(f"why:     {strip_url_queries(result.message)}")
    return "\n".join(lines)


def _as_json(result: CheckResult) -> dict[str, object]:
    return {
        "verdict": result.verdict,
        "reason": result.reason,
        "message": strip_url_queries(result.message),
        "url": result.url,
        "host": result.host,
        "port": result.port,
        "addresses": [
            {"address": verdict.address, "allowed": verdict.allowed, "reason": verdict.reason,
             "embedded": verdict.embedded}
            for verdict in result.addresses
        ],
    }
