"""Options and helpers shared by subcommands: which app (`--app`) and which vault (`--vault`)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keyside.errors import KeysideError
from keyside.manifest import Manifest, load_manifest
from keyside.vault import DEFAULT_VAULT_KIND, VAULT_KINDS, Vault, default_file_path, open_store, open_vault
from keyside.vault.errors import PASSPHRASE_REQUIRED, VAULT_UNAVAILABLE, WEAK_PASSPHRASE, WRONG_PASSPHRASE, VaultError
from keyside.vault.file_store import MIN_PASSPHRASE_CHARS
from keyside.vault.store import Change, Entries

# Environment variables for automation. The passphrase variable is removed from this process's
# environment once read, so child processes such as the sidecar never inherit it.
PASSPHRASE_ENV = "KEYSIDE_VAULT_PASSPHRASE"  # noqa: S105 - a variable name, not a password
VAULT_KIND_ENV = "KEYSIDE_VAULT"
# Longer than any passphrase a person types, and stops a wrong --passphrase-fd from reading a whole file.
MAX_PASSPHRASE_BYTES = 4096
# Prompts for a new passphrase before a too-short one fails the command.
NEW_PASSPHRASE_ATTEMPTS = 3
# Commands that only read the vault. On a missing vault file they see an empty vault and never
# create the file, its lock file or its folder: (command, secrets action). `keyside run` counts
# only with --headless, because its pages can store keys and so create the file.
READ_ONLY_COMMANDS = frozenset({("secrets", "list"), ("run", None), ("exec", None), ("doctor", None)})


class UsageError(KeysideError):
    """Options that do not fit together, or a bad argument. The CLI exits with status 2."""

    reason = "usage"


class PassphraseMismatch(KeysideError):
    reason = "passphrase_mismatch"


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --app PATH_OR_ID."""
    parser.add_argument("--app", metavar="PATH_OR_ID",
                        help="app folder, its keyside.toml, or a bundled app id "
                             "(default: ./keyside.toml if present, else the bundled monitor app)")


def add_vault_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --vault, --vault-file and --passphrase-fd."""
    parser.add_argument("--vault", choices=VAULT_KINDS, default=None,
                        help=f"where secrets are kept: the OS keyring (system), an encrypted file (file), or this "
                             f"process only (memory); default: ${VAULT_KIND_ENV} or {DEFAULT_VAULT_KIND}")
    parser.add_argument("--vault-file", metavar="PATH", type=Path,
                        help="encrypted vault file for --vault file (default: the app's data folder/vault.enc)")
    parser.add_argument("--passphrase-fd", metavar="N", type=int,
                        help=f"read the file vault passphrase from file descriptor N (first line) instead of "
                             f"${PASSPHRASE_ENV} or a prompt")


def load_app(args: argparse.Namespace) -> Manifest:
    """Load and validate the manifest named by --app."""
    return load_manifest(getattr(args, "app", None))


def vault_kind(args: argparse.Namespace) -> str:
    """Return the vault kind from --vault, else $KEYSIDE_VAULT, else `system`."""
    kind = getattr(args, "vault", None) or os.environ.get(VAULT_KIND_ENV) or DEFAULT_VAULT_KIND
    if kind not in VAULT_KINDS:
        raise UsageError(f"{VAULT_KIND_ENV}={kind!r} is not a vault kind.",
                         fix=f"Set it to one of: {', '.join(VAULT_KINDS)}.")
    return kind


def vault_file_path(args: argparse.Namespace, manifest: Manifest) -> Path:
    """Return the file vault path from --vault-file, else the app's default."""
    path = getattr(args, "vault_file", None)
    return Path(path).expanduser() if path is not None else default_file_path(manifest.app_id)


def open_vault_from_args(args: argparse.Namespace, manifest: Manifest, *, read_only: bool | None = None) -> Vault:
    """Open the vault selected by --vault for `manifest`, reading the passphrase for a file vault.

    The passphrase comes from --passphrase-fd, else $KEYSIDE_VAULT_PASSPHRASE, else a hidden
    prompt on the terminal (asked twice when the file does not exist yet). With `read_only`
    (default: True for the commands in READ_ONLY_COMMANDS), a missing vault file is not created:
    the vault is empty, no passphrase is needed or prompted for, and a note naming the path goes
    to stderr.
    """
    kind = vault_kind(args)
    passphrase_fd = getattr(args, "passphrase_fd", None)
    if kind != "file":
        # Drop a passphrase exported for another run, so `keyside exec` children and the sidecar
        # never inherit it.
        os.environ.pop(PASSPHRASE_ENV, None)
        if getattr(args, "vault_file", None) is not None:
            raise UsageError("--vault-file applies only to the file vault.",
                             fix="Add --vault file, or drop --vault-file.")
        if passphrase_fd is not None:
            raise UsageError("--passphrase-fd applies only to the file vault.",
                             fix="Add --vault file, or drop --passphrase-fd.")
        return open_vault(manifest, kind)

    path = vault_file_path(args, manifest)
    if read_only is None:
        read_only = is_read_only_command(args)
    if read_only and not path.exists():
        os.environ.pop(PASSPHRASE_ENV, None)
        if passphrase_fd is not None:
            # Read and drop it, so a bad descriptor is a usage error whether or not the file exists.
            read_line_from_fd(passphrase_fd)
        print(f"keyside: note: no vault file at {path} yet; `keyside secrets set` creates it.", file=sys.stderr)
        return Vault(manifest, MissingFileStore(path))

    if passphrase_fd is not None:
        source, fix = (f"--passphrase-fd {passphrase_fd}",
                       f"Write the passphrase the vault was created with on descriptor {passphrase_fd}.")
    elif os.environ.get(PASSPHRASE_ENV):
        source, fix = (f"${PASSPHRASE_ENV}", f"Set {PASSPHRASE_ENV} to the passphrase the vault was created with, "
                                             "or unset it to be prompted.")
    else:
        source = fix = None
    passphrase = read_passphrase(passphrase_fd, path, creating=not path.exists())
    store = open_store(manifest, "file", file_path=path, passphrase=passphrase)
    if source is None or fix is None:
        return Vault(manifest, store)
    return Vault(manifest, PassphraseSourceStore(store, source, fix))


def is_read_only_command(args: argparse.Namespace) -> bool:
    """Return True when the parsed command only reads the vault (see READ_ONLY_COMMANDS)."""
    command = (getattr(args, "command", None), getattr(args, "secrets_action", None))
    if command == ("run", None) and not getattr(args, "headless", False):
        return False
    return command in READ_ONLY_COMMANDS


def read_passphrase(passphrase_fd: int | None, path: Path, *, creating: bool) -> str:
    """Read the file vault passphrase from `passphrase_fd`, the environment, or a terminal prompt.

    When `creating`, a passphrase shorter than MIN_PASSPHRASE_CHARS is rejected here, before
    the command prompts for anything else. Without a descriptor, the variable or a terminal this
    raises UsageError, so the CLI exits with status 2.
    """
    if passphrase_fd is not None:
        passphrase = read_line_from_fd(passphrase_fd)
        if not passphrase:
            raise VaultError(f"--passphrase-fd {passphrase_fd} was empty, so there is no passphrase for the file "
                             f"vault {path}.", reason=PASSPHRASE_REQUIRED,
                             fix=f"Write the passphrase on the first line, for example "
                                 f"`{passphrase_fd}<passphrase-file` with the passphrase in passphrase-file.")
        if creating:
            _require_new_passphrase_length(passphrase, f"--passphrase-fd {passphrase_fd}")
        return passphrase
    from_env = os.environ.pop(PASSPHRASE_ENV, None)
    if from_env:
        if creating:
            _require_new_passphrase_length(from_env, f"${PASSPHRASE_ENV}")
        return from_env
    if not has_terminal():
        raise UsageError(f"The file vault {path} needs a passphrase and there is no terminal to ask for it.",
                         fix=f"Pass it with --passphrase-fd N or set {PASSPHRASE_ENV}.")
    if not creating:
        return getpass.getpass(f"Passphrase for the file vault {path}: ")
    passphrase = _prompt_new_passphrase(path)
    if getpass.getpass("Repeat the passphrase: ") != passphrase:
        raise PassphraseMismatch("The two passphrases differ, so nothing was written.", fix="Run the command again.")
    return passphrase


def _prompt_new_passphrase(path: Path) -> str:
    for _ in range(NEW_PASSPHRASE_ATTEMPTS):
        passphrase = getpass.getpass(f"New passphrase for the file vault {path}: ")
        if _passphrase_chars(passphrase) >= MIN_PASSPHRASE_CHARS:
            return passphrase
        print(f"The passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; choose a longer one.",
              file=sys.stderr)
    raise VaultError(f"No passphrase of at least {MIN_PASSPHRASE_CHARS} characters was entered in "
                     f"{NEW_PASSPHRASE_ATTEMPTS} attempts, so the file vault {path} was not created.",
                     reason=WEAK_PASSPHRASE, fix="Run the command again; a few random words work well.")


def _require_new_passphrase_length(passphrase: str, source: str) -> None:
    if _passphrase_chars(passphrase) < MIN_PASSPHRASE_CHARS:
        raise VaultError(f"The passphrase from {source} is shorter than the {MIN_PASSPHRASE_CHARS} characters a new "
                         "file vault needs.", reason=WEAK_PASSPHRASE,
                         fix="Choose a longer passphrase; a few random words work well.")


def _passphrase_chars(passphrase: str) -> int:
    # Counted the way the file store counts: after NFC normalization.
    return len(unicodedata.normalize("NFC", passphrase))


class MissingFileStore:
    """An empty, read-only stand-in for a vault file that does not exist yet.

    Reading touches nothing on disk, so a mistyped --vault-file leaves no file, lock file or folder.
    """

    kind = "file"

    def __init__(self, path: Path):
        self.path = Path(path).expanduser().absolute()
        self.backend_name = f"file ({self.path}, not created yet)"

    def load(self) -> Entries:
        return {}

    def update(self, change: Change) -> Entries:
        raise VaultError(f"There is no vault file at {self.path}, and this command only reads the vault.",
                         reason=VAULT_UNAVAILABLE,
                         fix=f"Create it with `keyside secrets set NAME --vault file --vault-file {self.path}`, "
                             "then run this command again.")


class PassphraseSourceStore:
    """A file store whose wrong-passphrase error names where the passphrase came from."""

    kind = "file"

    def __init__(self, store: Any, source: str, fix: str):
        self._store = store
        self._source = source
        self._fix = fix
        self.path = store.path
        self.backend_name = store.backend_name

    def load(self) -> Entries:
        with self._naming_source():
            return self._store.load()

    def update(self, change: Change) -> Entries:
        with self._naming_source():
            return self._store.update(change)

    @contextlib.contextmanager
    def _naming_source(self) -> Iterator[None]:
        try:
            yield
        except VaultError as error:
            if error.reason != WRONG_PASSPHRASE:
                raise
            raise VaultError(f"{error.message} The passphrase came from {self._source}.", reason=WRONG_PASSPHRASE,
                             fix=f"{self._fix} The file was not changed.") from None


def read_line_from_fd(fd: int) -> str:
    """Read the first line from file descriptor `fd`, without its line ending.

    The descriptor is closed afterwards unless it is stdin, stdout or stderr.
    """
    if fd < 0:
        raise UsageError(f"--passphrase-fd {fd} is not a file descriptor.", fix="Pass a number such as 3.")
    try:
        with os.fdopen(fd, "rb", buffering=0, closefd=fd > 2) as handle:
            line = handle.readline(MAX_PASSPHRASE_BYTES + 1)
    except OSError as error:
        raise UsageError(f"Cannot read --passphrase-fd {fd}: {error.strerror}.",
                         fix=f"Open descriptor {fd} for reading, for example `{fd}<passphrase-file`.") from None
    if len(line) > MAX_PASSPHRASE_BYTES:
        raise UsageError(f"The first line of --passphrase-fd {fd} is longer than {MAX_PASSPHRASE_BYTES} bytes.",
                         fix="Put only the passphrase on the first line.")
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UsageError(f"The passphrase read from --passphrase-fd {fd} is not UTF-8 text.",
                         fix="Write the passphrase as UTF-8.") from None


def has_terminal() -> bool:
    """Return True when a hidden prompt can be shown (a controlling terminal exists)."""
    if sys.platform == "win32":
        return sys.stdin is not None and sys.stdin.isatty()
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def prompt_hidden(prompt: str) -> str:
    """Ask for a value on the terminal without echoing it."""
    return getpass.getpass(prompt)
