"""Host lifecycle benchmark: start to a ready sidecar, stop, and sidecar exit after the host is killed.

Each round starts a Host with a memory vault for a small app made here, whose one service points
at 127.0.0.1. Run it in a loopback-only namespace:

    unshare --net bash -c 'ip link set lo up; python3 benchmarks/bench_host.py --runs 10'

Measures, per run:
- start: `Host.start()` until the sidecar's handshake is verified;
- stop: `Host.stop()` until the sidecar has exited;
- kill: a host process killed with SIGKILL until its sidecar process is gone (the sidecar reads
  EOF on stdin and, on Linux, gets its parent-death signal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keyside.host import Host
from keyside.manifest import load_manifest
from keyside.vault import MemoryStore, Vault

MANIFEST = """
[app]
id = "bench-host"
name = "Host benchmark"

[secrets.BENCH_KEY]
description = "A key for the benchmark upstream"

[windows.main]
page = "index.html"
capabilities = ["data"]

[services.bench]
upstream = "http://127.0.0.1:9"
secret = "BENCH_KEY"
inject = { bearer = true }
allow_private_network = true
"""

# A child that starts a host, prints its sidecar's pid, and sleeps until it is killed.
HOST_CHILD = """
import sys, time
from keyside.host import Host
from keyside.manifest import load_manifest
from keyside.vault import MemoryStore, Vault
manifest = load_manifest(sys.argv[1])
host = Host(manifest, Vault(manifest, MemoryStore({"BENCH_KEY": "bench-key-value"})), log_dir=sys.argv[2])
host.add_page_origin("http://127.0.0.1:8765")
host.start()
print(host.sidecar_state["pid"], flush=True)
while True:
    time.sleep(60)
"""
# How often the kill measurement checks whether the sidecar is gone.
POLL_INTERVAL_S = 0.001
# A sidecar still alive after this long counts as a failed run.
KILL_WAIT_LIMIT_S = 10.0


def make_app(folder: Path) -> Path:
    (folder / "pages").mkdir(parents=True)
    (folder / "pages" / "index.html").write_text("<!doctype html><title>bench</title>\n")
    (folder / "keyside.toml").write_text(MANIFEST)
    return folder


def process_alive(pid: int) -> bool:
    """Return True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def measure_start_stop(app: Path, log_dir: Path) -> tuple[float, float]:
    manifest = load_manifest(app)
    host = Host(manifest, Vault(manifest, MemoryStore({"BENCH_KEY": "bench-key-value"})), log_dir=log_dir)
    host.add_page_origin("http://127.0.0.1:8765")
    started = time.perf_counter()
    host.start()
    ready = time.perf_counter()
    host.stop()
    stopped = time.perf_counter()
    return ready - started, stopped - ready


def measure_kill(app: Path, log_dir: Path) -> float:
    child = subprocess.Popen([sys.executable, "-c", HOST_CHILD, str(app), str(log_dir)],
                             stdout=subprocess.PIPE, text=True)
    sidecar_pid = int(child.stdout.readline())
    killed = time.perf_counter()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    while process_alive(sidecar_pid):
        if time.perf_counter() - killed > KILL_WAIT_LIMIT_S:
            os.kill(sidecar_pid, signal.SIGKILL)
            raise RuntimeError(f"sidecar {sidecar_pid} outlived its host by {KILL_WAIT_LIMIT_S} s")
        time.sleep(POLL_INTERVAL_S)
    return time.perf_counter() - killed


def summary_ms(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples) * 1000, 1), "max_ms": round(max(samples) * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="rounds of each measurement (default 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        app = make_app(Path(temp) / "app")
        log_dir = Path(temp) / "logs"
        starts, stops, kills = [], [], []
        for _ in range(args.runs):
            start_s, stop_s = measure_start_stop(app, log_dir)
            starts.append(start_s)
            stops.append(stop_s)
            kills.append(measure_kill(app, log_dir))

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runs": args.runs,
        "start": summary_ms(starts),
        "stop": summary_ms(stops),
        "kill_to_sidecar_gone": summary_ms(kills),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"machine: {results['machine']}, runs: {args.runs}")
    for name in ("start", "stop", "kill_to_sidecar_gone"):
        print(f"{name:<22} median {results[name]['median_ms']:>7} ms   max {results[name]['max_ms']:>7} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
