"""Helpers shared by the host, supervisor and IPC tests (this module has no tests of its own).

The test app has two secrets, three windows with different capabilities and two services on a
loopback upstream. Sidecars are real processes: `python -m keyside.sidecar`, or the fake in
tests/data/ipc_fake_sidecar.py for behaviour a real sidecar never shows (silence, lies, crashes).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from keyside.host import Host, SupervisorSettings
from keyside.manifest import Manifest, load_manifest
from keyside.vault import MemoryStore, Vault, VaultError
from keyside.vault.store import Change, Entries

DATA = Path(__file__).parent / "data"
FAKE_SIDECAR = DATA / "ipc_fake_sidecar.py"

PAGE_ORIGIN = "http://127.0.0.1:8765"
SETTINGS_ORIGIN = "http://127.0.0.1:8766"

# Short waits so a broken case fails in seconds; restarts are near-immediate.
FAST = SupervisorSettings(handshake_timeout_s=5.0, control_timeout_s=3.0, backoff_initial_s=0.05,
                          backoff_max_s=0.2, max_quick_failures=3, stable_run_s=30.0, stop_grace_s=1.0,
                          eof_exit_s=0.5)

ECHO_KEY = "ek-live-0123456789-ECHO-abcdef"
OTHER_KEY = "ok-live-9876543210-OTHER-fedcba"

MANIFEST_TEMPLATE = """
[app]
id = "{app_id}"
name = "IPC Test"

[secrets.ECHO_KEY]
description = "Key for the echo upstream"

[secrets.OTHER_KEY]
description = "Another key"

[windows.main]
page = "index.html"
capabilities = ["data"]

[windows.settings]
page = "settings.html"
capabilities = ["data", "secrets"]

[windows.about]
page = "index.html"
capabilities = []

[services.echo]
upstream = "http://127.0.0.1:{port}"
secret = "ECHO_KEY"
inject = {{ header = "X-Api-Key" }}
methods = ["GET", "POST"]
paths = ["/echo/", "/header/"]
allow_private_network = true
validate = {{ path = "/header/check", status = 200 }}

[services.other]
upstream = "http://127.0.0.1:{port}"
secret = "OTHER_KEY"
inject = {{ bearer = true }}
paths = ["/bearer/"]
allow_private_network = true

[network]
allow_private = ["127.0.0.1:{port}"]

[ui]
feeds = ["http://127.0.0.1:{port}/feed/rss"]
watchlist = ["AAPL"]
"""


def write_app(folder: Path, upstream_port: int = 9, app_id: str = "ipc-test") -> Manifest:
    """Write the test app into `folder` and load its manifest (port 9 when no upstream runs)."""
    pages = folder / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    (pages / "index.html").write_text("<!doctype html><title>main</title>\n", encoding="utf-8")
    (pages / "settings.html").write_text("<!doctype html><title>settings</title>\n", encoding="utf-8")
    (folder / "keyside.toml").write_text(MANIFEST_TEMPLATE.format(port=upstream_port, app_id=app_id), encoding="utf-8")
    return load_manifest(folder)


class Opener:
    """Stands in for webbrowser.open and records the URLs it was given."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, url: str) -> bool:
        self.opened.append(url)
        return True


def memory_vault(manifest: Manifest, values: dict[str, str] | None = None) -> Vault:
    return Vault(manifest, MemoryStore(dict(values or {})))


class FailingStore(MemoryStore):
    """A memory store whose writes fail the way a locked or full OS vault fails."""

    def update(self, change: Change) -> Entries:
        raise VaultError("The vault could not be written (test store).", reason="vault_write_failed",
                         fix="unlock the vault")


def real_sidecar_available() -> bool:
    return importlib.util.find_spec("keyside.sidecar.__main__") is not None


def fake_sidecar(mode: str = "ok", *, delay_s: float = 0.0, claim_port: int = 0,
                 record: Path | None = None) -> list[str]:
    command = [sys.executable, str(FAKE_SIDECAR), "--mode", mode, "--delay-s", str(delay_s),
               "--claim-port", str(claim_port)]
    if record is not None:
        command += ["--record", str(record)]
    return command


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@contextlib.contextmanager
def running_host(manifest: Manifest, vault: Vault, log_dir: Path, *, origins: dict[str, str | None] | None = None,
                 **options: Any) -> Iterator[Host]:
    """Start a host with the given page origins ({origin: window label or None}); stop it afterwards."""
    options.setdefault("settings", FAST)
    host = Host(manifest, vault, log_dir=log_dir, **options)
    for origin, label in ({PAGE_ORIGIN: None} if origins is None else origins).items():
        host.add_page_origin(origin, label)
    host.start(timeout_s=15.0)
    try:
        yield host
    finally:
        host.stop()


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll `condition` until it returns a true value and return that value; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def http_get(url: str, token: str | None = None, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET `url` directly (no proxies from the environment); return status and body."""
    request = urllib.request.Request(url)  # noqa: S310 - tests pass loopback http URLs only
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def process_gone(pid: int) -> bool:
    """Return True when `pid` has exited (a zombie waiting to be reaped counts as gone)."""
    status = Path(f"/proc/{pid}/status")
    try:
        text = status.read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = next((line.split()[1] for line in text.splitlines() if line.startswith("State:")), "")
    return state == "Z"


def starts(record: Path) -> list[dict[str, Any]]:
    """Return the start records of every fake sidecar that wrote to `record`, oldest first."""
    return [entry for entry in read_records(record) if entry.get("event") == "start"]
