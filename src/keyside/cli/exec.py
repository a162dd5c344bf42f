"""`keyside exec`: run a command with a sidecar URL and a scoped token in place of API keys."""

from __future__ import annotations

import argparse
import sys

from keyside.cli.common import UsageError, add_app_arguments, add_vault_arguments, load_app, open_vault_from_args
from keyside.exec import ExecError, run_exec

EXIT_FAILURE = 1
EXIT_USAGE = 2

DESCRIPTION = """\
Run COMMAND with the app's sidecar in place of its API keys. The command gets KEYSIDE_URL (the
sidecar's base URL), KEYSIDE_TOKEN (a token that works only for the selected services and only
while the command runs) and KEYSIDE_URL_<SERVICE> for each service (the service name upper-cased,
'-' as '_'). Keys stay in the vault: an OpenAI-compatible client uses
base_url=$KEYSIDE_URL_OPENAI/v1 and api_key=$KEYSIDE_TOKEN. Inherited variables whose value
contains a stored secret are not passed on.
"""

EPILOG = """\
Exit status: the command's own exit status, 128+N when a signal N killed it (after a Ctrl-C or
Ctrl-\\ from the terminal, keyside exec ends with that signal itself), 126 or 127 when it
cannot be started, 1 when a service or its secret is missing or keyside cannot start, 2 for a
usage error. SIGTERM, SIGUSR1 and SIGUSR2 sent to keyside exec are relayed to the command;
SIGINT, SIGQUIT and SIGHUP are relayed unless keyside exec runs in the foreground of a
terminal, which sends them to the command itself.

example:
  keyside exec --app ./my-app --service openai -- python agent.py
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "exec",
        help="run a command with a sidecar URL and a scoped token in place of API keys",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [--app PATH_OR_ID] [--vault KIND] [--service NAME ...] -- COMMAND [ARGS...]",
    )
    add_app_arguments(parser)
    add_vault_arguments(parser)
    parser.add_argument("--service", action="append", dest="services", metavar="NAME",
                        help="a service the command may use; repeat it or separate names with commas "
                             "(default: every service whose secret is stored, and every keyless service)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]",
                        help="the program to run and its arguments, after `--`")
    parser.set_defaults(handler=run)


def _service_names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",")]
    if not all(names):
        raise UsageError(f"--service {','.join(values)!r} contains an empty name.",
                         fix="Write --service openai or --service openai,anthropic.")
    return names


def run(args: argparse.Namespace) -> int:
    command = list(args.command)
    # argparse keeps the `--` that separates keyside's options from the command.
    if command and command[0] == "--":
        command = command[1:]
    try:
        if not command:
            raise UsageError("No command given.", fix="Put the command after `--`: keyside exec -- python script.py")
        services = _service_names(args.services)
        manifest = load_app(args)
        vault = open_vault_from_args(args, manifest, read_only=True)
        return run_exec(manifest, vault, command, services=services)
    except UsageError as error:
        print(f"keyside exec: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ExecError as error:
        print(f"keyside exec: error: {error}", file=sys.stderr)
        return error.exit_code
