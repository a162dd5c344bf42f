"""Options and helpers shared by subcommands: which app (`--app`) and which vault (`--vault`)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from keyside.errors import KeysideError
from keyside.manifest import Manifest, load_manifest
from keyside.vault import DEFAULT_VAULT_KIND, VAULT_KINDS, Vault, default_file_path, open_vault
from keyside.vault.errors import PASSPHRASE_REQUIRED, VaultError

# Environment variables for automation. The passphrase variable is removed from this process's
# environment once read, so child processes such as the sidecar never inherit it.
PASSPHRASE_ENV = "KEYSIDE_VAULT_PASSPHRASE"  # noqa: S105 - a variable name, not a password
VAULT_KIND_ENV = "KEYSIDE_VAULT"
# Longer than any passphrase a person types, and stops a wrong --passphrase-fd from reading a whole file.
MAX_PASSPHRASE_BYTES = 4096


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


def open_vault_from_args(args: argparse.Namespace, manifest: Manifest) -> Vault:
    """Open the vault selected by --vault for `manifest`, reading the passphrase for a file vault.

    The passphrase comes from --passphrase-fd, else $KEYSIDE_VAULT_PASSPHRASE, else a hidden
    prompt on the terminal (asked twice when the file does not exist yet).
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
    passphrase = read_passphrase(passphrase_fd, path, creating=not path.exists())
    return open_vault(manifest, "file", file_path=path, passphrase=passphrase)


def read_passphrase(passphrase_fd: int | None, path: Path, *, creating: bool) -> str:
    """Read the file vault passphrase from `passphrase_fd`, the environment, or a terminal prompt."""
    if passphrase_fd is not None:
        return read_line_from_fd(passphrase_fd)
    from_env = os.environ.pop(PASSPHRASE_ENV, None)
    if from_env:
        return from_env
    if not has_terminal():
        raise VaultError(f"The file vault {path} needs a passphrase and there is no terminal to ask for it.",
                         reason=PASSPHRASE_REQUIRED,
                         fix=f"Pass it with --passphrase-fd N or set {PASSPHRASE_ENV}.")
    if not creating:
        return getpass.getpass(f"Passphrase for the file vault {path}: ")
    passphrase = getpass.getpass(f"New passphrase for the file vault {path}: ")
    if getpass.getpass("Repeat the passphrase: ") != passphrase:
        raise PassphraseMismatch("The two passphrases differ, so nothing was written.", fix="Run the command again.")
    return passphrase


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
