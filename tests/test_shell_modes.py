"""Choosing between native windows and browser mode, the shell's commands and its doctor checks."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from keyside.errors import KeysideError
from keyside.host import ArgSpec, CommandRegistry, command
from keyside.manifest import load_manifest, parse_manifest
from keyside.shell import checks as shell_checks
from keyside.shell.display import Finding, display_finding, missing_qt_libraries, system_browser
from keyside.shell.runner import (
    OPENED_IN_BROWSER,
    OPENED_IN_TERMINAL,
    OPENED_IN_WINDOW,
    AppShell,
    choose_mode,
    main_window_label,
    shell_commands,
)
from keyside.vault import MemoryStore, Vault
from test_shell_pages import make_app

DISPLAY_CASES = [
    ("darwin", {}, True, "display_ok"),
    ("win32", {}, True, "display_ok"),
    ("linux", {}, False, "no_display"),
    ("linux", {"DISPLAY": ""}, False, "no_display"),
    ("linux", {"DISPLAY": "remote-host:0"}, True, "display_ok"),
    ("linux", {"DISPLAY": ":424242"}, False, "display_unreachable"),
    ("linux", {"DISPLAY": "unix:424242.0"}, False, "display_unreachable"),
    ("linux", {"WAYLAND_DISPLAY": "wayland-424242", "XDG_RUNTIME_DIR": "/nonexistent"}, False,
     "display_unreachable"),
]


@pytest.mark.parametrize(("platform", "environ", "ok", "reason"), DISPLAY_CASES,
                         ids=[f"{c[0]}-{','.join(c[1]) or 'none'}-{c[3]}" for c in DISPLAY_CASES])
def test_display_finding(platform: str, environ: dict[str, str], ok: bool, reason: str) -> None:
    finding = display_finding(environ, platform)

    assert finding.ok is ok
    assert finding.reason == reason
    assert (finding.fix is None) is ok


def test_display_local_socket(tmp_path: Path) -> None:
    socket_file = tmp_path / "wayland-7"
    socket_file.touch()

    finding = display_finding({"WAYLAND_DISPLAY": "wayland-7", "XDG_RUNTIME_DIR": str(tmp_path)}, "linux")

    assert finding.ok
    assert finding.detail == "WAYLAND_DISPLAY=wayland-7"


BROWSER_CASES = [
    ("linux", {"BROWSER": "/opt/browser %s"}, "$BROWSER (/opt/browser)"),
    ("linux", {"PATH": "/nonexistent"}, None),
    ("linux", {"DISPLAY": "remote-host:0", "PATH": "/nonexistent"}, None),
    ("darwin", {}, "the default browser"),
    ("win32", {}, "the default browser"),
]


@pytest.mark.parametrize(("platform", "environ", "expected"), BROWSER_CASES,
                         ids=["browser-env", "no-display", "no-browser-on-path", "macos", "windows"])
def test_system_browser(platform: str, environ: dict[str, str], expected: str | None) -> None:
    assert system_browser(environ, platform) == expected


def test_system_browser_found_on_path(tmp_path: Path) -> None:
    executable = tmp_path / "firefox"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)

    found = system_browser({"DISPLAY": "remote-host:0", "PATH": str(tmp_path)}, "linux")

    assert found == str(executable)


AVAILABLE = Finding(True, "desktop_ok", "native windows are available")
NO_DISPLAY = Finding(False, "no_display", "neither DISPLAY nor WAYLAND_DISPLAY is set", "use --browser")

MODE_CASES = [
    ("auto", AVAILABLE, "desktop", None),
    ("auto", NO_DISPLAY, "browser", "no_display"),
    ("browser", AVAILABLE, "browser", None),
    ("browser", NO_DISPLAY, "browser", None),
    ("desktop", AVAILABLE, "desktop", None),
]


@pytest.mark.parametrize(("requested", "finding", "mode", "fallback"), MODE_CASES,
                         ids=[f"{c[0]}-{c[1].reason}" for c in MODE_CASES])
def test_choose_mode(requested: str, finding: Finding, mode: str, fallback: str | None) -> None:
    chosen, why = choose_mode(requested, finding)

    assert chosen == mode
    assert (why.reason if why else None) == fallback


def test_choose_desktop_without_display() -> None:
    with pytest.raises(KeysideError) as raised:
        choose_mode("desktop", NO_DISPLAY)

    assert raised.value.reason == "no_display"
    assert raised.value.fix == "use --browser"


def test_choose_unknown_mode() -> None:
    with pytest.raises(ValueError, match="kiosk"):
        choose_mode("kiosk", AVAILABLE)


def test_main_window_label(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "a.html").write_text("a")
    windows = {"settings": {"page": "a.html"}, "dashboard": {"page": "a.html"}}
    without_main = parse_manifest(tmp_path / "keyside.toml", {"app": {"id": "x", "name": "X"}, "windows": windows})
    with_main = load_manifest(make_app(tmp_path / "other"))

    assert main_window_label(without_main) == "settings"
    assert main_window_label(with_main) == "main"


def test_shell_commands_add_open_window() -> None:
    app_commands = CommandRegistry()

    @command("ping", capability=None, registry=app_commands)
    def ping(ctx: object) -> str:
        return "pong"

    opened: list[str] = []

    def print_link(label: str) -> str:
        opened.append(label)
        return OPENED_IN_TERMINAL

    registry = shell_commands(print_link, app_commands)
    open_window = registry.get("open_window")
    result = open_window.handler(object(), label="settings")

    assert registry.get("ping") is app_commands.get("ping")
    assert open_window.capability is None
    assert open_window.args["label"] == ArgSpec(str, max_length=32)
    assert result == {"label": "settings", "opened_in": "terminal"}
    assert opened == ["settings"]
    assert "open_window" not in app_commands


@pytest.mark.parametrize(("browser_started", "expected"), [
    pytest.param(True, OPENED_IN_BROWSER, id="browser-opened"),
    pytest.param(False, OPENED_IN_TERMINAL, id="link-printed"),
])
def test_browser_open_window_reports_where(tmp_path: Path, browser_started: bool, expected: str) -> None:
    manifest = load_manifest(make_app(tmp_path))
    urls: list[str] = []

    def opener(url: str) -> bool:
        urls.append(url)
        return browser_started

    out = io.StringIO()
    shell = AppShell(manifest, Vault(manifest, MemoryStore()), mode="browser", out=out, url_opener=opener)
    shell.pages.start()
    try:
        opened_in = shell.open_window("settings")
    finally:
        shell.pages.stop()
        assert shell.gate is not None
        shell.gate.close()

    assert opened_in == expected
    assert len(urls) == 1
    assert (urls[0] in out.getvalue()) is (not browser_started)


def test_shell_commands_keep_app_open_window() -> None:
    app_commands = CommandRegistry()

    @command("open_window", capability="data", args={"label": str}, registry=app_commands)
    def app_open_window(ctx: object, label: str) -> str:
        return label

    registry = shell_commands(lambda label: OPENED_IN_WINDOW, app_commands)

    assert registry.get("open_window") is app_commands.get("open_window")


def test_doctor_checks_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("BROWSER", raising=False)

    results = {check.name: check for check in shell_checks.checks(argparse.Namespace())}

    assert results["display"].status == "warn"
    assert "browser mode" in results["display"].detail
    assert results["browser mode"].status == "warn"
    assert results["run mode"].status == "warn"
    assert "no_display" in results["run mode"].detail
    assert all(check.status in ("ok", "warn") for check in results.values())
    assert all(check.fix for check in results.values() if check.status == "warn")


def test_doctor_checks_qt_libraries() -> None:
    results = {check.name: check for check in shell_checks.checks(argparse.Namespace())}
    missing = missing_qt_libraries()

    if sys.platform.startswith("linux"):
        assert results["qt libraries"].status == ("ok" if not missing else "warn")
        for name in missing:
            assert name in results["qt libraries"].detail


def test_doctor_lists_shell_checks(tmp_path: Path) -> None:
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}

    completed = subprocess.run([sys.executable, "-m", "keyside", "doctor", "--vault", "memory", "--json"],
                               capture_output=True, text=True, env=environment, timeout=60, check=False)
    names = [check["name"] for check in json.loads(completed.stdout)["checks"]]

    assert "display" in names
    assert "browser mode" in names
    assert "run mode" in names
