"""`keyside doctor --security` against the real sidecar: every class runs, passes and leaks nothing.

The self-test starts its own fake upstreams and sidecar on 127.0.0.1; these tests run it once in
this process (for the structured results) and once as a user would, as a command in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keyside.cli import main
from keyside.selftest import ClassResult, run_selftest
from keyside.selftest.results import MAX_FAILURES_SHOWN, CaseFailure

EXPECTED_CLASSES = [
    "ssrf_url", "ssrf_address", "ssrf_allowance", "host_header", "origin", "token", "crlf", "path",
    "credential_override", "key_echo", "redirect", "log_redaction", "loopback_only",
]
# Generous: the self-test takes a few seconds, a cold interpreter on a loaded machine longer.
COMMAND_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def results() -> list[ClassResult]:
    return run_selftest()


def test_selftest_runs_every_class(results: list[ClassResult]) -> None:
    assert [result.name for result in results] == EXPECTED_CLASSES


@pytest.mark.parametrize("name", EXPECTED_CLASSES)
def test_selftest_class_passes(name: str, results: list[ClassResult]) -> None:
    (result,) = [result for result in results if result.name == name]
    assert result.failures == []
    assert result.cases > 0
    assert result.passed


def test_selftest_covers_shared_corpus(results: list[ClassResult]) -> None:
    by_name = {result.name: result for result in results}
    # The counts of the shared tables at the time of writing; the self-test must run all of them.
    assert by_name["ssrf_url"].cases >= 100
    assert by_name["ssrf_address"].cases >= 90
    assert by_name["host_header"].cases >= 25
    assert by_name["origin"].cases >= 17
    assert by_name["path"].cases >= 29


def test_doctor_security_command() -> None:
    completed = subprocess.run([sys.executable, "-m", "keyside", "doctor", "--security"], capture_output=True,
                               text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [line for line in completed.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[2] for line in lines] == EXPECTED_CLASSES
    assert all(line.startswith("[ok  ]") for line in lines)
    assert "0 failed" in completed.stdout


@pytest.mark.parametrize("argv", [
    ["--app", "monitor"],
    ["--vault", "memory"],
    ["--vault-file", "/tmp/x.enc"],
], ids=["app", "vault", "vault_file"])
def test_doctor_security_rejects_app_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--security", *argv]) == 2
    err = capsys.readouterr().err
    assert "cannot be combined with --security" in err
    assert "Fix:" in err


def test_class_result_summary_names_failures() -> None:
    result = ClassResult("example", "example class")
    result.record("good", [])
    for index in range(MAX_FAILURES_SHOWN + 2):
        result.record(f"bad_{index}", ["expected status 421, got 200"])
    assert not result.passed
    summary = result.summary()
    assert summary.startswith(f"example class: {MAX_FAILURES_SHOWN + 2} of {MAX_FAILURES_SHOWN + 3} cases failed")
    assert "bad_0 (expected status 421, got 200)" in summary
    assert f"bad_{MAX_FAILURES_SHOWN}" not in summary
    assert summary.endswith("and 2 more")


def test_class_without_cases_fails() -> None:
    result = ClassResult("empty", "empty class")
    assert not result.passed
    assert result.summary() == "empty class: no case ran"


def test_class_result_json_lists_every_failure() -> None:
    result = ClassResult("example", "example class")
    result.failures = [CaseFailure(f"case_{index}", "problem") for index in range(8)]
    result.cases = 8
    body = json.loads(json.dumps(result.to_dict()))
    assert body["passed"] is False
    assert len(body["failures"]) == 8


@pytest.mark.parametrize("error", [TimeoutError(), OSError(98, "Address already in use")], ids=["timeout", "os_error"])
def test_doctor_security_reports_broken_run(error: Exception, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> None:
        raise error

    monkeypatch.setattr("keyside.selftest.checks.run_selftest", fail)
    assert main(["doctor", "--security"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("[fail] selftest")
    assert "fix:" in out
