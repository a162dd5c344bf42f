"""The built-in commands, app commands added with the decorator, the audit log, and call fuzzing.

The host runs with the fake sidecar here (the real one is in test_host_sidecar.py), because these
tests are about what the host returns, rejects and records.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyside.errors import KeysideError
from keyside.host import ArgSpec, Host, IpcError, command
from keyside.host.commands import runtime_info
from keyside.host.ipc import APP_COMMANDS, CallContext, CommandRegistry
from keyside.vault import Vault
from test_host_support import (
    DATA,
    ECHO_KEY,
    OTHER_KEY,
    PAGE_ORIGIN,
    Opener,
    fake_sidecar,
    http_get,
    memory_vault,
    read_records,
    running_host,
    write_app,
)

APP_URL = f"{PAGE_ORIGIN}/index.html"
SETTINGS_URL = f"{PAGE_ORIGIN}/settings.html"
EXTERNAL_URLS = json.loads((DATA / "ipc_external_urls.json").read_text(encoding="utf-8"))["cases"]
BAD_ARGS = json.loads((DATA / "ipc_bad_args.json").read_text(encoding="utf-8"))["cases"]


APP_REGISTRY = CommandRegistry()


@command("echo_args", capability="data", args={"text": str, "count": ArgSpec(int, required=False, default=1)},
         registry=APP_REGISTRY)
def echo_args(ctx, text, count):
    return {"text": text * count, "window": ctx.window, "origin": ctx.origin, "command": ctx.command}


@command("async_sum", capability=None, args={"numbers": list}, registry=APP_REGISTRY)
async def async_sum(ctx, numbers):
    await asyncio.sleep(0)
    return sum(n for n in numbers if isinstance(n, int | float) and not isinstance(n, bool))


@command("leak_key", capability="data", registry=APP_REGISTRY)
def leak_key(ctx):
    return {"oops": [f"prefix-{ctx.host.vault.get('ECHO_KEY')}-suffix"]}


@command("leak_token", capability="data", registry=APP_REGISTRY)
def leak_token(ctx):
    return ctx.host.sidecar_credentials()[1]


@command("crash", capability=None, registry=APP_REGISTRY)
def crash(ctx):
    raise RuntimeError(f"boom with {ctx.host.vault.get('ECHO_KEY')}")


@command("reject_call", capability=None, registry=APP_REGISTRY)
def reject_call(ctx):
    raise KeysideError("Not today.", reason="quota_exceeded", fix="try tomorrow")


@command("rotate_all", capability="secrets", registry=APP_REGISTRY)
async def rotate_all(ctx):
    return {"rotated": 0}


@command("not_json", capability=None, registry=APP_REGISTRY)
def not_json(ctx):
    return {"when": object()}


@pytest.fixture(scope="module")
def opener() -> Opener:
    return Opener()


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("records") / "sidecar.jsonl"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, opener: Opener, record) -> Iterator[Host]:
    folder = tmp_path_factory.mktemp("app")
    manifest = write_app(folder)
    vault = memory_vault(manifest, {"ECHO_KEY": ECHO_KEY, "OTHER_KEY": OTHER_KEY})
    with running_host(manifest, vault, folder / "logs", sidecar_command=fake_sidecar(record=record),
                      url_opener=opener, commands=APP_REGISTRY) as running:
        yield running


def _secret_texts(host: Host) -> list[str]:
    return [ECHO_KEY, OTHER_KEY, *host.vault.snapshot().values(), host.sidecar_credentials()[1]]


def _audit(host: Host) -> list[dict]:
    return [json.loads(line) for line in host.audit_log_path.read_text(encoding="utf-8").splitlines()]


# -- built-in commands -------------------------------------------------------------------------


def test_list_secrets_names_only(host):
    listed = host.invoke("settings", SETTINGS_URL, "list_secrets", {})
    assert [entry["name"] for entry in listed] == ["ECHO_KEY", "OTHER_KEY"]
    assert set(listed[0]) == {"name", "description", "configured", "last_validation"}
    assert listed[0]["description"] == "Key for the echo upstream"
    text = json.dumps(listed)
    for value in _secret_texts(host):
        assert value not in text


def test_app_config_is_public(host):
    config = host.invoke("about", APP_URL, "app_config", {})
    assert config["app"] == {"id": "ipc-test", "name": "IPC Test"}
    assert config["ui"]["watchlist"] == ["AAPL"]
    assert [w["label"] for w in config["windows"]] == ["main", "settings", "about"]
    assert [s["name"] for s in config["services"]] == ["echo", "other"]
    assert config["secrets"] == ["ECHO_KEY", "OTHER_KEY"]
    text = json.dumps(config)
    for value in _secret_texts(host):
        assert value not in text


def test_runtime_info_has_no_token(host):
    info = host.invoke("about", APP_URL, "runtime_info", {})
    assert info["sidecar"]["state"] == "ready"
    assert info["python"]
    assert info["keyside"]
    assert info["vault"]["kind"] == "memory"
    assert info["vault"]["display_name"] == "memory"
    assert info["vault"]["file_name"] is None
    text = json.dumps(info)
    for value in _secret_texts(host):
        assert value not in text


class _StubStore:
    """Only the attributes runtime_info reads from a vault's store."""

    def __init__(self, kind, path=None):
        self.kind = kind
        self.backend_name = f"{kind} (stub)"
        if path is not None:
            self.path = path


class _StubHost:
    def __init__(self, vault):
        self.vault = vault
        self.sidecar_state = {"state": "ready", "reason": None, "message": "", "restarts": 0}


RUNTIME_VAULT_CASES = [
    pytest.param(_StubStore("system"), {"kind": "system", "display_name": "system keyring", "file_name": None},
                 id="system"),
    pytest.param(_StubStore("memory"), {"kind": "memory", "display_name": "memory", "file_name": None},
                 id="memory"),
    pytest.param(_StubStore("file", Path("/home/someone/private/monitor.vault")),
                 {"kind": "file", "display_name": "encrypted file monitor.vault", "file_name": "monitor.vault"},
                 id="file"),
]


@pytest.mark.parametrize(("store", "expected"), RUNTIME_VAULT_CASES)
def test_runtime_info_vault_kind(tmp_path, store, expected):
    manifest = write_app(tmp_path)
    ctx = CallContext(window="about", origin=PAGE_ORIGIN, command="runtime_info",
                      host=_StubHost(Vault(manifest, store)))
    info = asyncio.run(runtime_info(ctx))
    assert info["vault"] == expected
    assert "/home/someone" not in json.dumps(info)


def test_local_api_token_works(host):
    api = host.invoke("main", APP_URL, "local_api", {})
    assert set(api) == {"url", "token"}
    assert api["url"] == host.sidecar_url
    assert len(api["token"]) == 64
    assert http_get(f"{api['url']}/api/status", api["token"])[0] == 200


def test_local_api_rejects_arguments(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "local_api", {"service": "echo"})
    assert caught.value.reason == "invalid_arguments"


@pytest.mark.parametrize("case", EXTERNAL_URLS, ids=[case["id"] for case in EXTERNAL_URLS])
def test_open_external(host, opener, case):
    url = case["url"]
    if "repeat_path_to" in case:
        url = url.replace("LONG", "a" * case["repeat_path_to"])
    before = list(opener.opened)
    if case["allowed"]:
        assert host.invoke("main", APP_URL, "open_external", {"url": url}) == {"opened": True}
        assert opener.opened == [*before, url]
        return
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "open_external", {"url": url})
    assert caught.value.reason == "external_url_not_allowed"
    assert opener.opened == before


@pytest.mark.parametrize("case", BAD_ARGS, ids=[case["id"] for case in BAD_ARGS])
def test_set_secret_bad_args_change_nothing(host, record, case):
    args = case["args"]
    if case.get("repeat"):
        args = {**args, case["repeat"]["field"]: case["repeat"]["char"] * case["repeat"]["count"]}
    vault_before = host.vault.snapshot()
    pushes_before = len([e for e in read_records(record) if e.get("type") == "set_secret"])

    with pytest.raises(IpcError) as caught:
        host.invoke("settings", SETTINGS_URL, "set_secret", args)

    assert caught.value.reason == case["reason"]
    assert host.vault.snapshot() == vault_before
    assert len([e for e in read_records(record) if e.get("type") == "set_secret"]) == pushes_before
    last = _audit(host)[-1]
    assert last["command"] == "set_secret"
    assert last["outcome"] in ("denied", "failed")
    assert last["reason"] == case["reason"]


def test_secret_commands_are_audited_without_values(host):
    value = "ok-audited-value-31415"
    host.invoke("settings", SETTINGS_URL, "list_secrets", {})
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": value})
    host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY", "value": "valid-candidate-27182"})
    with pytest.raises(IpcError):
        host.invoke("settings", SETTINGS_URL, "set_secret", {"name": value, "value": value})
    host.invoke("settings", SETTINGS_URL, "delete_secret", {"name": "OTHER_KEY"})
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": OTHER_KEY})

    records = _audit(host)[-6:]
    assert [(r["command"], r["secret"], r["outcome"]) for r in records] == [
        ("list_secrets", None, "ok"),
        ("set_secret", "OTHER_KEY", "ok"),
        ("validate_secret", "ECHO_KEY", "ok"),
        ("set_secret", None, "denied"),
        ("delete_secret", "OTHER_KEY", "ok"),
        ("set_secret", "OTHER_KEY", "ok"),
    ]
    for entry in records:
        assert set(entry) == {"time", "window", "command", "secret", "outcome", "reason"}
        assert entry["window"] == "settings"
    text = host.audit_log_path.read_text(encoding="utf-8")
    for secret in [value, "valid-candidate-27182", ECHO_KEY, OTHER_KEY, host.sidecar_credentials()[1]]:
        assert secret not in text


def test_data_commands_are_not_audited(host):
    before = len(_audit(host))
    host.invoke("main", APP_URL, "local_api", {})
    host.invoke("main", APP_URL, "runtime_info", {})
    assert len(_audit(host)) == before


def test_set_secret_pushes_trimmed_value(host, record):
    pasted = "\n ok-trimmed-1618 \r\n"
    result = host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": pasted})
    assert result == {"name": "OTHER_KEY", "configured": True, "sidecar": "updated"}
    assert host.vault.get("OTHER_KEY") == "ok-trimmed-1618"
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": OTHER_KEY})
    pushes = [e for e in read_records(record) if e.get("type") == "set_secret"]
    assert pushes[-1]["name"] == "OTHER_KEY"


def test_validate_secret_remembers_result(host):
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": "valid-stored-key-1"})
    # The fake sidecar calls values starting with "valid" valid; OTHER_KEY has no validate table,
    # so ECHO_KEY is used here.
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": "valid-echo-key-1"})
    stored = host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY"})
    wrong = host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY", "value": "bad-candidate-1"})
    listed = {e["name"]: e for e in host.invoke("settings", SETTINGS_URL, "list_secrets", {})}
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": ECHO_KEY})
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "OTHER_KEY", "value": OTHER_KEY})

    assert stored["result"] == "valid"
    assert wrong["result"] == "invalid"
    assert listed["ECHO_KEY"]["last_validation"]["result"] == "valid"
    assert listed["ECHO_KEY"]["last_validation"]["at"]
    assert listed["OTHER_KEY"]["last_validation"] is None


def test_validate_unconfigured_secret(host):
    host.invoke("settings", SETTINGS_URL, "delete_secret", {"name": "ECHO_KEY"})
    try:
        with pytest.raises(IpcError) as caught:
            host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY"})
        assert caught.value.reason == "secret_not_configured"
    finally:
        host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": ECHO_KEY})


# -- app commands ------------------------------------------------------------------------------


def test_app_command_gets_context_and_args(host):
    result = host.invoke("main", APP_URL, "echo_args", {"text": "ab", "count": 2})
    assert result == {"text": "abab", "window": "main", "origin": PAGE_ORIGIN, "command": "echo_args"}
    assert host.invoke("main", APP_URL, "echo_args", {"text": "x"})["text"] == "x"


def test_async_app_command(host):
    assert host.invoke("about", APP_URL, "async_sum", {"numbers": [1, 2, 3.5]}) == 6.5


def test_app_command_capability_enforced(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("about", APP_URL, "echo_args", {"text": "x"})
    assert caught.value.reason == "window_not_allowed"


def test_app_command_returning_key_is_withheld(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "leak_key", {})
    assert caught.value.reason == "secret_in_result"
    assert ECHO_KEY not in json.dumps(caught.value.to_dict())


def test_app_command_returning_token_is_withheld(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "leak_token", {})
    assert caught.value.reason == "secret_in_result"


def test_app_command_exception_hides_details(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "crash", {})
    assert caught.value.reason == "command_failed"
    assert "RuntimeError" in caught.value.message
    assert ECHO_KEY not in json.dumps(caught.value.to_dict())
    assert ECHO_KEY not in (host.log_dir / "host.log").read_text(encoding="utf-8")


def test_app_command_keyside_error_keeps_reason(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "reject_call", {})
    assert caught.value.to_dict() == {"reason": "quota_exceeded", "message": "Not today.", "fix": "try tomorrow"}


def test_app_command_result_must_be_json(host):
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "not_json", {})
    assert caught.value.reason == "invalid_result"


def test_app_secrets_command_is_audited(host):
    host.invoke("settings", SETTINGS_URL, "rotate_all", {})
    last = _audit(host)[-1]
    assert last["command"] == "rotate_all"
    assert last["outcome"] == "ok"


def test_app_command_timeout(host, monkeypatch):
    import keyside.host.host as host_module

    registry = CommandRegistry()

    @command("sleepy", capability=None, registry=registry)
    async def sleepy(ctx):
        await asyncio.sleep(5)

    monkeypatch.setattr(host_module, "COMMAND_TIMEOUT_S", 0.1)
    monkeypatch.setattr(host, "_app_commands", registry)
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "sleepy", {})
    assert caught.value.reason == "command_timeout"


def test_default_registry_is_used(tmp_path):
    @command("hello_default_registry", capability=None)
    def hello(ctx):
        return "hi"

    manifest = write_app(tmp_path)
    try:
        with running_host(manifest, memory_vault(manifest), tmp_path / "logs", sidecar_command=fake_sidecar()) as host:
            assert host.invoke("main", APP_URL, "hello_default_registry", {}) == "hi"
    finally:
        APP_COMMANDS.remove("hello_default_registry")


def test_invoke_before_start(tmp_path):
    manifest = write_app(tmp_path)
    host = Host(manifest, memory_vault(manifest), log_dir=tmp_path / "logs")
    with pytest.raises(IpcError) as caught:
        host.invoke("main", APP_URL, "runtime_info", {})
    assert caught.value.reason == "host_not_running"


def test_invoke_async_on_host_loop(host):
    future = asyncio.run_coroutine_threadsafe(host.invoke_async("main", APP_URL, "async_sum", {"numbers": [2, 2]}),
                                              host._loop)
    assert future.result(5) == 4


# -- fuzzing -----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
COMMANDS = st.sampled_from(["runtime_info", "app_config", "local_api", "list_secrets", "set_secret",
                            "delete_secret", "validate_secret", "open_external", "echo_args", "async_sum"]) \
    | st.text(max_size=20)
ARGS = st.dictionaries(st.sampled_from(["name", "value", "url", "text", "count", "numbers"]) | st.text(max_size=6),
                       JSON_VALUES | st.sampled_from(["ECHO_KEY", "OTHER_KEY", "https://example.org/"]), max_size=3)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(window=st.sampled_from(["main", "settings", "about", "ghost"]), command_name=COMMANDS, args=ARGS | JSON_VALUES)
def test_fuzz_invoke(host, window, command_name, args):
    """Any call either returns a JSON-safe result or raises IpcError; neither carries a key."""
    try:
        result = host.invoke(window, SETTINGS_URL, command_name, args)
    except IpcError as error:
        assert isinstance(error.reason, str)
        assert error.reason
        body = json.dumps(error.to_dict())
        assert ECHO_KEY not in body
        assert OTHER_KEY not in body
        return
    finally:
        # Keep the vault as the other tests expect it.
        if host.vault.get("ECHO_KEY") != ECHO_KEY:
            host.vault.set("ECHO_KEY", ECHO_KEY)
        if host.vault.get("OTHER_KEY") != OTHER_KEY:
            host.vault.set("OTHER_KEY", OTHER_KEY)
    text = json.dumps(result)
    assert ECHO_KEY not in text
    assert OTHER_KEY not in text
    if command_name != "local_api":
        assert host.sidecar_credentials()[1] not in text
