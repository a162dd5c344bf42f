"""Per-user folders for logs and file vaults, following each platform's convention."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _base_dir(kind: str) -> Path:
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / ("Logs" if kind == "logs" else "Application Support") / "keyside"
    if sys.platform == "win32":
        root = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(root) / "keyside" / kind
    if kind == "logs":
        root = os.environ.get("XDG_STATE_HOME") or str(home / ".local" / "state")
        return Path(root) / "keyside" / "logs"
    root = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(root) / "keyside"


def log_dir(app_id: str) -> Path:
    """Return the folder for an app's log files (not created here)."""
    return _base_dir("logs") / app_id


def data_dir(app_id: str) -> Path:
    """Return the folder for an app's data such as the encrypted file vault (not created here)."""
    return _base_dir("data") / app_id


def ensure_private_dir(path: Path) -> Path:
    """Create `path` with owner-only permissions where the platform supports them."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if sys.platform != "win32":
        os.chmod(path, 0o700)
    return path
