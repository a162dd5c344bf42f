"""The security self-test behind `keyside doctor --security`.

It starts fake upstreams and a throwaway sidecar (memory vault, fresh token) on 127.0.0.1 and
runs the project's attack corpus against them, then runs the guard's SSRF case tables through
the `keyside net check` logic with a stub resolver. Nothing leaves loopback: the process runs
under a socket fence that blocks, and reports, any other destination and any OS name lookup.
"""

from keyside.selftest.results import CaseFailure, ClassResult
from keyside.selftest.runner import SELFTEST_TIMEOUT_S, run_selftest

__all__ = ["SELFTEST_TIMEOUT_S", "CaseFailure", "ClassResult", "run_selftest"]
