"""`keyside` writing into a pipe whose reader has gone, as `keyside doctor | head -1` does:
no traceback on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyside.cli.common import PASSPHRASE_ENV

COMMANDS = [
    pytest.param(["doctor"], id="doctor"),
    pytest.param(["doctor", "--security", "--json"], id="doctor-security-json"),
    pytest.param(["secrets", "list", "--vault", "memory"], id="secrets-list"),
]
# The pipelines a user types, with the reader taking only the start of the output.
PIPELINES = [
    pytest.param("doctor", "head -1", id="doctor-head-line"),
    pytest.param("doctor --security --json", "head -c 600", id="doctor-security-json-head-bytes"),
    pytest.param("secrets list --vault memory", "head -1", id="secrets-list-head-line"),
]


def keyside_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != PASSPHRASE_ENV}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


@pytest.mark.parametrize("argv", COMMANDS)
def test_closed_stdout_no_traceback(argv: list[str], tmp_path: Path) -> None:
    # The read end is closed before keyside starts, so its first write to stdout fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "keyside", *argv], stdin=subprocess.DEVNULL,
                                stdout=write_end, stderr=subprocess.PIPE, text=True, env=keyside_env(tmp_path),
                                start_new_session=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert "Exception ignored" not in result.stderr


@pytest.mark.parametrize(("command", "reader"), PIPELINES)
def test_shell_pipeline_no_traceback(command: str, reader: str, tmp_path: Path) -> None:
    stderr_file = tmp_path / "keyside.err"
    pipeline = f"{sys.executable} -m keyside {command} 2>{stderr_file} | {reader}"
    result = subprocess.run(["sh", "-c", pipeline], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=keyside_env(tmp_path), start_new_session=True, timeout=120)
    stderr = stderr_file.read_text()
    assert result.stdout.strip()
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert "Exception ignored" not in stderr
