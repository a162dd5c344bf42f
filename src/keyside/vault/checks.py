"""`keyside doctor` checks for the vault: the backend in use, and which declared secrets are missing
or withheld because they were saved for other upstream origins."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from keyside.cli.common import PASSPHRASE_ENV, read_line_from_fd, vault_file_path, vault_kind
from keyside.cli.doctor import FAIL, OK, WARN, Check
from keyside.errors import KeysideError
from keyside.manifest import Manifest
from keyside.vault import open_vault
from keyside.vault.binding import describe_mismatch
from keyside.vault.file_store import read_header
from keyside.vault.keyring_store import backend_label, check_backend, current_backend


def checks(args: argparse.Namespace) -> list[Check]:
    """Return the vault checks for the kind chosen by --vault (or $KEYSIDE_VAULT)."""
    try:
        kind = vault_kind(args)
    except KeysideError as error:
        return [Check("vault", FAIL, error.message, error.fix)]
    manifest: Manifest | None = getattr(args, "manifest", None)

    if kind == "system":
        results = [_keyring_backend_check()]
        if results[0].status == FAIL:
            return results
        passphrase = None
    elif kind == "file":
        results, passphrase = _file_checks(args, manifest)
        if passphrase is None:
            return results
    else:
        results, passphrase = [Check("vault backend", WARN, "memory: secrets last for one process only",
                                     "Use --vault system (the OS keyring) or --vault file to keep secrets.")], None
    if manifest is None:
        return results
    return results + _secret_checks(args, manifest, kind, passphrase)


def _keyring_backend_check() -> Check:
    try:
        backend = current_backend()
        check_backend(backend)
    except KeysideError as error:
        return Check("vault backend", FAIL, f"{error.message} (reason: {error.reason})", error.fix)
    return Check("vault backend", OK, f"system: {backend_label(backend)}")


def _file_checks(args: argparse.Namespace, manifest: Manifest | None) -> tuple[list[Check], str | None]:
    """Check the vault file without decrypting it. Return the checks, and the passphrase when one was given."""
    if manifest is None and getattr(args, "vault_file", None) is None:
        return [Check("vault backend", WARN, "file: no app manifest, so the default vault file is unknown",
                      "Pass --app or --vault-file PATH.")], None
    path = vault_file_path(args, manifest)  # type: ignore[arg-type] - manifest is set when vault_file is not
    results = _file_state_checks(path)
    if any(check.status == FAIL for check in results) or not path.exists():
        return results, None

    try:
        passphrase = _passphrase_without_prompt(args)
    except KeysideError as error:
        return results + [Check("vault passphrase", FAIL, error.message, error.fix)], None
    if passphrase is None:
        results.append(Check("vault passphrase", WARN, "not given, so the secrets in the file were not checked",
                             f"Pass --passphrase-fd N or set {PASSPHRASE_ENV} to check them."))
    return results, passphrase


def _file_state_checks(path: Path) -> list[Check]:
    if not path.exists():
        return [Check("vault backend", WARN, f"file: {path} does not exist yet",
                      "`keyside secrets set NAME --vault file` creates it.")]
    try:
        header = read_header(path)
        mode = stat.S_IMODE(path.stat().st_mode)
    except KeysideError as error:
        return [Check("vault backend", FAIL, error.message, error.fix)]
    except OSError as error:
        return [Check("vault backend", FAIL, f"cannot read {path}: {error.strerror}",
                      "Check the file's owner and permissions.")]
    results = [Check("vault backend", OK, f"file: {path} (format version {header['version']}, "
                                          f"scrypt n={header['n']})")]
    if sys.platform != "win32" and mode & 0o077:
        results.append(Check("vault file permissions", WARN, f"{path} has mode {mode:o}; other users may read it",
                             f"Run `chmod 600 {path}`."))
    return results


def _passphrase_without_prompt(args: argparse.Namespace) -> str | None:
    # The doctor never prompts: it may run from scripts, and a prompt would hide the report.
    passphrase_fd = getattr(args, "passphrase_fd", None)
    if passphrase_fd is not None:
        return read_line_from_fd(passphrase_fd)
    return os.environ.pop(PASSPHRASE_ENV, None) or None


def _secret_checks(args: argparse.Namespace, manifest: Manifest, kind: str, passphrase: str | None) -> list[Check]:
    try:
        vault = open_vault(manifest, kind, file_path=vault_file_path(args, manifest), passphrase=passphrase)
        vault.load()
    except KeysideError as error:
        return [Check("vault", FAIL, f"{error.message} (reason: {error.reason})", error.fix)]

    configured = vault.names()
    results = [Check("vault", OK, f"{vault.backend_name}: {len(configured)} of {len(manifest.secrets)} "
                                  "declared secret(s) set")]
    app_option = f" --app {manifest.path.parent}" if getattr(args, "app", None) else ""
    vault_option = "" if kind == "system" else f" --vault {kind}"
    if kind == "file" and getattr(args, "vault_file", None) is not None:
        vault_option += f" --vault-file {vault_file_path(args, manifest)}"
    problems = vault.binding_problems()
    for name, spec in sorted(manifest.secrets.items()):
        if name in configured:
            results.append(Check(f"secret {name}", OK, "set"))
        elif name in problems:
            recorded, current = problems[name]
            results.append(Check(f"secret {name}", FAIL, f"withheld: {describe_mismatch(recorded, current)}",
                                 f"Run `keyside secrets set {name}{app_option}{vault_option}` to store a key for "
                                 f"the new upstream, or `keyside secrets bind {name}{app_option}{vault_option}` "
                                 "to send the stored key there."))
        else:
            results.append(Check(f"secret {name}", WARN, f"not set: {spec.description}",
                                 f"Run `keyside secrets set {name}{app_option}{vault_option}`."))
    return results
