"""The per-call policy: window label × command × the window's current origin, checked on every call.

Windows of the test app: `main` has ["data"], `settings` has ["data", "secrets"], `about` has
none, and `ghost` is not declared. PAGE_ORIGIN serves every window; SETTINGS_ORIGIN is bound to
the settings window only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from keyside.host import Host, IpcError
from keyside.host.policy import normalize_page_origin, origin_of
from test_host_support import (
    DATA,
    ECHO_KEY,
    PAGE_ORIGIN,
    SETTINGS_ORIGIN,
    Opener,
    fake_sidecar,
    memory_vault,
    read_records,
    running_host,
    write_app,
)

APP_URL = f"{PAGE_ORIGIN}/index.html"
SETTINGS_URL = f"{SETTINGS_ORIGIN}/settings.html"
NAVIGATED_URL = "https://evil.example/phish.html"
LOOKALIKE_URL = "http://127.0.0.1:8765.evil.example/index.html"

ARGS = {
    "set_secret": {"name": "OTHER_KEY", "value": "ok-policy-table-value-1"},
    "delete_secret": {"name": "OTHER_KEY"},
    "validate_secret": {"name": "ECHO_KEY", "value": "valid-candidate-1"},
    "open_external": {"url": "https://example.org/"},
}

OK = None
# (window, current URL, command, expected reason; None means the call runs)
POLICY_TABLE = [
    ("main", APP_URL, "runtime_info", OK),
    ("main", APP_URL, "app_config", OK),
    ("main", APP_URL, "local_api", OK),
    ("main", APP_URL, "open_external", OK),
    ("main", APP_URL, "list_secrets", "window_not_allowed"),
    ("main", APP_URL, "set_secret", "window_not_allowed"),
    ("main", APP_URL, "delete_secret", "window_not_allowed"),
    ("main", APP_URL, "validate_secret", "window_not_allowed"),
    ("main", APP_URL, "no_such_command", "unknown_command"),
    ("main", SETTINGS_URL, "local_api", "origin_not_allowed"),
    ("main", SETTINGS_URL, "runtime_info", "origin_not_allowed"),
    ("main", NAVIGATED_URL, "runtime_info", "origin_not_allowed"),
    ("main", NAVIGATED_URL, "local_api", "origin_not_allowed"),
    ("main", NAVIGATED_URL, "open_external", "origin_not_allowed"),
    ("main", NAVIGATED_URL, "no_such_command", "origin_not_allowed"),
    ("main", LOOKALIKE_URL, "local_api", "origin_not_allowed"),
    ("settings", APP_URL, "runtime_info", OK),
    ("settings", APP_URL, "local_api", OK),
    ("settings", APP_URL, "list_secrets", OK),
    ("settings", APP_URL, "set_secret", OK),
    ("settings", APP_URL, "delete_secret", OK),
    ("settings", APP_URL, "validate_secret", OK),
    ("settings", SETTINGS_URL, "list_secrets", OK),
    ("settings", SETTINGS_URL, "local_api", OK),
    ("settings", NAVIGATED_URL, "list_secrets", "origin_not_allowed"),
    ("settings", NAVIGATED_URL, "set_secret", "origin_not_allowed"),
    ("settings", NAVIGATED_URL, "delete_secret", "origin_not_allowed"),
    ("settings", NAVIGATED_URL, "validate_secret", "origin_not_allowed"),
    ("settings", NAVIGATED_URL, "local_api", "origin_not_allowed"),
    ("settings", LOOKALIKE_URL, "list_secrets", "origin_not_allowed"),
    ("settings", "about:blank", "list_secrets", "origin_not_allowed"),
    ("settings", "file:///tmp/settings.html", "list_secrets", "origin_not_allowed"),
    ("about", APP_URL, "runtime_info", OK),
    ("about", APP_URL, "app_config", OK),
    ("about", APP_URL, "open_external", OK),
    ("about", APP_URL, "local_api", "window_not_allowed"),
    ("about", APP_URL, "list_secrets", "window_not_allowed"),
    ("about", NAVIGATED_URL, "runtime_info", "origin_not_allowed"),
    ("ghost", APP_URL, "runtime_info", "window_not_allowed"),
    ("ghost", APP_URL, "local_api", "window_not_allowed"),
    ("", APP_URL, "runtime_info", "window_not_allowed"),
]

ORIGIN_CASES = json.loads((DATA / "ipc_origins.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def opener() -> Opener:
    return Opener()


@pytest.fixture(scope="module")
def record_path(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("records") / "sidecar.jsonl"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, opener: Opener, record_path) -> Iterator[Host]:
    folder = tmp_path_factory.mktemp("app")
    manifest = write_app(folder)
    vault = memory_vault(manifest, {"ECHO_KEY": ECHO_KEY})
    with running_host(manifest, vault, folder / "logs", origins={PAGE_ORIGIN: None, SETTINGS_ORIGIN: "settings"},
                      sidecar_command=fake_sidecar(record=record_path), url_opener=opener) as running:
        yield running


def _case_id(row: tuple) -> str:
    window, url, command, expected = row
    where = {APP_URL: "app", SETTINGS_URL: "settings-origin", NAVIGATED_URL: "navigated",
             LOOKALIKE_URL: "lookalike"}.get(url, url.split(":")[0])
    return f"{window or 'empty'}-{where}-{command}-{expected or 'ok'}"


@pytest.mark.parametrize(("window", "url", "command", "expected"), POLICY_TABLE,
                         ids=[_case_id(row) for row in POLICY_TABLE])
def test_policy_table(host, window, url, command, expected):
    args = ARGS.get(command, {})
    if expected is None:
        host.invoke(window, url, command, args)
        return
    with pytest.raises(IpcError) as caught:
        host.invoke(window, url, command, args)
    assert caught.value.reason == expected


@pytest.mark.parametrize("case", ORIGIN_CASES["cases"], ids=[case["id"] for case in ORIGIN_CASES["cases"]])
def test_window_url_origin(host, case):
    if case["allowed"]:
        info = host.invoke("main", case["url"], "runtime_info", {})
        assert info["keyside"]
        return
    with pytest.raises(IpcError) as caught:
        host.invoke("main", case["url"], "runtime_info", {})
    assert caught.value.reason == "origin_not_allowed"


def test_navigated_window_loses_rights_until_back(host):
    assert host.invoke("settings", APP_URL, "list_secrets", {})
    with pytest.raises(IpcError) as caught:
        host.invoke("settings", NAVIGATED_URL, "list_secrets", {})
    assert caught.value.reason == "origin_not_allowed"
    assert host.invoke("settings", APP_URL, "list_secrets", {})


def test_denied_set_secret_changes_nothing(host, record_path):
    before = host.vault.get("OTHER_KEY")
    pushes_before = [r for r in read_records(record_path) if r.get("type") == "set_secret"]

    for window, url in [("settings", NAVIGATED_URL), ("main", APP_URL), ("ghost", APP_URL)]:
        with pytest.raises(IpcError):
            host.invoke(window, url, "set_secret", {"name": "OTHER_KEY", "value": "ok-denied-value-0000"})

    assert host.vault.get("OTHER_KEY") == before
    pushes_after = [r for r in read_records(record_path) if r.get("type") == "set_secret"]
    assert pushes_after == pushes_before


def test_denied_open_external_opens_nothing(host, opener):
    opened_before = list(opener.opened)
    with pytest.raises(IpcError):
        host.invoke("main", NAVIGATED_URL, "open_external", {"url": "https://example.org/from-phish"})
    assert opener.opened == opened_before


def test_denied_call_error_names_fix(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "list_secrets", {})
    body = caught.value.to_dict()
    assert body["reason"] == "window_not_allowed"
    assert '"secrets"' in body["fix"]


def test_denied_secrets_calls_are_audited(host):
    with pytest.raises(IpcError):
        host.invoke("settings", NAVIGATED_URL, "delete_secret", {"name": "ECHO_KEY"})
    records = [json.loads(line) for line in host.audit_log_path.read_text(encoding="utf-8").splitlines()]
    last = records[-1]
    assert last["window"] == "settings"
    assert last["command"] == "delete_secret"
    assert last["secret"] == "ECHO_KEY"
    assert last["outcome"] == "denied"
    assert last["reason"] == "origin_not_allowed"


def test_origin_bound_to_other_window_only(host):
    """SETTINGS_ORIGIN is registered for the settings window; main on that origin has no rights."""
    assert host.invoke("settings", SETTINGS_URL, "runtime_info", {})
    with pytest.raises(IpcError) as caught:
        host.invoke("main", SETTINGS_URL, "runtime_info", {})
    assert caught.value.reason == "origin_not_allowed"


def test_unknown_window_label_cannot_get_origin(host):
    with pytest.raises(IpcError) as caught:
        host.add_page_origin("http://127.0.0.1:9999", "ghost")
    assert caught.value.reason == "window_not_allowed"


PAGE_ORIGIN_CASES = [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ("HTTP://LOCALHOST:8000", "http://localhost:8000"),
    ("http://[::1]:8000", "http://[::1]:8000"),
    ("http://127.0.0.1", "http://127.0.0.1:80"),
    ("https://127.0.0.1", "https://127.0.0.1:443"),
]


@pytest.mark.parametrize(("origin", "normalized"), PAGE_ORIGIN_CASES, ids=[c[0] for c in PAGE_ORIGIN_CASES])
def test_page_origin_normalized(origin, normalized):
    assert normalize_page_origin(origin) == normalized


BAD_PAGE_ORIGINS = [
    "http://example.org:8000",
    "http://192.168.1.10:8000",
    "http://127.0.0.1:8000/pages",
    "http://127.0.0.1:8000?x=1",
    "ws://127.0.0.1:8000",
    "file:///tmp",
    "null",
    "",
    "http://user@127.0.0.1:8000",
]


@pytest.mark.parametrize("origin", BAD_PAGE_ORIGINS, ids=[o or "empty" for o in BAD_PAGE_ORIGINS])
def test_bad_page_origin_rejected(origin):
    with pytest.raises(IpcError) as caught:
        normalize_page_origin(origin)
    assert caught.value.reason == "invalid_origin"


def test_origin_of_default_ports():
    assert origin_of("http://127.0.0.1/") == "http://127.0.0.1:80"
    assert origin_of("http://127.0.0.1:80/") == "http://127.0.0.1:80"
    assert origin_of("https://127.0.0.1:443/x") == "https://127.0.0.1:443"


def test_no_registered_origin_denies_everything(tmp_path):
    """A host whose shell registered no page origin fails closed."""
    manifest = write_app(tmp_path)
    vault = memory_vault(manifest)
    with running_host(manifest, vault, tmp_path / "logs", origins={}, sidecar_command=fake_sidecar()) as bare:
        with pytest.raises(IpcError) as caught:
            bare.invoke("main", APP_URL, "runtime_info", {})
    assert caught.value.reason == "origin_not_allowed"
