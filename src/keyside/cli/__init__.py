"""The `keyside` command line: one module per subcommand, each adding its own parser."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from keyside import __version__
from keyside.errors import KeysideError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Each subcommand module has `register(subparsers)`; it sets `handler` on its parser with
# set_defaults(handler=...), and the handler returns an exit code.
SUBCOMMAND_MODULES = ("secrets", "doctor", "net", "run", "exec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyside",
        description="Keep third-party API keys out of web UIs.",
    )
    parser.add_argument("--version", action="version", version=f"keyside {__version__}")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="level of log messages printed on stderr (default: WARNING)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"keyside.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except KeysideError as error:
        print(f"keyside: error: {error}", file=sys.stderr)
        # keyside.cli.common.UsageError (options that do not fit together) exits like argparse does.
        return EXIT_USAGE if error.reason == "usage" else EXIT_FAILURE
    except KeyboardInterrupt:
        print("keyside: interrupted", file=sys.stderr)
        return 130
    except EOFError:
        # Ctrl-D at a prompt, or a prompt with stdin at its end: nothing was changed.
        print("keyside: error: input ended before a value was entered; nothing was changed.",
              file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader of stdout went away (`keyside doctor | head -1`). Point stdout at devnull so
        # the interpreter's final flush does not raise again, and exit as a pipe writer does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
