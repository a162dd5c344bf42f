"""`keyside secrets set|list|delete`: manage an app's API keys in its vault.

No command prints any part of a secret value: `set` reads it from a hidden prompt or stdin,
`list` prints names, whether each is configured, descriptions and the backend in use.
"""

from __future__ import annotations

import argparse
import json
import sys

from keyside.cli import EXIT_OK, EXIT_USAGE
from keyside.cli.common import (
    UsageError,
    add_app_arguments,
    add_vault_arguments,
    has_terminal,
    load_app,
    open_vault_from_args,
    prompt_hidden,
)
from keyside.errors import KeysideError
from keyside.manifest import Manifest
from keyside.vault import MAX_SECRET_VALUE_CHARS, Vault
from keyside.vault.core import unknown_secret_error
from keyside.vault.errors import VaultError

# Enough for the longest value the vault accepts in any UTF-8 encoding, plus a trailing newline.
MAX_STDIN_BYTES = MAX_SECRET_VALUE_CHARS * 4 + 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "secrets", help="set, list and delete the app's API keys",
        description="Manage the API keys an app may use. Values are write-only: no command prints them.",
    )
    actions = parser.add_subparsers(dest="secrets_action", metavar="ACTION")
    parser.set_defaults(handler=lambda args: _print_help(parser))

    set_parser = actions.add_parser("set", help="store a secret (hidden prompt, or --stdin)",
                                    description="Store the value of a secret declared in the app manifest. "
                                                "Surrounding whitespace is removed.")
    set_parser.add_argument("name", metavar="NAME", help="secret name declared under [secrets.NAME]")
    set_parser.add_argument("--stdin", action="store_true",
                            help="read the value from standard input instead of a hidden prompt (for pipes)")
    _add_common(set_parser)
    set_parser.set_defaults(handler=run_set)

    list_parser = actions.add_parser("list", help="show declared secrets, whether each is set, and the backend",
                                     description="List the secrets the app declares and whether each has a "
                                                 "value. Values are never shown.")
    list_parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _add_common(list_parser)
    list_parser.set_defaults(handler=run_list)

    delete_parser = actions.add_parser("delete", help="remove a secret from the vault")
    delete_parser.add_argument("name", metavar="NAME", help="secret name declared under [secrets.NAME]")
    _add_common(delete_parser)
    delete_parser.set_defaults(handler=run_delete)


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_app_arguments(parser)
    add_vault_arguments(parser)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _open(args: argparse.Namespace) -> tuple[Manifest, Vault]:
    manifest = load_app(args)
    name = getattr(args, "name", None)
    if name is not None and name not in manifest.secrets:
        raise unknown_secret_error(manifest, name)
    vault = open_vault_from_args(args, manifest)
    # Load before asking for a value, so a locked or unusable vault fails before the user types a key.
    vault.load()
    return manifest, vault


def run_set(args: argparse.Namespace) -> int:
    if args.stdin and getattr(args, "passphrase_fd", None) == 0:
        raise UsageError("--stdin and --passphrase-fd 0 both read standard input.",
                         fix="Pass the passphrase on another descriptor, such as --passphrase-fd 3.")
    _, vault = _open(args)
    value = _read_value(args)
    if not value.strip():
        raise KeysideError(f"The value for {args.name} is empty, so nothing was stored.", reason="empty_value",
                           fix=f"To remove {args.name}, run `keyside secrets delete {args.name}`.")
    vault.set(args.name, value)
    print(f"Stored {args.name} in {vault.backend_name}.")
    if vault.kind == "memory":
        print("note: the memory vault keeps it only until this command exits.", file=sys.stderr)
    return EXIT_OK


def _read_value(args: argparse.Namespace) -> str:
    if args.stdin:
        data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        if len(data) > MAX_STDIN_BYTES:
            raise VaultError(f"The value for {args.name} on standard input is longer than {MAX_STDIN_BYTES} bytes.",
                             reason="invalid_secret_value", fix="Pipe only the key.")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise VaultError(f"The value for {args.name} on standard input is not UTF-8 text.",
                             reason="invalid_secret_value", fix="Pipe the key as UTF-8 text.") from None
    if not has_terminal():
        raise UsageError("There is no terminal to prompt for the value.",
                         fix=f"Pipe it in: `printf %s \"$KEY\" | keyside secrets set {args.name} --stdin`.")
    return prompt_hidden(f"Value for {args.name} (input hidden): ")


def run_list(args: argparse.Namespace) -> int:
    manifest, vault = _open(args)
    rows = [
        {"name": name, "configured": vault.is_configured(name), "description": spec.description}
        for name, spec in sorted(manifest.secrets.items())
    ]
    if args.json:
        print(json.dumps({"app": manifest.app_id, "manifest": str(manifest.path), "backend": vault.backend_name,
                          "kind": vault.kind, "secrets": rows}, indent=2))
        return EXIT_OK

    print(f"App: {manifest.name} ({manifest.app_id}), {manifest.path}")
    print(f"Vault: {vault.backend_name}")
    if not rows:
        print("No secrets are declared in the manifest.")
        return EXIT_OK
    width = max(len("NAME"), *(len(row["name"]) for row in rows))
    print()
    print(f"{'NAME':<{width}}  CONFIGURED  DESCRIPTION")
    for row in rows:
        configured = "yes" if row["configured"] else "no"
        print(f"{row['name']:<{width}}  {configured:<10}  {row['description']}")
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    _, vault = _open(args)
    if vault.delete(args.name):
        print(f"Deleted {args.name} from {vault.backend_name}.")
    else:
        print(f"{args.name} was not stored in {vault.backend_name}; nothing to delete.")
    return EXIT_OK
