"""Service selection, argument checks and the child environment of `keyside exec`."""

from __future__ import annotations

import string
import tomllib
from pathlib import Path

import pytest

from keyside.cli.common import PASSPHRASE_ENV
from keyside.exec import ExecError, build_child_env, check_arguments, select_services, service_env_name
from keyside.exec.environment import REMOVED_PASSPHRASE, REMOVED_SECRET_VALUE, WITHHELD_VARIABLES
from keyside.manifest import Manifest, parse_manifest
from keyside.vault import Vault, open_vault

TEMPLATE = Path(__file__).parent / "data" / "exec_app" / "keyside.toml.template"
OPENAI_KEY = "sk-exec-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-exec-fedcba9876543210"
TOKEN = "a" * 64
SIDECAR_URL = "http://127.0.0.1:41000"


def load_test_manifest(tmp_path: Path, origin: str = "http://127.0.0.1:9") -> Manifest:
    text = string.Template(TEMPLATE.read_text()).substitute(openai_origin=origin, anthropic_origin=origin)
    path = tmp_path / "keyside.toml"
    path.write_text(text)
    return parse_manifest(path, tomllib.loads(text))


def memory_vault(manifest: Manifest, **secrets: str) -> Vault:
    vault = open_vault(manifest, "memory")
    for name, value in secrets.items():
        vault.set(name, value)
    return vault


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    return load_test_manifest(tmp_path)


# ---- variable names ----------------------------------------------------------------------

@pytest.mark.parametrize(("service", "variable"), [
    pytest.param("openai", "KEYSIDE_URL_OPENAI", id="plain"),
    pytest.param("local-llm", "KEYSIDE_URL_LOCAL_LLM", id="dash"),
    pytest.param("my_llm2", "KEYSIDE_URL_MY_LLM2", id="underscore-digit"),
])
def test_service_env_name(service: str, variable: str) -> None:
    assert service_env_name(service) == variable


def test_withheld_variables_match_cli() -> None:
    assert PASSPHRASE_ENV in WITHHELD_VARIABLES


# ---- service selection -------------------------------------------------------------------

SELECTION_CASES = [
    # (stored secrets, requested services, expected selection)
    pytest.param({}, None, ["local-llm"], id="default-keyless-only"),
    pytest.param({"OPENAI_API_KEY": OPENAI_KEY}, None, ["openai", "local-llm"], id="default-configured"),
    pytest.param({"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}, [],
                 ["openai", "anthropic", "local-llm"], id="empty-list-is-default"),
    pytest.param({"OPENAI_API_KEY": OPENAI_KEY}, ["openai"], ["openai"], id="requested"),
    pytest.param({"OPENAI_API_KEY": OPENAI_KEY}, ["openai", "openai", "local-llm"], ["openai", "local-llm"],
                 id="requested-duplicates"),
    pytest.param({}, ["local-llm"], ["local-llm"], id="requested-keyless"),
]


@pytest.mark.parametrize(("stored", "requested", "expected"), SELECTION_CASES)
def test_select_services(manifest: Manifest, stored: dict[str, str], requested: list[str] | None,
                         expected: list[str]) -> None:
    vault = memory_vault(manifest, **stored)
    assert [spec.name for spec in select_services(manifest, vault, requested)] == expected


SELECTION_ERRORS = [
    # (stored secrets, requested services, reason, texts the message or fix must contain)
    pytest.param({}, ["nope"], "unknown_service", ["'nope'", "anthropic, local-llm, openai, unused"],
                 id="unknown"),
    pytest.param({}, ["openai"], "secret_not_configured", ["openai needs OPENAI_API_KEY",
                                                           "keyside secrets set OPENAI_API_KEY"],
                 id="missing-secret"),
    pytest.param({"OPENAI_API_KEY": OPENAI_KEY}, ["openai", "anthropic", "unused"], "secret_not_configured",
                 ["anthropic needs ANTHROPIC_API_KEY", "unused needs UNUSED_API_KEY",
                  "keyside secrets set ANTHROPIC_API_KEY", "keyside secrets set UNUSED_API_KEY"],
                 id="all-missing-reported"),
]


@pytest.mark.parametrize(("stored", "requested", "reason", "texts"), SELECTION_ERRORS)
def test_select_services_errors(manifest: Manifest, stored: dict[str, str], requested: list[str],
                                reason: str, texts: list[str]) -> None:
    vault = memory_vault(manifest, **stored)
    with pytest.raises(ExecError) as caught:
        select_services(manifest, vault, requested)
    assert caught.value.reason == reason
    assert caught.value.exit_code == 1
    for text in texts:
        assert text in str(caught.value)


def test_select_services_fix_names_app(manifest: Manifest) -> None:
    with pytest.raises(ExecError) as caught:
        select_services(manifest, memory_vault(manifest), ["openai"])
    assert f"--app {manifest.path.parent}" in (caught.value.fix or "")


class FileVaultStandIn:
    """A vault of kind `file` with no secrets, for the fixes that apply to a persistent vault."""

    kind = "file"

    def is_configured(self, name: str) -> bool:
        return False


@pytest.mark.parametrize(("requested", "reason"), [
    pytest.param(["only"], "secret_not_configured", id="requested-service"),
    pytest.param(None, "no_usable_service", id="default-services"),
])
def test_memory_vault_fix_says_it_starts_empty(tmp_path: Path, requested: list[str] | None, reason: str) -> None:
    manifest = _one_keyed_service(tmp_path)
    with pytest.raises(ExecError) as caught:
        select_services(manifest, memory_vault(manifest), requested)
    fix = caught.value.fix or ""
    assert caught.value.reason == reason
    assert "memory vault starts empty in every process" in fix
    assert "--vault system" in fix
    assert "--vault file" in fix
    assert "keyside secrets set" in fix
    assert "same --vault options" not in fix


@pytest.mark.parametrize(("requested", "reason"), [
    pytest.param(["only"], "secret_not_configured", id="requested-service"),
    pytest.param(None, "no_usable_service", id="default-services"),
])
def test_persistent_vault_fix_repeats_options(tmp_path: Path, requested: list[str] | None, reason: str) -> None:
    manifest = _one_keyed_service(tmp_path)
    with pytest.raises(ExecError) as caught:
        select_services(manifest, FileVaultStandIn(), requested)
    fix = caught.value.fix or ""
    assert caught.value.reason == reason
    assert "(and the same --vault options)" in fix
    assert "memory vault" not in fix


def _manifest_from(tmp_path: Path, services: dict) -> Manifest:
    data = {"app": {"id": "t", "name": "T"}, "secrets": {"K": {"description": "k"}}, "services": services}
    return parse_manifest(tmp_path / "keyside.toml", data)


def _one_keyed_service(tmp_path: Path) -> Manifest:
    return _manifest_from(tmp_path, {"only": {"upstream": "https://api.example.com", "secret": "K",
                                              "inject": {"bearer": True}}})


def test_select_services_no_usable_service(tmp_path: Path) -> None:
    manifest = _manifest_from(tmp_path, {"only": {"upstream": "https://api.example.com", "secret": "K",
                                                  "inject": {"bearer": True}}})
    with pytest.raises(ExecError) as caught:
        select_services(manifest, memory_vault(manifest), None)
    assert caught.value.reason == "no_usable_service"
    assert "keyside secrets set K" in (caught.value.fix or "")


def test_select_services_name_collision(tmp_path: Path) -> None:
    origin = "https://api.example.com"
    manifest = _manifest_from(tmp_path, {"my-llm": {"upstream": origin}, "my_llm": {"upstream": origin}})
    with pytest.raises(ExecError) as caught:
        select_services(manifest, memory_vault(manifest), None)
    assert caught.value.reason == "service_name_collision"
    assert "KEYSIDE_URL_MY_LLM" in caught.value.message


# ---- arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    pytest.param(["curl", "-H", f"Authorization: Bearer {OPENAI_KEY}"], id="inside-argument"),
    pytest.param([OPENAI_KEY], id="program-name"),
    pytest.param(["tool", f"--key={OPENAI_KEY}"], id="option-value"),
])
def test_check_arguments_rejects_secret(argv: list[str]) -> None:
    with pytest.raises(ExecError) as caught:
        check_arguments(argv, [OPENAI_KEY, ANTHROPIC_KEY])
    assert caught.value.reason == "secret_in_arguments"
    assert OPENAI_KEY not in str(caught.value)
    assert f"Argument {argv.index(next(a for a in argv if OPENAI_KEY in a))}" in caught.value.message


def test_check_arguments_allows_other_text() -> None:
    check_arguments(["curl", "-H", "Authorization: Bearer $KEYSIDE_TOKEN", "sk-exec-openai"], [OPENAI_KEY])


# ---- the child environment ---------------------------------------------------------------

def _child_env(parent: dict[str, str], services: list[str] | None = None):
    return build_child_env(parent, secret_values=[OPENAI_KEY, ANTHROPIC_KEY], sidecar_url=SIDECAR_URL + "/",
                           token=TOKEN, services=services or ["openai", "local-llm"])


def test_child_env_adds_urls_and_token() -> None:
    variables = _child_env({"PATH": "/usr/bin"}).variables
    assert variables["PATH"] == "/usr/bin"
    assert variables["KEYSIDE_URL"] == SIDECAR_URL
    assert variables["KEYSIDE_TOKEN"] == TOKEN
    assert variables["KEYSIDE_URL_OPENAI"] == SIDECAR_URL + "/api/svc/openai"
    assert variables["KEYSIDE_URL_LOCAL_LLM"] == SIDECAR_URL + "/api/svc/local-llm"


REMOVAL_CASES = [
    # (variable, value, removed with this reason or None when kept)
    pytest.param("OPENAI_API_KEY", OPENAI_KEY, REMOVED_SECRET_VALUE, id="exact-value"),
    pytest.param("MY_OWN_NAME", ANTHROPIC_KEY, REMOVED_SECRET_VALUE, id="any-name"),
    pytest.param("PADDED", f" {OPENAI_KEY}\n", REMOVED_SECRET_VALUE, id="surrounding-whitespace"),
    pytest.param("CURL_HEADER", f"Authorization: Bearer {OPENAI_KEY}", REMOVED_SECRET_VALUE, id="inside-value"),
    pytest.param("KEYSIDE_VAULT_PASSPHRASE", "correct horse", REMOVED_PASSPHRASE, id="vault-passphrase"),
    pytest.param("OPENAI_API_KEY", "sk-some-other-key", None, id="other-value-same-name"),
    pytest.param("PARTIAL", OPENAI_KEY[:-1], None, id="prefix-of-secret"),
]


@pytest.mark.parametrize(("name", "value", "why"), REMOVAL_CASES)
def test_child_env_removal(name: str, value: str, why: str | None) -> None:
    environment = _child_env({"PATH": "/usr/bin", name: value})
    if why is None:
        assert environment.variables[name] == value
        assert environment.removed == {}
    else:
        assert name not in environment.variables
        assert environment.removed == {name: why}


def test_child_env_drops_stale_keyside_variables() -> None:
    parent = {"KEYSIDE_URL": "http://127.0.0.1:1", "KEYSIDE_TOKEN": "old", "KEYSIDE_URL_OTHER": "http://x",
              "KEYSIDE_URL_OPENAI": "http://127.0.0.1:1/api/svc/openai", "KEYSIDE_LOG": "keep"}
    variables = _child_env(parent, ["openai"]).variables
    assert "KEYSIDE_URL_OTHER" not in variables
    assert variables["KEYSIDE_URL_OPENAI"] == SIDECAR_URL + "/api/svc/openai"
    assert variables["KEYSIDE_TOKEN"] == TOKEN
    assert variables["KEYSIDE_LOG"] == "keep"


def test_child_env_no_secret_anywhere() -> None:
    parent = {"A": OPENAI_KEY, "B": f"x{ANTHROPIC_KEY}y", "C": "plain"}
    variables = _child_env(parent).variables
    flat = "\n".join(f"{name}={value}" for name, value in variables.items())
    assert OPENAI_KEY not in flat
    assert ANTHROPIC_KEY not in flat


def test_child_env_repr_hides_token() -> None:
    assert TOKEN not in repr(_child_env({"PATH": "/usr/bin"}))
