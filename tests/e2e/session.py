"""Run `keyside run` as a user would, in a subprocess, and watch what it opens and writes.

The subprocess gets a throwaway HOME and state folder (so its log files can be read), and a
$BROWSER that only records URLs: every page keyside "opens in the system browser" (the browser
mode start links and open_external) lands in `urls.txt`, and the test decides what to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

# `keyside run` needs a few seconds to start the sidecar and, on a desktop, Qt WebEngine.
START_TIMEOUT_S = 60.0
# After SIGTERM keyside stops its sidecar and windows; this bounds a hung shutdown.
STOP_TIMEOUT_S = 20.0
# How often the URL file is read while waiting for a new line.
POLL_S = 0.1

RECORD_URL_SCRIPT = """#!/bin/sh
# Stands in for the system browser: append each URL it is asked to open.
printf '%s\\n' "$1" >> "{urls}"
"""

APP_DIR = Path(__file__).parent / "app"


class KeysideRun:
    """One `python -m keyside run APP ...` subprocess with its output, URLs and log folder."""

    def __init__(self, workdir: Path, *args: str, app: Path = APP_DIR, env: dict[str, str] | None = None,
                 record_urls: bool = True):
        self.workdir = workdir
        self.home = workdir / "home"
        self.state_dir = workdir / "state"
        self.urls_file = workdir / "urls.txt"
        self.args = ["run", str(app), "--vault", "memory", *args]
        self.extra_env = env or {}
        self.record_urls = record_urls
        self.process: asyncio.subprocess.Process | None = None
        self.stdout = ""
        self.stderr = ""
        self._urls_seen = 0
        self._readers: list[asyncio.Task[None]] = []

    def environment(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        runtime = self.workdir / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.state_dir),
            "XDG_DATA_HOME": str(self.workdir / "data"),
            "XDG_RUNTIME_DIR": str(runtime),
            "LANG": "C.UTF-8",
        }
        if self.record_urls:
            script = self.workdir / "record-url"
            script.write_text(RECORD_URL_SCRIPT.format(urls=self.urls_file))
            script.chmod(0o755)
            env["BROWSER"] = f"{script} %s"
        env.update(self.extra_env)
        return env

    async def start(self) -> KeysideRun:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keyside", "--log-level", "INFO", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            env=self.environment(), cwd=self.workdir)
        self._readers = [asyncio.create_task(self._collect("stdout")), asyncio.create_task(self._collect("stderr"))]
        return self

    async def _collect(self, name: str) -> None:
        assert self.process is not None
        stream = getattr(self.process, name)
        while line := await stream.readline():
            setattr(self, name, getattr(self, name) + line.decode("utf-8", "replace"))

    async def stop(self) -> int:
        """Send SIGTERM and return the exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            status = await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return status

    async def wait_for_output(self, pattern: str, stream: str = "stderr", timeout_s: float = START_TIMEOUT_S) -> str:
        """Return the first match of regular expression `pattern` in stdout or stderr."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            match = re.search(pattern, getattr(self, stream))
            if match:
                return match.group(0)
            self._check_alive()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{pattern!r} not in {stream} within {timeout_s} s:\n{self.stderr[-3000:]}")
            await asyncio.sleep(POLL_S)

    async def next_url(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Return the next URL keyside handed to the system browser."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            lines = self.urls_file.read_text().splitlines() if self.urls_file.exists() else []
            if len(lines) > self._urls_seen:
                self._urls_seen += 1
                return lines[self._urls_seen - 1]
            self._check_alive()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"keyside opened no new URL within {timeout_s} s:\n{self.stderr[-3000:]}")
            await asyncio.sleep(POLL_S)

    def recorded_urls(self) -> list[str]:
        return self.urls_file.read_text().splitlines() if self.urls_file.exists() else []

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.returncode is not None:
            raise RuntimeError(f"keyside exited with {self.process.returncode}:\n{self.stderr[-3000:]}")

    def log_texts(self) -> dict[str, str]:
        """Return {path: text} of every file keyside wrote under its state folder (logs, audit)."""
        if not self.state_dir.exists():
            return {}
        return {str(path): path.read_text("utf-8", "replace") for path in self.state_dir.rglob("*") if path.is_file()}
