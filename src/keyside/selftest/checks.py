"""The self-test as `keyside doctor` checks: one Check line per attack class."""

from __future__ import annotations

import argparse

from keyside.cli.common import UsageError
from keyside.cli.doctor import FAIL, OK, Check
from keyside.selftest.runner import SELFTEST_TIMEOUT_S, run_selftest

# Options of `keyside doctor` that choose an app or a vault; the self-test brings its own.
APP_AND_VAULT_OPTIONS = (("app", "--app"), ("vault", "--vault"), ("vault_file", "--vault-file"),
                         ("passphrase_fd", "--passphrase-fd"))
FIX = ("This keyside installation did not stop every case of this class. Do not rely on it with real keys; "
       "report the output of `keyside doctor --security --json` as SECURITY.md describes.")


def security_checks(args: argparse.Namespace) -> list[Check]:
    """Run the self-test and return one Check per class, named after the class.

    Raises UsageError when an app or vault option is given, because the self-test uses its own
    throwaway app and memory vault and would silently ignore them.
    """
    conflicting = [option for attribute, option in APP_AND_VAULT_OPTIONS
                   if getattr(args, attribute, None) is not None]
    if conflicting:
        raise UsageError(f"{', '.join(conflicting)} cannot be combined with --security: the self-test uses its own "
                         "throwaway app and memory vault, never your keys.",
                         fix="Run `keyside doctor --security` without them.")
    try:
        results = run_selftest()
    except TimeoutError:
        return [Check("selftest", FAIL, f"the self-test did not finish within {SELFTEST_TIMEOUT_S:g} s",
                      "Run `keyside --log-level INFO doctor --security` to see which step hangs, "
                      "and report it as SECURITY.md describes.")]
    except OSError as error:
        return [Check("selftest", FAIL, f"the self-test could not run: {error.strerror or error}",
                      "Check that this machine allows listening on 127.0.0.1, then run it again.")]
    checks = []
    for result in results:
        status = OK if result.passed else FAIL
        checks.append(Check(result.name, status, result.summary(), None if result.passed else FIX))
    return checks
