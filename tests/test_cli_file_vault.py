"""The file vault as the CLI opens it: passphrase prompts, read-only commands on a missing file,
messages that name where a passphrase came from, and exit statuses.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import test_cli_secrets
from keyside.cli import build_parser, main
from keyside.cli.common import PASSPHRASE_ENV, MissingFileStore, is_read_only_command, open_vault_from_args
from keyside.manifest import load_manifest
from keyside.vault import FileStore, Vault
from keyside.vault.errors import VaultError
from keyside.vault.file_store import MIN_PASSPHRASE_CHARS, MIN_SCRYPT_N
from test_cli_secrets import PASSPHRASE, SECRET_VALUE, Outputs, Terminal, passphrase_pipe

# Fixtures shared with test_cli_secrets.
app_dir = test_cli_secrets.app_dir
keyside = test_cli_secrets.keyside

SHORT_PASSPHRASE = "short"
MISSING_NOTE = "no vault file at"


@pytest.fixture
def vault_file(app_dir: Path, tmp_path: Path) -> Path:
    """A file vault made in-process at the lowest scrypt cost, holding ALPHA_KEY."""
    path = tmp_path / "vault.enc"
    Vault(load_manifest(app_dir), FileStore(path, PASSPHRASE, scrypt_n=MIN_SCRYPT_N)).set("ALPHA_KEY", SECRET_VALUE)
    return path


@pytest.fixture
def missing_file(tmp_path: Path) -> Path:
    """A vault path whose folder does not exist either, as a mistyped --vault-file gives."""
    return tmp_path / "typo-folder" / "vault.enc"


def expect_count(terminal: Terminal, text: str, count: int, timeout_s: float = 30) -> None:
    """Wait until `text` appears `count` times in the terminal's transcript."""
    deadline = time.monotonic() + timeout_s
    while terminal.transcript.count(text.encode()) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {text!r} x{count}; transcript: {terminal.transcript!r}"
        ready, _, _ = select.select([terminal.fd], [], [], remaining)
        if ready:
            terminal.transcript += terminal._read()


def assert_nothing_created(path: Path) -> None:
    assert not path.exists()
    assert not path.with_name(path.name + ".lock").exists()
    assert not path.parent.exists()


# ---- new passphrase length ------------------------------------------------------------------

def test_short_new_passphrase_asked_again(app_dir, tmp_path):
    vault_path = tmp_path / "new.enc"
    terminal = Terminal("secrets", "set", "ALPHA_KEY", "--app", str(app_dir), "--vault", "file",
                        "--vault-file", str(vault_path))
    terminal.expect("New passphrase for the file vault")
    terminal.type_line(SHORT_PASSPHRASE)
    terminal.expect(f"shorter than {MIN_PASSPHRASE_CHARS} characters")
    expect_count(terminal, "New passphrase for the file vault", 2)
    assert b"Repeat the passphrase" not in terminal.transcript
    assert b"Value for ALPHA_KEY" not in terminal.transcript

    terminal.type_line(PASSPHRASE)
    terminal.expect("Repeat the passphrase: ")
    terminal.type_line(PASSPHRASE)
    terminal.expect("Value for ALPHA_KEY (input hidden): ")
    terminal.type_line(SECRET_VALUE)
    assert terminal.wait() == 0
    assert Vault(load_manifest(app_dir), FileStore(vault_path, PASSPHRASE)).get("ALPHA_KEY") == SECRET_VALUE


def test_short_new_passphrase_attempts_exhausted(app_dir, tmp_path):
    vault_path = tmp_path / "new.enc"
    terminal = Terminal("secrets", "set", "ALPHA_KEY", "--app", str(app_dir), "--vault", "file",
                        "--vault-file", str(vault_path))
    for attempt in range(1, 4):
        expect_count(terminal, "New passphrase for the file vault", attempt)
        terminal.type_line(SHORT_PASSPHRASE)
    assert terminal.wait() == 1
    assert b"was not created" in terminal.transcript
    assert b"Value for ALPHA_KEY" not in terminal.transcript
    assert not vault_path.exists()
    assert not vault_path.with_name(vault_path.name + ".lock").exists()


def test_short_passphrase_from_environment_rejected_first(app_dir, tmp_path):
    vault_path = tmp_path / "new.enc"
    terminal = Terminal("secrets", "set", "ALPHA_KEY", "--app", str(app_dir), "--vault", "file",
                        "--vault-file", str(vault_path), env={PASSPHRASE_ENV: SHORT_PASSPHRASE})
    assert terminal.wait() == 1
    assert f"The passphrase from ${PASSPHRASE_ENV} is shorter".encode() in terminal.transcript
    assert b"Value for ALPHA_KEY" not in terminal.transcript
    assert not vault_path.exists()


def test_short_passphrase_from_fd_rejected(app_dir, keyside, tmp_path):
    vault_path = tmp_path / "new.enc"
    fd = passphrase_pipe(SHORT_PASSPHRASE)
    try:
        result = keyside.run("secrets", "set", "ALPHA_KEY", "--stdin", "--app", str(app_dir), "--vault", "file",
                             "--vault-file", str(vault_path), "--passphrase-fd", str(fd), stdin=SECRET_VALUE,
                             pass_fds=(fd,))
    finally:
        os.close(fd)
    assert result.returncode == 1, result.stderr
    assert f"--passphrase-fd {fd} is shorter" in result.stderr
    assert not vault_path.exists()
    keyside.assert_no_leak()


# ---- read-only commands on a missing vault file -------------------------------------------

def test_list_missing_vault_without_passphrase(app_dir, keyside, missing_file):
    result = keyside.run("secrets", "list", "--app", str(app_dir), "--vault", "file", "--vault-file",
                         str(missing_file))
    assert result.returncode == 0, result.stderr
    assert f"{MISSING_NOTE} {missing_file.absolute()} yet" in result.stderr
    assert "`keyside secrets set` creates it" in result.stderr
    assert "ALPHA_KEY" in result.stdout
    assert "yes" not in result.stdout
    assert_nothing_created(missing_file)


def test_list_missing_vault_with_environment(app_dir, keyside, missing_file):
    result = keyside.run("secrets", "list", "--app", str(app_dir), "--vault", "file", "--vault-file",
                         str(missing_file), "--json", env={PASSPHRASE_ENV: PASSPHRASE})
    assert result.returncode == 0, result.stderr
    assert MISSING_NOTE in result.stderr
    assert MISSING_NOTE not in result.stdout
    assert_nothing_created(missing_file)


def test_list_missing_vault_never_prompts(app_dir, missing_file):
    terminal = Terminal("secrets", "list", "--app", str(app_dir), "--vault", "file", "--vault-file",
                        str(missing_file))
    assert terminal.wait() == 0
    assert b"passphrase" not in terminal.transcript.lower()
    assert MISSING_NOTE.encode() in terminal.transcript
    assert_nothing_created(missing_file)


def test_exec_missing_vault_creates_nothing(app_dir, keyside, missing_file):
    result = keyside.run("exec", "--app", str(app_dir), "--vault", "file", "--vault-file", str(missing_file),
                         "--", sys.executable, "-c", "pass")
    assert MISSING_NOTE in result.stderr
    assert "New passphrase" not in result.stderr
    assert "no terminal" not in result.stderr
    assert_nothing_created(missing_file)


def test_run_opens_missing_vault_read_only(app_dir, monkeypatch, missing_file, capsys):
    opened: list[Vault] = []

    def fake_run_headless(manifest, vault):
        opened.append(vault)
        return 0

    monkeypatch.setattr("keyside.host.headless.run_headless", fake_run_headless)
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    code = main(["run", str(app_dir), "--headless", "--vault", "file", "--vault-file", str(missing_file)])
    assert code == 0
    assert MISSING_NOTE in capsys.readouterr().err
    assert opened[0].names() == []
    assert_nothing_created(missing_file)


@pytest.mark.parametrize(("argv", "read_only"), [
    (["run", "--headless"], True),
    (["run"], False),
    (["run", "--browser"], False),
    (["secrets", "list"], True),
    (["secrets", "set", "ALPHA_KEY"], False),
], ids=["run-headless", "run-windows", "run-browser", "secrets-list", "secrets-set"])
def test_read_only_commands(argv, read_only):
    args = build_parser().parse_args(argv)
    assert is_read_only_command(args) is read_only


def test_missing_store_rejects_writes(app_dir, missing_file):
    vault = Vault(load_manifest(app_dir), MissingFileStore(missing_file))
    with pytest.raises(VaultError) as caught:
        vault.set("ALPHA_KEY", SECRET_VALUE)
    assert "keyside secrets set" in caught.value.fix
    assert str(missing_file.absolute()) in caught.value.fix
    assert_nothing_created(missing_file)


def test_write_command_still_creates_vault(app_dir, keyside, tmp_path):
    vault_path = tmp_path / "folder" / "new.enc"
    result = keyside.run("secrets", "set", "ALPHA_KEY", "--stdin", "--app", str(app_dir), "--vault", "file",
                         "--vault-file", str(vault_path), stdin=SECRET_VALUE, env={PASSPHRASE_ENV: PASSPHRASE})
    assert result.returncode == 0, result.stderr
    assert MISSING_NOTE not in result.stderr
    assert vault_path.exists()


def test_namespace_without_command_not_read_only(app_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    args = argparse.Namespace(app=str(app_dir), vault="file", vault_file=tmp_path / "v.enc", passphrase_fd=None)
    vault = open_vault_from_args(args, load_manifest(app_dir))
    assert "not created yet" not in vault.backend_name


# ---- where the passphrase came from ---------------------------------------------------------

def list_with_passphrase_fd(keyside: Outputs, app_dir: Path, vault_file: Path,
                            written: bytes) -> tuple[subprocess.CompletedProcess, int]:
    """Run `keyside secrets list` with `written` on a pipe passed as --passphrase-fd; return the result and fd."""
    read_end, write_end = os.pipe()
    os.write(write_end, written)
    os.close(write_end)
    try:
        result = keyside.run("secrets", "list", "--app", str(app_dir), "--vault", "file", "--vault-file",
                             str(vault_file), "--passphrase-fd", str(read_end), pass_fds=(read_end,))
    finally:
        os.close(read_end)
    return result, read_end


def test_empty_passphrase_fd_names_file(app_dir, keyside, vault_file):
    result, fd = list_with_passphrase_fd(keyside, app_dir, vault_file, b"")
    assert result.returncode == 1, result.stderr
    assert f"--passphrase-fd {fd} was empty" in result.stderr
    assert str(vault_file) in result.stderr


def test_wrong_passphrase_names_environment(app_dir, keyside, vault_file):
    before = vault_file.read_bytes()
    result = keyside.run("secrets", "list", "--app", str(app_dir), "--vault", "file", "--vault-file",
                         str(vault_file), env={PASSPHRASE_ENV: "not the passphrase"})
    assert result.returncode == 1, result.stderr
    assert f"The passphrase came from ${PASSPHRASE_ENV}" in result.stderr
    assert f"Set {PASSPHRASE_ENV} to the passphrase" in result.stderr
    assert "not the passphrase" not in result.stderr
    assert vault_file.read_bytes() == before


def test_wrong_passphrase_names_fd(app_dir, keyside, vault_file):
    result, fd = list_with_passphrase_fd(keyside, app_dir, vault_file, b"not the passphrase\n")
    assert result.returncode == 1, result.stderr
    assert f"The passphrase came from --passphrase-fd {fd}" in result.stderr
    assert "not the passphrase" not in result.stderr


def test_right_passphrase_from_environment_lists(app_dir, keyside, vault_file):
    result = keyside.run("secrets", "list", "--app", str(app_dir), "--vault", "file", "--vault-file",
                         str(vault_file), env={PASSPHRASE_ENV: PASSPHRASE})
    assert result.returncode == 0, result.stderr
    assert "ALPHA_KEY" in result.stdout
    assert "yes" in result.stdout
    keyside.assert_no_leak()


# ---- exit status without a terminal ---------------------------------------------------------

@pytest.mark.parametrize(("case", "args", "stdin"), [
    ("list_existing_vault", ["secrets", "list"], None),
    ("set_new_vault", ["secrets", "set", "ALPHA_KEY", "--stdin"], SECRET_VALUE),
    ("delete_existing_vault", ["secrets", "delete", "ALPHA_KEY"], None),
])
def test_no_terminal_for_passphrase_exits_2(app_dir, keyside, vault_file, tmp_path, case, args, stdin):
    path = tmp_path / "new.enc" if case == "set_new_vault" else vault_file
    result = keyside.run(*args, "--app", str(app_dir), "--vault", "file", "--vault-file", str(path), stdin=stdin)
    assert result.returncode == 2, result.stderr
    assert "no terminal to ask for it" in result.stderr
    assert "--passphrase-fd N" in result.stderr
    assert "Traceback" not in result.stderr
    keyside.assert_no_leak()


def test_no_terminal_from_dev_null_exits_2(app_dir, vault_file):
    env = {key: value for key, value in os.environ.items() if key != PASSPHRASE_ENV}
    with open(os.devnull, "rb") as devnull:
        result = subprocess.run([sys.executable, "-m", "keyside", "secrets", "list", "--app", str(app_dir),
                                 "--vault", "file", "--vault-file", str(vault_file)], stdin=devnull,
                                capture_output=True, text=True, env=env, start_new_session=True, timeout=60)
    assert result.returncode == 2, result.stderr

