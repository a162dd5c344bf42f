"""The self-test's corpus ships in the package and matches the test suite's tables."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from keyside.selftest import corpus

ROOT = Path(__file__).parent.parent
TESTS_DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", corpus.SHARED_FILES)
def test_shared_file_matches_tests_data(name: str) -> None:
    packaged = corpus.read_text(name)
    original = (TESTS_DATA / name).read_text(encoding="utf-8")
    assert packaged == original, (f"src/keyside/selftest/data/{name} differs from tests/data/{name}; "
                                  f"copy tests/data/{name} over it")


def test_data_folder_holds_only_listed_files() -> None:
    folder = resources.files("keyside.selftest") / "data"
    present = {entry.name for entry in folder.iterdir() if entry.is_file()}
    assert present == set(corpus.SHARED_FILES) | set(corpus.OWN_FILES)


# Every corpus file with cases. sidecar_request_headers.json contains two header lists instead.
FILES_WITH_CASES = [name for name in (*corpus.SHARED_FILES, *corpus.OWN_FILES)
                    if name != "sidecar_request_headers.json"]


@pytest.mark.parametrize("name", FILES_WITH_CASES)
def test_case_ids_unique(name: str) -> None:
    data = corpus.load(name)
    if name.endswith(".toml"):
        tables = [data["case"]]
    else:
        tables = [value for key, value in data.items() if key.endswith("cases")]
    assert tables
    for cases in tables:
        ids = [case["id"] for case in cases]
        assert ids
        assert len(ids) == len(set(ids))


def test_package_data_includes_corpus() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "selftest/data/*" in pyproject["tool"]["setuptools"]["package-data"]["keyside"]


@pytest.mark.parametrize("name", ["sidecar_tokens.json", "sidecar_control_characters.json"])
def test_rejection_cases_name_status(name: str) -> None:
    for case in corpus.cases(name):
        assert 400 <= case["status"] < 500, case["id"]


def test_redirect_cases_have_a_control_case() -> None:
    # Without one redirect that must keep the key, "no key on the other origin" proves nothing.
    cases = corpus.cases("sidecar_redirects.json")
    assert any(case.get("key_expected") is True for case in cases)
    assert any(case.get("key_expected") is False for case in cases)
