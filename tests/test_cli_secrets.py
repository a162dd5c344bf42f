"""`keyside secrets set|list|delete` as a user runs them: a real process, real vaults, exit codes,
and no part of a secret value in any output.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import need
from keyside.cli import common as cli_common
from keyside.cli import main
from keyside.cli import secrets as cli_secrets
from keyside.cli.common import (
    MAX_PASSPHRASE_BYTES,
    PASSPHRASE_ENV,
    UsageError,
    open_vault_from_args,
    read_line_from_fd,
    read_passphrase,
)
from keyside.manifest import load_manifest
from keyside.vault import FileStore, Vault
from keyside.vault.binding import BINDINGS_KEY
from keyside.vault.file_store import MIN_SCRYPT_N
from test_vault_keyring import secret_service_running, secret_tool_entries, secret_tool_lookup, write_test_app

DATA = Path(__file__).parent / "data"
# Random letters and digits, so any five characters of it in an output are a leak, not chance.
SECRET_VALUE = "Zq8vX3pL9mW2Kd7RtY5u"
PASSPHRASE = "cli test passphrase"
LEAK_WINDOW_CHARS = 5


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    """A copy of the vault test app with a unique id, and a private data folder."""
    app_id = f"cli-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    yield write_test_app(tmp_path / "app", app_id)
    if secret_service_running():
        subprocess.run(["secret-tool", "clear", "service", f"keyside.{app_id}"], check=False, timeout=10)


class Outputs:
    """Runs `keyside` in a new session (no controlling terminal) and keeps every output for leak checks."""

    def __init__(self):
        self.seen: list[str] = []

    def run(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
        full_env = os.environ.copy()
        full_env.pop(PASSPHRASE_ENV, None)
        full_env.update(env or {})
        result = subprocess.run(
            [sys.executable, "-m", "keyside", *args], input=stdin, capture_output=True, text=True,
            stdin=None if stdin is not None else subprocess.DEVNULL, env=full_env, pass_fds=pass_fds,
            start_new_session=True, timeout=60,
        )
        self.seen += [result.stdout, result.stderr]
        return result

    def assert_no_leak(self, value: str = SECRET_VALUE) -> None:
        text = "\n".join(self.seen)
        for start in range(len(value) - LEAK_WINDOW_CHARS + 1):
            assert value[start:start + LEAK_WINDOW_CHARS] not in text


@pytest.fixture
def keyside():
    return Outputs()


def passphrase_pipe(text: str = PASSPHRASE) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, text.encode() + b"\n")
    os.close(write_end)
    return read_end


@pytest.mark.secret_service
def test_system_set_list_delete(app_dir, keyside):
    need(secret_service_running(), "no Secret Service on the session bus (run under scripts/netns-pytest)")
    service = f"keyside.{load_manifest(app_dir).app_id}"
    app = ["--app", str(app_dir)]

    stored = keyside.run("secrets", "set", "ALPHA_KEY", "--stdin", *app, stdin=f"  {SECRET_VALUE}\n")
    assert stored.returncode == 0, stored.stderr
    assert "Stored ALPHA_KEY in system (SecretService Keyring)" in stored.stdout
    assert len(secret_tool_entries(service)) == 1
    entry = json.loads(secret_tool_lookup(service, "vault"))
    assert json.loads(entry.pop(BINDINGS_KEY))["origins"] == {"ALPHA_KEY": []}
    assert entry == {"ALPHA_KEY": SECRET_VALUE}

    listed = keyside.run("secrets", "list", *app)
    assert listed.returncode == 0, listed.stderr
    assert "Vault: system (SecretService Keyring)" in listed.stdout
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines() if line.endswith(" key.")}
    assert rows == {"ALPHA_KEY": "yes", "BETA_KEY": "no", "GAMMA_KEY": "no", "DELTA_KEY": "no"}

    as_json = json.loads(keyside.run("secrets", "list", "--json", *app).stdout)
    assert as_json["backend"] == "system (SecretService Keyring)"
    assert as_json["kind"] == "system"
    assert {row["name"]: row["configured"] for row in as_json["secrets"]}["ALPHA_KEY"] is True
    assert [row["description"] for row in as_json["secrets"]][0] == "First test key."

    deleted = keyside.run("secrets", "delete", "ALPHA_KEY", *app)
    assert deleted.returncode == 0
    assert "Deleted ALPHA_KEY" in deleted.stdout
    assert secret_tool_entries(service) == []
    again = keyside.run("secrets", "delete", "ALPHA_KEY", *app)
    assert again.returncode == 0
    assert "was not stored" in again.stdout
    keyside.assert_no_leak()


def test_file_vault_created_by_cli(app_dir, keyside, tmp_path):
    vault_file = tmp_path / "secrets.enc"
    common = ["--app", str(app_dir), "--vault", "file", "--vault-file", str(vault_file)]
    stored = keyside.run("secrets", "set", "BETA_KEY", "--stdin", *common, stdin=SECRET_VALUE,
                         env={PASSPHRASE_ENV: PASSPHRASE})
    assert stored.returncode == 0, stored.stderr
    assert f"file ({vault_file})" in stored.stdout
    assert (vault_file.stat().st_mode & 0o777) == 0o600
    fd = passphrase_pipe()
    try:
        listed = keyside.run("secrets", "list", "--json", *common, "--passphrase-fd", str(fd), pass_fds=(fd,))
    finally:
        os.close(fd)
    assert listed.returncode == 0, listed.stderr
    assert {row["name"] for row in json.loads(listed.stdout)["secrets"] if row["configured"]} == {"BETA_KEY"}
    keyside.assert_no_leak()


@pytest.fixture
def vault_file(app_dir, tmp_path):
    """A file vault made in-process at the lowest scrypt cost, holding ALPHA_KEY."""
    path = tmp_path / "vault.enc"
    Vault(load_manifest(app_dir), FileStore(path, PASSPHRASE, scrypt_n=MIN_SCRYPT_N)).set("ALPHA_KEY", SECRET_VALUE)
    return path


def test_file_vault_wrong_passphrase(app_dir, keyside, vault_file):
    before = vault_file.read_bytes()
    fd = passphrase_pipe("not the passphrase")
    try:
        result = keyside.run("secrets", "set", "BETA_KEY", "--stdin", "--app", str(app_dir), "--vault", "file",
                             "--vault-file", str(vault_file), "--passphrase-fd", str(fd), stdin="sk-other",
                             pass_fds=(fd,))
    finally:
        os.close(fd)
    assert result.returncode == 1
    assert "passphrase does not open" in result.stderr
    assert vault_file.read_bytes() == before
    keyside.assert_no_leak()


def test_vault_kind_from_environment(app_dir, keyside, vault_file):
    result = keyside.run("secrets", "list", "--app", str(app_dir), "--vault-file", str(vault_file),
                         env={"KEYSIDE_VAULT": "file", PASSPHRASE_ENV: PASSPHRASE})
    assert result.returncode == 0, result.stderr
    assert "ALPHA_KEY  yes" in result.stdout
    keyside.assert_no_leak()


def test_memory_vault_set_warns(app_dir, keyside):
    result = keyside.run("secrets", "set", "ALPHA_KEY", "--stdin", "--app", str(app_dir), "--vault", "memory",
                         stdin=SECRET_VALUE)
    assert result.returncode == 0
    assert "only until this command exits" in result.stderr
    listed = keyside.run("secrets", "list", "--app", str(app_dir), "--vault", "memory")
    assert "ALPHA_KEY  no" in listed.stdout
    keyside.assert_no_leak()


USAGE_CASES = [
    ("no_action", ["secrets"], {}),
    ("set_without_name", ["secrets", "set", "--vault", "memory"], {}),
    ("unknown_vault_kind", ["secrets", "list", "--vault", "cloud"], {}),
    ("vault_file_without_file_kind", ["secrets", "list", "--vault", "memory", "--vault-file", "x.enc"], {}),
    ("passphrase_fd_without_file_kind", ["secrets", "list", "--vault", "memory", "--passphrase-fd", "3"], {}),
    ("no_terminal_for_value", ["secrets", "set", "ALPHA_KEY", "--vault", "memory"], {}),
    ("stdin_twice", ["secrets", "set", "ALPHA_KEY", "--stdin", "--vault", "file", "--passphrase-fd", "0"], {}),
    ("bad_vault_environment", ["secrets", "list"], {"KEYSIDE_VAULT": "cloud"}),
    ("closed_passphrase_fd", ["secrets", "list", "--vault", "file", "--passphrase-fd", "57"], {}),
    # `list` on a missing vault file reads nothing, so `set` is the command that needs the passphrase.
    ("no_passphrase_no_terminal", ["secrets", "set", "ALPHA_KEY", "--stdin", "--vault", "file"], {}),
]


@pytest.fixture
def run_in_process(monkeypatch, capsys):
    """Run `keyside` in this process with no terminal and the given stdin, for the tables of error cases."""
    monkeypatch.setattr(cli_secrets, "has_terminal", lambda: False)
    monkeypatch.setattr(cli_common, "has_terminal", lambda: False)
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)

    def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        try:
            code = main(list(args))
        except SystemExit as exit_request:  # argparse exits on its own usage errors
            code = exit_request.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.mark.parametrize(("case", "args", "env"), USAGE_CASES, ids=[case[0] for case in USAGE_CASES])
def test_usage_errors_exit_2(app_dir, run_in_process, case, args, env):
    code, _, stderr = run_in_process(*args, "--app", str(app_dir), env=env) if args != ["secrets"] \
        else run_in_process(*args)
    assert code == 2, stderr
    assert stderr.strip()


FAILURE_CASES = [
    ("undeclared_name", ["secrets", "set", "OPENAI_API_KEY", "--stdin", "--vault", "memory"], "sk-x",
     "is not declared"),
    ("empty_value", ["secrets", "set", "ALPHA_KEY", "--stdin", "--vault", "memory"], "  \n", "is empty"),
    ("line_break_in_value", ["secrets", "set", "ALPHA_KEY", "--stdin", "--vault", "memory"],
     f"{SECRET_VALUE}\ninjected", "control character"),
]


@pytest.mark.parametrize(("case", "args", "stdin", "message"), FAILURE_CASES, ids=[case[0] for case in FAILURE_CASES])
def test_failures_exit_1(app_dir, run_in_process, case, args, stdin, message):
    code, stdout, stderr = run_in_process(*args, "--app", str(app_dir), stdin=stdin)
    assert code == 1, stderr
    assert message in stderr
    assert "Fix:" in stderr
    for start in range(len(SECRET_VALUE) - LEAK_WINDOW_CHARS + 1):
        assert SECRET_VALUE[start:start + LEAK_WINDOW_CHARS] not in stdout + stderr


def test_manifest_not_found_exit_1(keyside, tmp_path):
    result = keyside.run("secrets", "list", "--app", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "No app manifest found" in result.stderr


SYSTEM_FAILURE_CASES = [
    ("null_backend", {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}, "not safe for secrets"),
    ("no_session_bus", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/keyside-bus"}, "No OS vault was found"),
    ("forced_backend_no_bus", {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/keyside-bus",
                               "PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring"}, "cannot start"),
]


@pytest.mark.parametrize(("case", "env", "message"), SYSTEM_FAILURE_CASES,
                         ids=[case[0] for case in SYSTEM_FAILURE_CASES])
def test_system_vault_unusable_exit_1(app_dir, keyside, case, env, message):
    result = keyside.run("secrets", "set", "ALPHA_KEY", "--stdin", "--app", str(app_dir), stdin=SECRET_VALUE,
                         env=env)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "--vault file" in result.stderr
    keyside.assert_no_leak()


def test_passphrase_environment_removed(monkeypatch, tmp_path):
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    assert read_passphrase(None, tmp_path / "v.enc", creating=False) == PASSPHRASE
    assert PASSPHRASE_ENV not in os.environ


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_passphrase_environment_never_inherited(app_dir, tmp_path, monkeypatch, kind):
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    args = argparse.Namespace(app=str(app_dir), vault=kind, vault_file=tmp_path / "v.enc", passphrase_fd=None)
    if kind == "memory":
        args.vault_file = None
    vault = open_vault_from_args(args, load_manifest(app_dir))
    assert vault.kind == kind
    assert PASSPHRASE_ENV not in os.environ


@pytest.mark.parametrize(("case", "written", "expected"), [
    ("newline", b"pass phrase\n", "pass phrase"),
    ("crlf", b"pass phrase\r\n", "pass phrase"),
    ("no_newline", b"pass phrase", "pass phrase"),
    ("second_line_ignored", b"first\nsecond\n", "first"),
    ("inner_spaces_kept", b"  spaced  \n", "  spaced  "),
])
def test_passphrase_fd_first_line(case, written, expected):
    read_end, write_end = os.pipe()
    os.write(write_end, written)
    os.close(write_end)
    assert read_line_from_fd(read_end) == expected


def test_passphrase_fd_too_long():
    read_end, write_end = os.pipe()
    os.write(write_end, b"x" * (MAX_PASSPHRASE_BYTES + 10))
    os.close(write_end)
    with pytest.raises(UsageError):
        read_line_from_fd(read_end)


class Terminal:
    """`keyside` on a pseudo-terminal, as a user at a keyboard runs it: getpass prompts on /dev/tty."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        full_env = os.environ.copy()
        full_env.pop(PASSPHRASE_ENV, None)
        full_env.update(env or {})
        self.transcript = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its controlling terminal is the pseudo-terminal
            try:
                os.execve(sys.executable, [sys.executable, "-m", "keyside", *args], full_env)  # noqa: S606
            finally:
                os._exit(127)  # never return into the test runner from the forked child

    def expect(self, text: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while text.encode() not in self.transcript:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {text!r}; transcript: {self.transcript!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                self.transcript += self._read()

    def type_line(self, text: str) -> None:
        os.write(self.fd, text.encode() + b"\n")

    def wait(self, timeout_s: float = 30) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = self._read() if ready else b""
            if not chunk:
                break
            self.transcript += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def _read(self) -> bytes:
        try:
            return os.read(self.fd, 4096)
        except OSError:  # EIO once the child has closed the terminal
            return b""


def test_hidden_prompt_stores_value(app_dir, vault_file):
    terminal = Terminal("secrets", "set", "BETA_KEY", "--app", str(app_dir), "--vault", "file",
                        "--vault-file", str(vault_file), env={PASSPHRASE_ENV: PASSPHRASE})
    terminal.expect("Value for BETA_KEY (input hidden): ")
    terminal.type_line(f"  {SECRET_VALUE}  ")
    assert terminal.wait() == 0
    assert b"Stored BETA_KEY" in terminal.transcript
    assert SECRET_VALUE[:LEAK_WINDOW_CHARS].encode() not in terminal.transcript
    stored = Vault(load_manifest(app_dir), FileStore(vault_file, PASSPHRASE)).get("BETA_KEY")
    assert stored == SECRET_VALUE


@pytest.mark.parametrize(("case", "repeated", "exit_code"), [
    ("matching", PASSPHRASE, 0),
    ("mismatch", "a different passphrase", 1),
])
def test_new_file_vault_passphrase_prompts(app_dir, tmp_path, case, repeated, exit_code):
    vault_path = tmp_path / "new.enc"
    terminal = Terminal("secrets", "set", "ALPHA_KEY", "--app", str(app_dir), "--vault", "file",
                        "--vault-file", str(vault_path))
    terminal.expect("New passphrase for the file vault")
    terminal.type_line(PASSPHRASE)
    terminal.expect("Repeat the passphrase: ")
    terminal.type_line(repeated)
    if exit_code == 0:
        terminal.expect("Value for ALPHA_KEY (input hidden): ")
        terminal.type_line(SECRET_VALUE)
    assert terminal.wait() == exit_code
    assert PASSPHRASE.encode() not in terminal.transcript
    assert vault_path.exists() is (exit_code == 0)
    if exit_code == 1:
        assert b"passphrases differ" in terminal.transcript


def test_hidden_prompt_end_of_input(app_dir, vault_file):
    before = vault_file.read_bytes()
    terminal = Terminal("secrets", "set", "BETA_KEY", "--app", str(app_dir), "--vault", "file",
                        "--vault-file", str(vault_file), env={PASSPHRASE_ENV: PASSPHRASE})
    terminal.expect("Value for BETA_KEY (input hidden): ")
    os.write(terminal.fd, b"\x04")  # Ctrl-D on an empty line ends the input
    assert terminal.wait() == 1
    assert b"Traceback" not in terminal.transcript
    assert b"Input ended before a value for BETA_KEY was entered, so nothing was stored." in terminal.transcript
    assert vault_file.read_bytes() == before
