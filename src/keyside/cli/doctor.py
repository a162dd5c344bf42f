"""`keyside doctor`: check what an app needs on this machine and print a fix for each problem.

Checks come from provider modules listed in CHECK_PROVIDERS. Each provider exposes
`checks(args) -> list[Check]`, and a provider module that is not installed is skipped. A
provider that raises is reported as one failed check, so one broken provider cannot hide the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import sys
from dataclasses import asdict, dataclass

from keyside import __version__
from keyside.cli import EXIT_FAILURE, EXIT_OK
from keyside.cli.common import add_app_arguments, add_vault_arguments, load_app
from keyside.errors import KeysideError

log = logging.getLogger(__name__)

OK = "ok"
WARN = "warn"
FAIL = "fail"
STATUSES = (OK, WARN, FAIL)

# Modules with `checks(args) -> list[Check]`, run in this order.
CHECK_PROVIDERS: tuple[str, ...] = (
    "keyside.vault.checks",
    "keyside.shell.checks",
    "keyside.sidecar.checks",
    "keyside.guard.checks",
)


@dataclass(frozen=True)
class Check:
    """The result of one check: `status` is ok, warn or fail, and `fix` is the user's next step when not ok."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check.status must be one of {STATUSES}, not {self.status!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check the vault backend, the app's secrets and the desktop environment",
        description="Check what keyside needs on this machine and print a fix for each problem. "
                    "Exits 1 when a check fails, 0 otherwise (warnings included).",
    )
    add_app_arguments(parser)
    add_vault_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    parser.add_argument("--security", action="store_true",
                        help="run the security self-test instead: attack a throwaway sidecar and the outbound "
                             "guard on 127.0.0.1 and print one line per attack class")
    parser.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    if args.security:
        from keyside.selftest.checks import security_checks

        results = security_checks(args)
    else:
        results = collect_checks(args)
    if args.json:
        print(json.dumps({"checks": [asdict(check) for check in results],
                          "ok": not any(check.status == FAIL for check in results)}, indent=2))
    else:
        _print_report(results)
    return EXIT_FAILURE if any(check.status == FAIL for check in results) else EXIT_OK


def collect_checks(args: argparse.Namespace) -> list[Check]:
    """Run the built-in checks and every installed provider, and return all results in order."""
    results = [Check("keyside", OK, f"keyside {__version__} on Python {platform.python_version()} "
                                    f"({sys.platform})")]
    results.append(_manifest_check(args))
    for module_name in CHECK_PROVIDERS:
        results.extend(_run_provider(module_name, args))
    return results


def _manifest_check(args: argparse.Namespace) -> Check:
    # Providers read the loaded manifest from `args.manifest` (None when it failed to load).
    args.manifest = None
    try:
        manifest = load_app(args)
    except KeysideError as error:
        explicit = getattr(args, "app", None) is not None
        # Without --app, a missing manifest only means no app was chosen yet: machine checks still run.
        status = FAIL if explicit or error.reason != "manifest_not_found" else WARN
        return Check("manifest", status, error.message, error.fix)
    args.manifest = manifest
    return Check("manifest", OK, f"{manifest.name} ({manifest.app_id}) from {manifest.path}, "
                                 f"{len(manifest.secrets)} secret(s) declared")


def _run_provider(module_name: str, args: argparse.Namespace) -> list[Check]:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name == error.name or module_name.startswith(error.name + ".")):
            return []  # the provider is not part of this installation
        return [Check(module_name, FAIL, f"the check provider cannot be imported: {error}",
                      f"Install the missing package {error.name!r}, for example with pip install 'keyside[desktop]'.")]
    try:
        provided = list(module.checks(args))
    except Exception as error:  # one failing provider must not hide the others' results
        log.exception("doctor provider failed module=%s", module_name)
        return [Check(module_name, FAIL, f"the check provider failed: {type(error).__name__}: {error}",
                      "Run with --log-level DEBUG and report the traceback.")]
    return provided


def _print_report(results: list[Check]) -> None:
    width = max(len(check.name) for check in results)
    for check in results:
        print(f"[{check.status:<4}] {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != OK:
            print(f"       {'':<{width}}  fix: {check.fix}")
    failed = sum(check.status == FAIL for check in results)
    warned = sum(check.status == WARN for check in results)
    print()
    print(f"{failed} failed, {warned} warning(s), {len(results) - failed - warned} ok")
