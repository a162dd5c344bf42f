"""Sidecar benchmark: throughput and latency against a bare aiohttp proxy, SSE delay, memory, start time.

Everything runs on 127.0.0.1 in separate processes. A fake upstream serves a 1 KB JSON document
and an SSE stream. A bare aiohttp pass-through proxy (no checks) and a real sidecar, started as
the host starts it, forward to it. This process is the load generator. Run it in a loopback-only
namespace:

    unshare --net bash -c 'ip link set lo up; python3 benchmarks/bench_sidecar.py'

A third proxy, the bare proxy with the outbound guard as its client, shows how much of the
difference is the guard and how much the sidecar's own checks.

Options: --seconds per throughput round (default 5), --rounds (3), --connections (16),
--no-pin to leave processes where the scheduler puts them, --json to print the results as JSON.

On a machine with two or more cores, the proxies run pinned to one core, and this process and
the upstream to another, so each proxy has a core to itself. A proxy's throughput is then set by
its own CPU time per request, which is what the ratio is meant to compare, rather than by how
the scheduler shares cores between the load generator, the upstream and the proxy. The load
generator is a small HTTP/1.1 client on asyncio protocols, written to keep its own CPU cost low.
It shares its core with the upstream, so absolute numbers are lower than a load tool on other
machines would show. Rounds alternate between the proxies, so load from other processes on the
machine affects both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sidecar_process import SidecarProcess, bearer, raw_http, service  # noqa: E402

KEY = "sk-bench-0123456789abcdefghij"
UPSTREAM_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, sys.argv[1])
    from upstreams import UpstreamServer

    async def main():
        server = await UpstreamServer(sys.argv[2], record=False).start()
        print(server.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")
# A pass-through proxy with no checks: what an aiohttp proxy costs before any security work.
BARE_PROXY_SCRIPT = textwrap.dedent("""
    import asyncio, socket, sys
    import aiohttp
    from aiohttp import web

    UPSTREAM = sys.argv[1]
    HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}

    async def main():
        session = aiohttp.ClientSession(auto_decompress=False)

        async def handle(request):
            body = await request.read() if request.body_exists else None
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
            async with session.request(request.method, UPSTREAM + request.raw_path, headers=headers,
                                       data=body, allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status)
                for name, value in upstream.headers.items():
                    if name.lower() not in HOP:
                        response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        runner = web.ServerRunner(web.Server(handle), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(sock.getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


# The bare proxy with its aiohttp client replaced by the outbound guard: it separates what the guard
# costs from what the sidecar's own checks cost.
GUARD_PROXY_SCRIPT = BARE_PROXY_SCRIPT.replace(
    "session = aiohttp.ClientSession(auto_decompress=False)",
    "from keyside.guard import GuardedClient, GuardPolicy\n"
    "    from urllib.parse import urlsplit\n"
    "    parts = urlsplit(UPSTREAM)\n"
    "    session = GuardedClient(GuardPolicy(frozenset({(parts.hostname, parts.port)})))",
).replace(
    "async for chunk in upstream.content.iter_any():",
    "async for chunk in upstream.iter_chunks():",
).replace("allow_redirects=False", "follow_redirects=False")


def spawn(script: str, *args: str, children: list[subprocess.Popen[bytes]]) -> int:
    """Start `script` in a child process, add it to `children` and return the port it prints."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE)
    children.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"helper process did not start (exit code {process.wait()}); see its stderr above")
    return int(line)


# ---- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends a request whenever the previous response is complete."""

    def __init__(self, request: bytes, latencies: list[float], deadline: float, done: asyncio.Future[None]):
        self.request = request
        self.latencies = latencies
        self.deadline = deadline
        self.done = done
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer.extend(data)
        end = _response_end(self.buffer)
        if end is None:
            return
        now = time.perf_counter()
        self.latencies.append(now - self.sent_at)
        del self.buffer[:end]
        if now < self.deadline:
            self._send()
        elif not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("connection closed"))


def _response_end(buffer: bytearray) -> int | None:
    """Return the end offset of the first complete response in `buffer`, or None."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end == -1:
        return None
    head = bytes(buffer[:head_end]).lower()
    body_start = head_end + 4
    if b"transfer-encoding: chunked" in head:
        position = body_start
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end == -1:
                return None
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            position = line_end + 2 + size + 2
            if position > len(buffer):
                return None
            if size == 0:
                return position
    marker = head.find(b"content-length:")
    length = int(head[marker + 15:].split(b"\r\n")[0]) if marker != -1 else 0
    return body_start + length if len(buffer) >= body_start + length else None


def pin_processes(pin: bool, *, load_side: list[int], proxy_side: list[int]) -> dict[str, Any]:
    """Put the proxies on one core and the load generator and upstream on another, when possible.

    Return which cores each side got, or why nothing was pinned.
    """
    if not pin:
        return {"pinned": False, "why": "--no-pin"}
    if not hasattr(os, "sched_setaffinity"):
        return {"pinned": False, "why": "this platform has no sched_setaffinity"}
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {"pinned": False, "why": "fewer than two cores are available"}
    for pid in load_side:
        os.sched_setaffinity(pid, {cores[0]})
    for pid in proxy_side:
        os.sched_setaffinity(pid, {cores[1]})
    return {"pinned": True, "load_generator_and_upstream": cores[0], "proxies": cores[1]}


def cpu_seconds(pids: list[int]) -> float:
    """Return the user plus system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime and stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


async def load(port: int, path: str, headers: dict[str, str], connections: int, seconds: float,
               pids: tuple[int, ...] = ()) -> dict[str, float]:
    """Keep `connections` requests in flight for `seconds`; return requests/s and latency percentiles.

    With `pids`, also return the CPU time those processes used per request (ms), which other load
    on the machine disturbs far less than requests per second.
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"] + [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    cpu_before = cpu_seconds(list(pids))
    started = time.perf_counter()
    deadline = started + seconds
    futures = []
    transports = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda done=done: _Connection(request, latencies, deadline, done), "127.0.0.1", port)
        futures.append(done)
        transports.append(transport)
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    cpu_used = cpu_seconds(list(pids)) - cpu_before
    for transport in transports:
        transport.close()
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / elapsed,
        "cpu_ms_per_request": cpu_used * 1000 / len(latencies) if pids else float("nan"),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "requests": len(latencies),
    }


async def sse_delays(port: int, path: str, headers: dict[str, str]) -> list[float]:
    """Read one SSE stream; return, per event, read time minus the upstream's send time (ms)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    delays = []
    while True:
        line = await reader.readline()
        if not line:
            break
        read_ns = time.perf_counter_ns()
        marker = line.find(b'"sent_ns": ')
        if line.startswith(b"data: ") and marker != -1:
            sent_ns = int(line[marker + 11:].split(b"}")[0])
            delays.append((read_ns - sent_ns) / 1e6)
    writer.close()
    return delays


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_times(samples: int) -> tuple[list[float], list[float], list[float]]:
    """Return, per sample, seconds from spawn to a verified handshake and to a first health reply,
    and from closing stdin to process exit.

    The sidecar sends its ready line before it loads aiohttp, so the first HTTP reply comes later.
    A request sent in between waits in the listen backlog, and this measures when it is answered.
    """
    handshakes = []
    first_replies = []
    exits = []
    for _ in range(samples):
        started = time.perf_counter()
        sidecar = SidecarProcess().start()
        handshakes.append(time.perf_counter() - started)
        status, _, _ = raw_http(sidecar.port, f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n"
                                              "Connection: close\r\n\r\n".encode())
        assert status == 200, status
        first_replies.append(time.perf_counter() - started)
        closed = time.perf_counter()
        sidecar.close_stdin()
        assert sidecar.wait(5.0) == 0
        exits.append(time.perf_counter() - closed)
        sidecar.stop()
    return handshakes, first_replies, exits


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    import aiohttp

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "aiohttp": aiohttp.__version__, "load_average_at_start": os.getloadavg()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "settings": vars(args)}
    own_cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    children: list[subprocess.Popen[bytes]] = []
    sidecar: SidecarProcess | None = None
    try:
        upstream_port = spawn(UPSTREAM_SCRIPT, str(ROOT / "tests"), KEY, children=children)
        origin = f"http://127.0.0.1:{upstream_port}"
        bare_port = spawn(BARE_PROXY_SCRIPT, origin, children=children)
        guarded_port = spawn(GUARD_PROXY_SCRIPT, origin, children=children)
        bare, guarded = children[1], children[2]
        services = [service("bench", origin, secret="BENCH_KEY", inject=bearer(), paths=["/json1k", "/sse"])]
        sidecar = SidecarProcess(services=services, secrets={"BENCH_KEY": KEY}).start()
        auth = sidecar.auth_headers()
        assert sidecar.process is not None
        results["cores"] = pin_processes(args.pin, load_side=[os.getpid(), children[0].pid],
                                         proxy_side=[bare.pid, guarded.pid, sidecar.process.pid])

        # Warm up all three paths: connection pools, caches, code paths.
        for port, path, headers in ((upstream_port, "/json1k", {}), (bare_port, "/json1k", {}),
                                    (guarded_port, "/json1k", {}), (sidecar.port, "/api/svc/bench/json1k", auth)):
            await load(port, path, headers, args.connections, 1.0)

        throughput: dict[str, list[dict[str, float]]] = {"bare_proxy": [], "guard_proxy": [], "sidecar": []}
        for _ in range(args.rounds):
            throughput["bare_proxy"].append(await load(bare_port, "/json1k", {}, args.connections, args.seconds,
                                                       (bare.pid,)))
            throughput["guard_proxy"].append(await load(guarded_port, "/json1k", {}, args.connections,
                                                        args.seconds, (guarded.pid,)))
            throughput["sidecar"].append(await load(sidecar.port, "/api/svc/bench/json1k", auth,
                                                    args.connections, args.seconds, (sidecar.process.pid,)))
        results["throughput"] = throughput
        bare_rps = statistics.median(r["requests_per_s"] for r in throughput["bare_proxy"])
        sidecar_rps = statistics.median(r["requests_per_s"] for r in throughput["sidecar"])
        results["throughput_ratio"] = sidecar_rps / bare_rps
        bare_cpu = statistics.median(r["cpu_ms_per_request"] for r in throughput["bare_proxy"])
        guard_cpu = statistics.median(r["cpu_ms_per_request"] for r in throughput["guard_proxy"])
        sidecar_cpu = statistics.median(r["cpu_ms_per_request"] for r in throughput["sidecar"])
        results["cpu_ms_per_request"] = {"bare_proxy": bare_cpu, "guard_proxy": guard_cpu, "sidecar": sidecar_cpu,
                                         "bare_over_sidecar": bare_cpu / sidecar_cpu}

        latency = {
            "direct": await load(upstream_port, "/json1k", {}, 1, args.seconds),
            "bare_proxy": await load(bare_port, "/json1k", {}, 1, args.seconds),
            "sidecar": await load(sidecar.port, "/api/svc/bench/json1k", auth, 1, args.seconds),
        }
        results["latency_1_connection"] = latency
        results["sidecar_added_p50_ms"] = latency["sidecar"]["p50_ms"] - latency["direct"]["p50_ms"]

        sse_path = "/sse?events=300&interval_ms=10"
        direct = sorted(await sse_delays(upstream_port, sse_path, {}))
        proxied = sorted(await sse_delays(sidecar.port, "/api/svc/bench" + sse_path, auth))
        results["sse_delay_ms"] = {
            "direct_p50": direct[len(direct) // 2], "direct_p99": direct[int(len(direct) * 0.99)],
            "sidecar_p50": proxied[len(proxied) // 2], "sidecar_p99": proxied[int(len(proxied) * 0.99)],
            "events": len(proxied),
        }
        results["sidecar_rss_mb_after_run"] = rss_mb(sidecar.process.pid)
        results["bare_proxy_rss_mb_after_run"] = rss_mb(bare.pid)
    finally:
        if sidecar is not None:
            sidecar.stop()
        for process in children:
            process.kill()
            process.wait()
        if own_cores is not None:
            os.sched_setaffinity(0, own_cores)  # start times are measured unpinned

    handshakes, first_replies, exits = start_times(args.start_samples)
    results["start_to_handshake_s"] = {"median": statistics.median(handshakes), "min": min(handshakes),
                                       "max": max(handshakes), "samples": len(handshakes)}
    results["stdin_close_to_exit_s"] = {"median": statistics.median(exits), "max": max(exits)}
    results["start_to_first_reply_s"] = {"median": statistics.median(first_replies), "min": min(first_replies),
                                         "max": max(first_replies), "samples": len(first_replies)}
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput round (s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per proxy")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--start-samples", type=int, default=10, help="sidecar starts to time")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the proxies and the load generator to separate cores")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = asyncio.run(run(args))

    if args.json:
        print(json.dumps(results, indent=2))
        return
    bare = statistics.median(r["requests_per_s"] for r in results["throughput"]["bare_proxy"])
    guarded = statistics.median(r["requests_per_s"] for r in results["throughput"]["guard_proxy"])
    side = statistics.median(r["requests_per_s"] for r in results["throughput"]["sidecar"])
    latency = results["latency_1_connection"]
    sse = results["sse_delay_ms"]
    start = results["start_to_handshake_s"]

    print(f"machine: {results['machine']}")
    print(f"cores: {results['cores']}")
    print(f"throughput, {args.connections} connections: bare proxy {bare:.0f} req/s, bare proxy with guard "
          f"{guarded:.0f} req/s, sidecar {side:.0f} req/s, "
          f"ratio {results['throughput_ratio']:.3f} (target >= 0.90)")
    cpu = results["cpu_ms_per_request"]
    print(f"proxy CPU per request: bare proxy {cpu['bare_proxy']:.3f} ms, bare proxy with guard "
          f"{cpu['guard_proxy']:.3f} ms, sidecar {cpu['sidecar']:.3f} ms, "
          f"bare/sidecar {cpu['bare_over_sidecar']:.3f}")
    print(f"p50 latency, 1 connection: direct {latency['direct']['p50_ms']:.3f} ms, bare proxy "
          f"{latency['bare_proxy']['p50_ms']:.3f} ms, sidecar {latency['sidecar']['p50_ms']:.3f} ms; "
          f"sidecar adds {results['sidecar_added_p50_ms']:.3f} ms (target <= 0.5)")
    print(f"SSE delay: direct p50 {sse['direct_p50']:.3f} ms p99 {sse['direct_p99']:.3f} ms; sidecar p50 "
          f"{sse['sidecar_p50']:.3f} ms p99 {sse['sidecar_p99']:.3f} ms (target p99 <= 2)")
    print(f"sidecar RSS after run: {results['sidecar_rss_mb_after_run']:.1f} MB (target <= 50); bare proxy "
          f"{results['bare_proxy_rss_mb_after_run']:.1f} MB")
    print(f"start to verified handshake: median {start['median'] * 1000:.0f} ms, min {start['min'] * 1000:.0f} ms, "
          f"max {start['max'] * 1000:.0f} ms over {start['samples']} starts (target <= 250)")
    first = results["start_to_first_reply_s"]
    print(f"start to first /api/health reply: median {first['median'] * 1000:.0f} ms, min "
          f"{first['min'] * 1000:.0f} ms, max {first['max'] * 1000:.0f} ms")
    stop = results["stdin_close_to_exit_s"]
    print(f"stdin closed to exit: median {stop['median'] * 1000:.0f} ms, max {stop['max'] * 1000:.0f} ms "
          "(the watchdog caps it at 900 ms)")


if __name__ == "__main__":
    main()
