"""`keyside run` on the command line: arguments, errors and exit statuses that need no window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# `keyside run` fails on bad arguments before it starts anything; this bounds a hang.
TIMEOUT_S = 60

CASES = [
    ("app-twice", ["run", "tests/e2e/app", "--app", "monitor"], 2, "The app is given twice"),
    ("browser-and-headless", ["run", "--browser", "--headless"], 2, "not allowed with argument"),
    ("missing-app", ["run", "no-such-app-folder", "--vault", "memory"], 1, "No app manifest found"),
    ("file-option-without-file-vault", ["run", "tests/e2e/app", "--vault", "memory", "--vault-file", "x"], 2,
     "--vault-file applies only to the file vault"),
]


@pytest.mark.parametrize(("arguments", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_run_argument_errors(tmp_path: Path, arguments: list[str], status: int, message: str) -> None:
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}

    completed = subprocess.run([sys.executable, "-m", "keyside", *arguments], capture_output=True, text=True,
                               env=environment, cwd=Path(__file__).parent.parent, timeout=TIMEOUT_S, check=False)

    assert completed.returncode == status, completed.stderr
    assert message in completed.stderr
    assert completed.stdout == ""


def test_run_help_lists_modes() -> None:
    completed = subprocess.run([sys.executable, "-m", "keyside", "run", "--help"], capture_output=True, text=True,
                               timeout=TIMEOUT_S, check=False)

    assert completed.returncode == 0
    for option in ("--browser", "--headless", "--vault", "--app"):
        assert option in completed.stdout
