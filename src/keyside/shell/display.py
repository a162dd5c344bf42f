"""Whether native windows can open here: a display, pywebview and its Qt backend.

`keyside run` uses this to fall back to browser mode, and `keyside doctor` to say what to
install. Each finding is a `Finding` with a reason name and, when something is missing, a fix.
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# Shared libraries the Qt xcb platform plugin and Qt WebEngine load on Linux, with the Debian
# package that provides each. Qt 6.5 and later refuse to start the xcb plugin without xcb-cursor.
QT_XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-xkb": "libxcb-xkb1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
    "EGL": "libegl1",
    "GL": "libgl1",
    "nss3": "libnss3",
}
# The folder of a local X server's socket (DISPLAY=:N) on Linux and BSD.
X11_SOCKET_DIR = "/tmp/.X11-unix"  # noqa: S108 - the fixed X11 convention, not a temporary file
# Browsers `keyside run --browser` can open when no $BROWSER is set, in order of preference.
SYSTEM_BROWSERS = ("xdg-open", "sensible-browser", "x-www-browser", "chromium", "google-chrome", "firefox")
# Qt bindings with Qt WebEngine that pywebview's Qt backend can load through qtpy.
QT_WEBENGINE_MODULES = ("PyQt6.QtWebEngineWidgets", "PySide6.QtWebEngineWidgets",
                        "PyQt5.QtWebEngineWidgets", "PySide2.QtWebEngineWidgets")


@dataclass(frozen=True)
class Finding:
    """One fact about the desktop environment: `ok`, a reason name, what was found, and a fix."""

    ok: bool
    reason: str
    detail: str
    fix: str | None = None


def display_finding(environ: dict[str, str] | None = None, platform: str = sys.platform) -> Finding:
    """Return whether a graphical display is reachable (on Linux: $WAYLAND_DISPLAY or $DISPLAY).

    A local display must have its socket, because Qt aborts the whole process when it cannot
    connect to the display it was given.
    """
    environ = dict(os.environ) if environ is None else environ
    if platform in ("darwin", "win32"):
        return Finding(True, "display_ok", f"{platform} desktop session")

    wayland = environ.get("WAYLAND_DISPLAY")
    if wayland:
        socket_path = Path(wayland) if wayland.startswith("/") else Path(environ.get("XDG_RUNTIME_DIR", "/")) / wayland
        if socket_path.exists():
            return Finding(True, "display_ok", f"WAYLAND_DISPLAY={wayland}")
    display = environ.get("DISPLAY")
    if display:
        local = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
        if local is None or Path(X11_SOCKET_DIR, f"X{local.group(1)}").exists():
            return Finding(True, "display_ok", f"DISPLAY={display}")
        return Finding(False, "display_unreachable", f"DISPLAY={display} has no X server socket in {X11_SOCKET_DIR}",
                       "Start the X server or correct DISPLAY, or use `keyside run --browser`.")
    if wayland:
        return Finding(False, "display_unreachable", f"WAYLAND_DISPLAY={wayland} has no socket",
                       "Start the compositor or correct WAYLAND_DISPLAY, or use `keyside run --browser`.")
    return Finding(False, "no_display", "neither DISPLAY nor WAYLAND_DISPLAY is set",
                   "Run keyside inside a desktop session, or use `keyside run --browser`.")


def pywebview_finding() -> Finding:
    """Return whether pywebview (the `desktop` extra) is importable."""
    if importlib.util.find_spec("webview") is None:
        return Finding(False, "no_pywebview", "pywebview is not installed",
                       "pip install 'keyside[desktop]'")
    try:
        module = importlib.import_module("webview")
    except Exception as error:  # noqa: BLE001 - any import failure means no native windows
        return Finding(False, "pywebview_broken", f"pywebview failed to import: {type(error).__name__}: {error}",
                       "pip install --force-reinstall 'keyside[desktop]'")
    try:
        version = importlib.metadata.version("pywebview")
    except importlib.metadata.PackageNotFoundError:
        version = getattr(module, "__version__", "(version unknown)")
    return Finding(True, "pywebview_ok", f"pywebview {version}")


def qt_finding() -> Finding:
    """Return whether a Qt WebEngine binding imports (the pywebview backend the shell uses).

    Importing loads the Qt libraries, so a missing system library shows up here too.
    """
    for name in QT_WEBENGINE_MODULES:
        package = name.split(".", 1)[0]
        if importlib.util.find_spec(package) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - an ImportError or a missing shared library
            return Finding(False, "qt_broken", f"{name} failed to import: {error}",
                           "Install the Qt system libraries listed by `keyside doctor`, "
                           "or reinstall with pip install --force-reinstall 'keyside[desktop]'.")
        return Finding(True, "qt_ok", f"{name} imports")
    return Finding(False, "no_qt", "no Qt WebEngine binding (PyQt6 or PySide6) is installed",
                   "pip install 'keyside[desktop]' (it installs pywebview[qt])")


def missing_qt_libraries() -> dict[str, str]:
    """Return {library: Debian package} for each Qt xcb library the loader cannot find (Linux)."""
    return {name: package for name, package in QT_XCB_LIBRARIES.items() if ctypes.util.find_library(name) is None}


def system_browser(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """Return what browser mode would open pages with, or None when it can only print the URL.

    $BROWSER wins everywhere. On Linux a browser needs a display, so without one the URL is
    printed instead of starting a console browser that would take over the terminal.
    """
    environ = dict(os.environ) if environ is None else environ
    if environ.get("BROWSER"):
        return f"$BROWSER ({environ['BROWSER'].split()[0]})"
    if platform in ("darwin", "win32"):
        return "the default browser"
    if not display_finding(environ, platform).ok:
        return None
    for name in SYSTEM_BROWSERS:
        path = shutil.which(name, path=environ.get("PATH"))
        if path:
            return path
    return None


def desktop_finding(environ: dict[str, str] | None = None, platform: str = sys.platform) -> Finding:
    """Return whether `keyside run` can open native windows; the first missing piece decides.

    The shell drives pywebview's Qt backend on every platform (its bridge uses the Qt web
    channel), so Qt WebEngine is required on macOS and Windows as well.
    """
    for finding in (display_finding(environ, platform), pywebview_finding(), qt_finding()):
        if not finding.ok:
            return finding
    return Finding(True, "desktop_ok", "native windows are available")
