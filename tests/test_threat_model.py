"""docs/threat-model.md makes no claim without proof: every cited test and every cited piece of
code exists, and every threat names both.

Cited tests are looked up in the output of `pytest --collect-only` for the cited files, run in a
child process, so a renamed or deleted test fails here. CI runs the whole suite, so each cited
test must also pass there.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import need

ROOT = Path(__file__).parent.parent
THREAT_MODEL = ROOT / "docs" / "threat-model.md"
TEXT = THREAT_MODEL.read_text(encoding="utf-8")

# A pytest node id in backticks: `tests/test_x.py::test_name` or `...::test_name[case-id]`.
TEST_ID = re.compile(r"`(tests/[A-Za-z0-9_/]+\.py::[A-Za-z0-9_]+(?:\[[^\]`]*\])?)`")
# A dotted name in backticks that starts at the package: `keyside.module.Class.method`.
CODE_REF = re.compile(r"`(keyside(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
THREAT_HEADING = re.compile(r"^### (T\d+)\. .+$", re.MULTILINE)
# Collecting the cited files imports them; a few seconds normally, more on a loaded machine.
COLLECT_TIMEOUT_S = 300
# Modules whose import needs an optional system component.
OPTIONAL_IMPORTS = {"qtpy": "PyQt6 and qtpy (pip install 'keyside[desktop]')",
                    "PyQt6": "PyQt6 and qtpy (pip install 'keyside[desktop]')"}

CITED_TESTS = sorted(set(TEST_ID.findall(TEXT)))
CITED_CODE = sorted(set(CODE_REF.findall(TEXT)))


def threat_sections() -> list[tuple[str, str]]:
    """Return (threat id, section text) for every `### Tn.` section."""
    matches = list(THREAT_HEADING.finditer(TEXT))
    sections = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else TEXT.index("\n## ", match.end())
        sections.append((match.group(1), TEXT[match.start():end]))
    return sections


@pytest.fixture(scope="module")
def collected() -> set[str]:
    files = sorted({test_id.split("::", 1)[0] for test_id in CITED_TESTS})
    missing = [name for name in files if not (ROOT / name).is_file()]
    assert missing == [], f"docs/threat-model.md cites test files that do not exist: {missing}"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=COLLECT_TIMEOUT_S, check=False)
    node_ids = {line.strip() for line in completed.stdout.splitlines() if "::" in line}
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return node_ids


def test_threat_model_cites_tests() -> None:
    # A broken pattern would find nothing and make every other check pass vacuously.
    assert len(CITED_TESTS) >= 60
    assert len(CITED_CODE) >= 30


@pytest.mark.parametrize("test_id", CITED_TESTS)
def test_cited_test_exists(test_id: str, collected: set[str]) -> None:
    if "[" in test_id:
        assert test_id in collected, f"{test_id} is cited in docs/threat-model.md but not collected"
    else:
        assert any(node == test_id or node.startswith(test_id + "[") for node in collected), (
            f"{test_id} is cited in docs/threat-model.md but not collected")


def _resolve(dotted: str) -> Any:
    """Import the longest module prefix of `dotted` and look the rest up as attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name in OPTIONAL_IMPORTS:
                need(False, OPTIONAL_IMPORTS[error.name])
            if error.name is not None and module_name.startswith(error.name):
                continue
            raise
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", CITED_CODE)
def test_cited_code_exists(dotted: str) -> None:
    try:
        _resolve(dotted)
    except (ModuleNotFoundError, AttributeError) as error:
        pytest.fail(f"{dotted} is cited in docs/threat-model.md but does not exist: {error}")


@pytest.mark.parametrize(("threat", "section"), threat_sections(), ids=[t for t, _ in threat_sections()])
def test_threat_names_code_and_tests(threat: str, section: str) -> None:
    code_line = next((line for line in section.splitlines() if line.startswith("- **Code:**")), None)
    assert code_line is not None, f"{threat} has no Code line"
    assert CODE_REF.search(code_line), f"{threat}: the Code line names no keyside module or function"
    tests_part = section.split("- **Tests:**", 1)
    assert len(tests_part) == 2, f"{threat} has no Tests line"
    assert TEST_ID.search(tests_part[1]), f"{threat}: the Tests line cites no test id"


def test_threats_numbered_in_order() -> None:
    numbers = [int(threat[1:]) for threat, _ in threat_sections()]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("heading", [
    "## Assets", "## Actors", "## Trust boundaries", "## Threats and defences",
    "## What keyside does not defend against", "## Browser mode compared with native windows",
])
def test_threat_model_has_section(heading: str) -> None:
    assert f"\n{heading}\n" in TEXT
