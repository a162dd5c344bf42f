"""`keyside doctor` checks for the shell: display, pywebview, Qt WebEngine and its libraries, browser.

Nothing here fails the doctor run: without native windows `keyside run` still works in browser
mode. Each missing piece is a warning that names what to install.
"""

from __future__ import annotations

import argparse
import os
import sys

from keyside.cli.doctor import OK, WARN, Check
from keyside.shell.display import (
    Finding,
    desktop_finding,
    display_finding,
    missing_qt_libraries,
    pywebview_finding,
    qt_finding,
    system_browser,
)


def checks(args: argparse.Namespace) -> list[Check]:
    """Return the desktop and browser-mode checks for this machine."""
    results = [_display_check(), _pywebview_check(), _qt_check()]
    if sys.platform.startswith("linux"):
        results.extend([_qt_libraries_check(), _sandbox_check()])
    results.append(_browser_check())
    results.append(_mode_check())
    return results


def _from_finding(name: str, finding: Finding, consequence: str) -> Check:
    if finding.ok:
        return Check(name, OK, finding.detail)
    return Check(name, WARN, f"{finding.detail}: {consequence}", finding.fix)


def _display_check() -> Check:
    return _from_finding("display", display_finding(), "`keyside run` will use browser mode")


def _pywebview_check() -> Check:
    return _from_finding("pywebview", pywebview_finding(), "no native windows")


def _qt_check() -> Check:
    return _from_finding("qt webengine", qt_finding(), "no native windows")


def _qt_libraries_check() -> Check:
    missing = missing_qt_libraries()
    if not missing:
        return Check("qt libraries", OK, "the libraries of Qt's xcb platform plugin are present")
    names = ", ".join(sorted(missing))
    packages = " ".join(sorted(set(missing.values())))
    return Check("qt libraries", WARN, f"not found: {names}",
                 f"On Debian or Ubuntu: sudo apt-get install {packages} (other systems: the packages that "
                 "provide these libraries).")


def _sandbox_check() -> Check:
    flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return Check("qt sandbox", OK, "running as a normal user, so Qt WebEngine keeps its renderer sandbox")
    if "--no-sandbox" in flags.split():
        return Check("qt sandbox", WARN, "running as root with --no-sandbox: pages run without the renderer sandbox",
                     "Run keyside as a normal user.")
    return Check("qt sandbox", WARN, "running as root: Qt WebEngine does not start without --no-sandbox",
                 "Run keyside as a normal user, or export QTWEBENGINE_CHROMIUM_FLAGS=--no-sandbox "
                 "(pages then run without the renderer sandbox).")


def _browser_check() -> Check:
    browser = system_browser()
    if browser is not None:
        return Check("browser mode", OK, f"links open with {browser}")
    return Check("browser mode", WARN, "no system browser can be started here: `keyside run --browser` prints "
                 "the one-time link instead", "Open the printed link in a browser, or set $BROWSER.")


def _mode_check() -> Check:
    finding = desktop_finding()
    if finding.ok:
        return Check("run mode", OK, "`keyside run` opens native windows")
    return Check("run mode", WARN, f"`keyside run` opens browser mode (reason: {finding.reason})", finding.fix)
