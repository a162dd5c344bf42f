"""The keyside.toml loader: every field of a full manifest, and one data file per invalid case.

Each file under data/manifests/invalid starts with `# expect: TEXT`, where TEXT is the key
(or the phrase) the error message must name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyside.errors import ManifestError
from keyside.manifest import (
    APP_ID_PATTERN,
    LABEL_PATTERN,
    SECRET_NAME_PATTERN,
    InjectSpec,
    ValidateSpec,
    load_manifest,
    resolve_manifest_path,
)

DATA = Path(__file__).parent / "data" / "manifests"
INVALID_CASES = sorted((DATA / "invalid").glob("*.toml"))


def expected_text(path: Path) -> str:
    first_line = path.read_bytes().split(b"\n", 1)[0].decode("ascii")
    assert first_line.startswith("# expect: "), f"{path.name} has no '# expect:' line"
    return first_line.removeprefix("# expect: ")


def test_invalid_corpus_is_present():
    assert len(INVALID_CASES) >= 60


@pytest.mark.parametrize("path", INVALID_CASES, ids=[path.stem for path in INVALID_CASES])
def test_invalid_manifest_rejected(path):
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    error = caught.value
    assert str(path) in error.message
    assert expected_text(path) in error.message
    assert error.fix
    assert error.reason == "invalid_manifest"


def test_secret_value_never_echoed_in_error():
    # The unknown key carries what looks like a key; the error names the key, not its value.
    with pytest.raises(ManifestError) as caught:
        load_manifest(DATA / "invalid" / "secret_unknown_key.toml")
    assert "sk-oops" not in str(caught.value)


@pytest.fixture(scope="module")
def full():
    return load_manifest(DATA / "full")


def test_full_app_fields(full):
    assert full.app_id == "full-demo"
    assert full.name == "Full Demo"
    assert full.path == (DATA / "full" / "keyside.toml").resolve()
    assert full.pages_dir == (DATA / "full" / "pages").resolve()
    assert full.keyring_service == "keyside.full-demo"
    assert sorted(full.secrets) == ["BASIC_KEY", "BEARER_KEY", "HEADER_KEY", "PATH_KEY", "QUERY_KEY"]
    assert full.secrets["HEADER_KEY"].description == "Sent in a custom header."


def test_full_upstream_normalized(full):
    service = full.services["header"]
    assert service.upstream == "https://api.example.com"
    assert service.upstream_host == "api.example.com"
    assert service.upstream_port == 443
    assert full.services["bearer"].upstream_port == 8443
    assert full.services["local"].upstream_host == "::1"
    assert full.services["local"].upstream_port == 11434


def test_full_methods_paths_defaults(full):
    assert full.services["header"].methods == ("GET", "POST")
    assert full.services["header"].paths == ("/v1/", "/v2/items")
    assert full.services["bearer"].methods == ("GET",)
    assert full.services["bearer"].paths == ("/",)


@pytest.mark.parametrize(("service", "inject"), [
    ("header", InjectSpec("header", name="X-Api-Key")),
    ("bearer", InjectSpec("bearer")),
    ("query", InjectSpec("query", name="api_key")),
    ("basic", InjectSpec("basic", username="api")),
    ("path", InjectSpec("path", template="/bot{key}")),
    ("local", None),
])
def test_full_inject_kinds(full, service, inject):
    assert full.services[service].inject == inject


def test_full_validate_and_client_header(full):
    service = full.services["header"]
    assert service.validate == ValidateSpec("/v1/me", "GET", 204)
    assert service.client_key_header == "x-api-key"
    assert full.services["local"].allow_private_network is True
    assert full.services["local"].secret is None


def test_full_service_to_dict(full):
    body = full.services["basic"].to_dict()
    assert body["inject"] == {"kind": "basic", "username": "api"}
    assert body["upstream"] == "https://basic.example.com"
    assert body["methods"] == ["GET"]
    assert body["validate"] is None
    assert full.services["header"].to_dict()["validate"] == {"path": "/v1/me", "method": "GET", "status": 204}


def test_full_windows(full):
    main, settings = full.windows["main"], full.windows["settings"]
    assert (main.title, main.width, main.height) == ("Full Demo", 1100, 760)
    assert main.capabilities == ("data",)
    assert (settings.title, settings.width, settings.height) == ("Settings", 640, 480)
    assert settings.capabilities == ("data", "secrets")


def test_full_network_and_ui(full):
    assert full.network.allow_private == ("127.0.0.1:8080", "[::1]:9090", "nas.local:8000")
    assert full.network.nameservers == ("127.0.0.1:5353",)
    assert full.ui == {"feeds": ["https://news.example.com/rss"], "refresh_seconds": 60}


def test_require_secret_unknown_name(full):
    assert full.require_secret("QUERY_KEY").name == "QUERY_KEY"
    with pytest.raises(ManifestError) as caught:
        full.require_secret("OPENAI_API_KEY")
    assert caught.value.reason == "unknown_secret"
    assert "BASIC_KEY" in caught.value.fix


def test_minimal_manifest_defaults(tmp_path):
    (tmp_path / "keyside.toml").write_text('[app]\nid = "mini"\nname = "Mini"\n')
    manifest = load_manifest(tmp_path)
    assert manifest.secrets == {}
    assert manifest.services == {}
    assert manifest.windows == {}
    assert manifest.network.allow_private == ()
    assert manifest.ui == {}


@pytest.mark.parametrize("form", ["folder", "file", "file_string"])
def test_resolve_folder_or_file(form):
    argument = {"folder": DATA / "full", "file": DATA / "full" / "keyside.toml",
                "file_string": str(DATA / "full" / "keyside.toml")}[form]
    assert resolve_manifest_path(argument) == (DATA / "full" / "keyside.toml").resolve()


def test_resolve_current_folder_first(tmp_path, monkeypatch):
    (tmp_path / "keyside.toml").write_text('[app]\nid = "here"\nname = "Here"\n')
    monkeypatch.chdir(tmp_path)
    assert load_manifest(None).app_id == "here"


def test_resolve_bundled_monitor_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(None)
    assert manifest.app_id == "monitor"
    assert load_manifest("monitor").path == manifest.path


@pytest.mark.parametrize("argument", ["no-such-app", "./no/such/folder", "UPPER"])
def test_resolve_not_found(argument, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as caught:
        resolve_manifest_path(argument)
    assert caught.value.reason == "manifest_not_found"
    assert argument in caught.value.message


@pytest.mark.parametrize(("pattern", "accepted", "rejected"), [
    (SECRET_NAME_PATTERN, ["A", "OPENAI_API_KEY", "K2"], ["", "a", "_A", "A-B", "A\n", "A" * 65]),
    (APP_ID_PATTERN, ["monitor", "my.app_2-x"], ["", "-x", "App", "x\n", "a" * 65]),
    (LABEL_PATTERN, ["main", "set-tings_2"], ["", "Main", "2x", "main\n", "a" * 33]),
])
def test_name_patterns_table(pattern, accepted, rejected):
    for text in accepted:
        assert pattern.match(text), text
    for text in rejected:
        assert not pattern.match(text), text


@given(st.text(max_size=70))
def test_secret_name_pattern_charset(text):
    if SECRET_NAME_PATTERN.match(text):
        assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
        assert 1 <= len(text) <= 64
