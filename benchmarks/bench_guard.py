"""CPU time the outbound guard adds to one request, with cached and uncached DNS answers.

Run inside a loopback-only network namespace:

    unshare --net bash -c 'ip link set lo up; python benchmarks/bench_guard.py'

The upstream (a small aiohttp app) and the DNS server (tests/dns_server.py) run in a child
process, so the CPU time measured here (time.process_time of this process) is the client's
alone. Every request is a keep-alive GET of a 2 KiB JSON body from 127.0.0.1, reached through
an explicit private allowance. Scenarios:

  aiohttp           plain aiohttp ClientSession, no guard (the baseline)
  guard-cached      GuardedClient; the validated answer is cached (TTL 300 s)
  guard-uncached    GuardedClient; TTL 0, so every request sends an A and an AAAA query
                    to the loopback DNS server and classifies the answers again
  check_url         the URL check alone, per call
  classify_address  the address classification alone, per call (IPv4 and IPv6 mix)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from keyside.guard import DnsResolver, GuardedClient, GuardLimits, GuardPolicy, check_url, classify_address

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"items": ["x" * 64] * 28}).encode()
CACHED_TTL_S = 300
ADDRESSES = ["93.184.215.14", "10.1.2.3", "2606:4700::1111", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe",
             "2002:c0a8:101::1", "fd00::1", "100.64.0.1"]


def serve() -> None:
    """Child process: run the upstream and the DNS server, print their ports, wait for stdin."""
    sys.path.insert(0, str(ROOT / "tests"))
    from aiohttp import web

    from dns_server import DnsServer

    async def main() -> None:
        app = web.Application()

        async def data(request: web.Request) -> web.Response:
            return web.Response(body=BODY, content_type="application/json")

        app.router.add_get("/data", data)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        with DnsServer() as dns:
            dns.set("cached.bench", "127.0.0.1", ttl=CACHED_TTL_S)
            dns.set("uncached.bench", "127.0.0.1", ttl=0)
            print(json.dumps({"http": port, "dns": dns.port}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(main())


async def measure(label: str, count: int, operation: Callable[[], Awaitable[None]]) -> dict[str, object]:
    for _ in range(min(50, count)):
        await operation()  # warm-up: connections, caches, imports
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(count):
        await operation()
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    return {"scenario": label, "count": count, "cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6}


async def run(count: int, http_port: int, dns_port: int) -> list[dict[str, object]]:
    results = []
    url_path = f":{http_port}/data"

    async with aiohttp.ClientSession() as session:
        async def plain() -> None:
            async with session.get(f"http://127.0.0.1{url_path}") as response:
                await response.read()
        results.append(await measure("aiohttp", count, plain))

    limits = GuardLimits()
    resolver = DnsResolver([("127.0.0.1", dns_port)])
    for label, host in (("guard-cached", "cached.bench"), ("guard-uncached", "uncached.bench")):
        policy = GuardPolicy.from_strings([f"{host}:{http_port}"], limits)
        async with GuardedClient(policy, resolver) as client:
            url = f"http://{host}{url_path}"

            async def guarded(client: GuardedClient = client, url: str = url) -> None:
                async with client.request("GET", url) as response:
                    await response.read()
            results.append(await measure(label, count, guarded))

    async def url_check() -> None:
        check_url("https://api.example.com/v1/chat/completions?stream=true")
    results.append(await measure("check_url", count * 10, url_check))

    async def classify() -> None:
        for address in ADDRESSES:
            classify_address(address)
    result = await measure("classify_address", count * 10, classify)
    result["cpu_us"] = float(result["cpu_us"]) / len(ADDRESSES)  # type: ignore[arg-type]
    result["wall_us"] = float(result["wall_us"]) / len(ADDRESSES)  # type: ignore[arg-type]
    results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="requests per scenario (default 2000)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        results = asyncio.run(run(args.count, ports["http"], ports["dns"]))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)

    print(f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}")
    print(f"{'scenario':<18} {'count':>7} {'CPU us/op':>10} {'wall us/op':>11}")
    for result in results:
        print(f"{result['scenario']:<18} {result['count']:>7} {result['cpu_us']:>10.1f} {result['wall_us']:>11.1f}")


if __name__ == "__main__":
    main()
