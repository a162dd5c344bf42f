"""`keyside run --headless` as a user runs it: what it prints, and a missing file vault."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import test_cli_secrets
from keyside.cli.common import PASSPHRASE_ENV
from keyside.host.headless import HEADLESS_PURPOSE

# Fixtures shared with test_cli_secrets.
app_dir = test_cli_secrets.app_dir

STOP_LINE = "press Ctrl-C to stop"


def run_headless_until_ready(app: Path, tmp_path: Path, *vault_args: str) -> tuple[int, list[str], str]:
    """Start `keyside run --headless`, read stdout up to the stop hint, stop it with SIGINT; return all output."""
    env = {key: value for key, value in os.environ.items() if key != PASSPHRASE_ENV}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    process = subprocess.Popen([sys.executable, "-m", "keyside", "run", str(app), "--headless", *vault_args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    lines: list[str] = []
    try:
        while True:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if STOP_LINE in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines += out.splitlines()
    return process.returncode, lines, err


def test_headless_output_explains_token(app_dir, tmp_path):
    code, lines, err = run_headless_until_ready(app_dir, tmp_path, "--vault", "memory")
    assert code == 0, err
    assert "sidecar listening on http://127.0.0.1:" in lines[0]
    text = "\n".join(lines)
    assert HEADLESS_PURPOSE in text
    assert "token_missing" in text
    assert "keyside exec" in text
    assert "docs/python-api.md" in text
    assert any(STOP_LINE in line for line in lines)


def test_headless_missing_file_vault(app_dir, tmp_path):
    missing = tmp_path / "typo" / "vault.enc"
    code, lines, err = run_headless_until_ready(app_dir, tmp_path, "--vault", "file", "--vault-file", str(missing))
    assert code == 0, err
    assert f"no vault file at {missing.absolute()} yet" in err
    assert "sidecar listening on" in lines[0]
    assert not missing.parent.exists()
