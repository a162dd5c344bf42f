"""`keyside run`: open an app in native windows, in a browser, or run only its sidecar."""

from __future__ import annotations

import argparse

from keyside.cli.common import UsageError, add_app_arguments, add_vault_arguments, load_app, open_vault_from_args

DESCRIPTION = """\
Run an app: start its sidecar, serve its pages on 127.0.0.1 and open its main window. APP is an
app folder, its keyside.toml, or a bundled app id (default: ./keyside.toml if present, else the
bundled monitor app). Native windows need a display and the `desktop` extra
(pip install 'keyside[desktop]'); without them the app opens in browser mode, which is also what
--browser selects. In browser mode the first link works once: keyside opens it in the system
browser, or prints it when there is none.
"""

EPILOG = """\
Exit status: 0 after the main window is closed or on Ctrl-C, 1 when the app cannot start, 2 for a
usage error.

examples:
  keyside run                              # the bundled monitor app
  keyside run ./my-app --browser
  keyside run examples/hello --vault memory
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run an app in native windows or a browser, with its sidecar",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app_path", nargs="?", metavar="APP",
                        help="app folder, keyside.toml file or bundled app id (same as --app)")
    add_app_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--browser", action="store_true",
                      help="open the pages in the system browser instead of native windows")
    mode.add_argument("--headless", action="store_true",
                      help="open no pages: run only the sidecar and print its URL; its session token is never "
                           "printed (see keyside exec)")
    add_vault_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.app_path is not None:
        if args.app is not None:
            raise UsageError(f"The app is given twice: {args.app_path!r} and --app {args.app!r}.",
                             fix="Pass the app either as APP or with --app.")
        args.app = args.app_path
    manifest = load_app(args)
    # Read-only only with --headless (see READ_ONLY_COMMANDS): the settings page of a windowed or
    # browser run can store keys, so there a missing file vault is created with a new passphrase.
    vault = open_vault_from_args(args, manifest)
    vault.load()

    if args.headless:
        from keyside.host.headless import run_headless

        return run_headless(manifest, vault)

    from keyside.shell.runner import AppShell

    return AppShell(manifest, vault, mode="browser" if args.browser else "auto").run()
