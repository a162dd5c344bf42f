"""`keyside secrets set|list|bind|delete`: manage an app's API keys in its vault.

No command prints any part of a secret value. `set` reads the value from a hidden prompt or
stdin. `list` prints each name, whether it is configured and its description, then the backend
in use and any key withheld because it was saved for other upstream origins. `bind` moves such
a key to the origins of the current manifest after the user confirms.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from keyside.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
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
from keyside.vault.binding import Origins, describe_mismatch, describe_origins
from keyside.vault.core import unknown_secret_error
from keyside.vault.errors import SECRET_NOT_STORED, VaultError

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

    bind_parser = actions.add_parser(
        "bind", help="let the stored key be sent to the upstream origins this manifest names",
        description="Bind the stored value of a secret to the upstream origins of the services that use it in "
                    "this manifest. A key saved for other origins is withheld until it is bound or set again.")
    bind_parser.add_argument("name", metavar="NAME", help="secret name declared under [secrets.NAME]")
    bind_parser.add_argument("--yes", action="store_true", help="bind without asking for confirmation")
    _add_common(bind_parser)
    bind_parser.set_defaults(handler=run_bind)

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
    try:
        return prompt_hidden(f"Value for {args.name} (input hidden): ")
    except EOFError:
        # Ctrl-D at the prompt ends the input without a line.
        raise KeysideError(f"Input ended before a value for {args.name} was entered, so nothing was stored.",
                           reason="no_value",
                           fix=f"Run `keyside secrets set {args.name}` again and paste the key.") from None


def run_list(args: argparse.Namespace) -> int:
    manifest, vault = _open(args)
    problems = vault.binding_problems()
    rows = [_list_row(vault, name, spec.description, problems.get(name))
            for name, spec in sorted(manifest.secrets.items())]
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
        print(f"{row['name']:<{width}}  {_configured_label(row):<10}  {row['description']}")
    for name, (recorded, current) in sorted(problems.items()):
        print()
        print(f"{name} is withheld: it is {describe_mismatch(recorded, current)}.")
        print(f"  To store a key for the new upstream, run `keyside secrets set {name}`.")
        print(f"  To send the stored key there, run `keyside secrets bind {name}`.")
    return EXIT_OK


def _list_row(vault: Vault, name: str, description: str, problem: tuple[Origins, Origins] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "configured": vault.is_configured(name), "description": description}
    if problem is not None:
        row["binding"] = "mismatch"
        row["recorded_origins"], row["current_origins"] = list(problem[0]), list(problem[1])
    return row


def _configured_label(row: dict[str, Any]) -> str:
    if row.get("binding") == "mismatch":
        return "withheld"
    if row["configured"]:
        return "yes"
    return "no"


def run_bind(args: argparse.Namespace) -> int:
    _, vault = _open(args)
    recorded = vault.recorded_origins(args.name)
    if recorded is None:
        raise VaultError(f"{args.name} is not stored in {vault.backend_name}, so there is nothing to bind.",
                         reason=SECRET_NOT_STORED, fix=f"Store a key with `keyside secrets set {args.name}`.")
    current = vault.current_origins(args.name)
    print(f"{args.name} is bound to: {describe_origins(recorded)}")
    print(f"This app would send it to: {describe_origins(current)}")
    if recorded == current:
        print(f"{args.name} is already bound to these origins; nothing changed.")
        return EXIT_OK
    if not args.yes:
        if not has_terminal():
            raise UsageError("There is no terminal to confirm the new binding.",
                             fix=f"Check the origins above, then run `keyside secrets bind {args.name} --yes`.")
        try:
            answer = input(f"Send the stored {args.name} to {describe_origins(current)} from now on? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing changed.")
            return EXIT_FAILURE
    vault.bind(args.name)
    print(f"Bound {args.name} to {describe_origins(current)} in {vault.backend_name}.")
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    _, vault = _open(args)
    if vault.delete(args.name):
        print(f"Deleted {args.name} from {vault.backend_name}.")
    else:
        print(f"{args.name} was not stored in {vault.backend_name}; nothing to delete.")
    return EXIT_OK
