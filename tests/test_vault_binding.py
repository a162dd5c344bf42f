"""Keys bound to the upstream origins they were saved for.

Two app folders share one `[app] id`, and so one vault entry, but name different upstreams.
A key saved by one must not reach the other's upstream until the user sets a new key or binds
the stored one. Covered here: the Vault, `keyside secrets`, `keyside doctor` and the host.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import uuid
from pathlib import Path

import pytest

from keyside.cli import common as cli_common
from keyside.cli import doctor, main
from keyside.cli import secrets as cli_secrets
from keyside.cli.common import PASSPHRASE_ENV
from keyside.host.ipc import IpcError
from keyside.manifest import Manifest, load_manifest
from keyside.vault import FileStore, MemoryStore, Vault, VaultError
from keyside.vault.binding import BINDINGS_KEY, canonical_origin
from keyside.vault.errors import VAULT_WRITE_FAILED
from keyside.vault.file_store import MIN_SCRYPT_N
from keyside.vault.store import Change, Entries, decode_entries
from test_host_support import PAGE_ORIGIN, fake_sidecar, memory_vault, read_records, running_host, write_app

GITHUB = "https://api.github.com"
LOCAL = "http://127.0.0.1:18080"
SECRET_VALUE = "ghp_Rk4vN8qL2xT6mW9sJ3yB"
PASSPHRASE = "binding test passphrase"
SETTINGS_URL = f"{PAGE_ORIGIN}/settings.html"

MANIFEST_TEMPLATE = """
[app]
id = "{app_id}"
name = "Binding Test"

[secrets.API_KEY]
description = "Key for the API."

[secrets.SPARE_KEY]
description = "A key no service uses."
{services}
"""

SERVICE_TEMPLATE = """
[services.{name}]
upstream = "{upstream}"
secret = "API_KEY"
inject = {{ bearer = true }}
paths = ["/"]
{private}
"""


def write_manifest(folder: Path, app_id: str, *upstreams: str) -> Manifest:
    """Write an app whose API_KEY is used by one service per upstream, and load it."""
    services = []
    for index, upstream in enumerate(upstreams):
        private = "allow_private_network = true" if "127.0.0.1" in upstream else ""
        services.append(SERVICE_TEMPLATE.format(name=f"api{index}", upstream=upstream, private=private))
    folder.mkdir(parents=True, exist_ok=True)
    text = MANIFEST_TEMPLATE.format(app_id=app_id, services="".join(services))
    (folder / "keyside.toml").write_text(text, encoding="utf-8")
    return load_manifest(folder)


@pytest.fixture
def app_id() -> str:
    return f"bind-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def github_app(tmp_path, app_id) -> Manifest:
    return write_manifest(tmp_path / "github", app_id, GITHUB)


@pytest.fixture
def local_app(tmp_path, app_id) -> Manifest:
    return write_manifest(tmp_path / "local", app_id, LOCAL)


class FailingStore(MemoryStore):
    """A memory store whose writes fail, the way a locked keyring fails."""

    def update(self, change: Change) -> Entries:
        raise VaultError("simulated write failure", reason=VAULT_WRITE_FAILED)


def stored_origins(entries: Entries) -> dict[str, list[str]]:
    return json.loads(entries[BINDINGS_KEY])["origins"]


# -- the Vault ----------------------------------------------------------------------------------


def test_set_records_origins(github_app):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    entries = store.load()
    assert entries["API_KEY"] == SECRET_VALUE
    assert stored_origins(entries) == {"API_KEY": [GITHUB]}


def test_same_id_other_upstream_withheld(github_app, local_app):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)

    other = Vault(local_app, store)
    assert other.get("API_KEY") is None
    assert other.snapshot() == {}
    assert other.names() == []
    assert other.is_configured("API_KEY") is False
    assert other.is_stored("API_KEY") is True
    assert other.recorded_origins("API_KEY") == (GITHUB,)
    assert other.current_origins("API_KEY") == (LOCAL,)
    assert other.binding_problems() == {"API_KEY": ((GITHUB,), (LOCAL,))}


def test_same_upstream_still_usable(github_app, tmp_path, app_id):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    copy = write_manifest(tmp_path / "copy", app_id, f"{GITHUB}:443")
    vault = Vault(copy, store)
    assert vault.get("API_KEY") == SECRET_VALUE
    assert vault.binding_problems() == {}


def test_subset_of_origins_usable(tmp_path, app_id, github_app):
    store = MemoryStore()
    Vault(write_manifest(tmp_path / "both", app_id, GITHUB, LOCAL), store).set("API_KEY", SECRET_VALUE)
    assert Vault(github_app, store).get("API_KEY") == SECRET_VALUE


def test_added_origin_withholds(tmp_path, app_id, github_app):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    both = Vault(write_manifest(tmp_path / "both", app_id, GITHUB, LOCAL), store)
    assert both.get("API_KEY") is None
    assert both.binding_problems() == {"API_KEY": ((GITHUB,), tuple(sorted([GITHUB, LOCAL])))}


def test_unused_secret_gains_service(tmp_path, app_id, github_app):
    store = MemoryStore()
    Vault(write_manifest(tmp_path / "none", app_id), store).set("API_KEY", SECRET_VALUE)
    assert stored_origins(store.load()) == {"API_KEY": []}
    vault = Vault(github_app, store)
    assert vault.get("API_KEY") is None
    assert vault.binding_problems() == {"API_KEY": ((), (GITHUB,))}


def test_spare_key_without_service_usable(github_app, local_app):
    store = MemoryStore()
    Vault(github_app, store).set("SPARE_KEY", "spare-value")
    assert Vault(local_app, store).get("SPARE_KEY") == "spare-value"


@pytest.mark.parametrize(("given", "expected"), [
    ("https://api.github.com", "https://api.github.com"),
    ("https://API.GitHub.com:443", "https://api.github.com"),
    ("http://127.0.0.1:80", "http://127.0.0.1"),
    ("http://127.0.0.1:18080", "http://127.0.0.1:18080"),
    ("https://api.github.com:80", "https://api.github.com:80"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_canonical_origin(given, expected):
    assert canonical_origin(given) == expected


def test_old_entry_bound_on_first_load(github_app, local_app, caplog):
    store = MemoryStore({"API_KEY": SECRET_VALUE})
    with caplog.at_level(logging.WARNING, logger="keyside.vault"):
        vault = Vault(github_app, store)
        assert vault.get("API_KEY") == SECRET_VALUE
    assert "secret bound on first use" in caplog.text
    assert "name=API_KEY" in caplog.text
    assert SECRET_VALUE not in caplog.text
    assert stored_origins(store.load()) == {"API_KEY": [GITHUB]}
    assert Vault(local_app, store).get("API_KEY") is None


def test_first_use_binding_unsaved_still_usable(github_app, caplog):
    store = FailingStore({"API_KEY": SECRET_VALUE})
    with caplog.at_level(logging.WARNING, logger="keyside.vault"):
        vault = Vault(github_app, store)
        assert vault.get("API_KEY") == SECRET_VALUE
    assert "secret bindings not saved" in caplog.text
    assert BINDINGS_KEY not in store.load()


def test_unreadable_bindings_withhold(github_app, caplog):
    store = MemoryStore({"API_KEY": SECRET_VALUE, BINDINGS_KEY: "not json"})
    with caplog.at_level(logging.WARNING, logger="keyside.vault"):
        vault = Vault(github_app, store)
        assert vault.get("API_KEY") is None
    assert vault.binding_problems() == {"API_KEY": ((), (GITHUB,))}
    assert "vault bindings unreadable" in caplog.text
    vault.set("API_KEY", SECRET_VALUE)
    assert vault.get("API_KEY") == SECRET_VALUE


def test_set_rebinds_to_current(github_app, local_app):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    local = Vault(local_app, store)
    local.set("API_KEY", "local-key-value")
    assert local.get("API_KEY") == "local-key-value"
    assert stored_origins(store.load()) == {"API_KEY": [LOCAL]}
    assert Vault(github_app, store).get("API_KEY") is None


def test_bind_moves_stored_key(github_app, local_app):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    local = Vault(local_app, store)
    assert local.bind("API_KEY") == (GITHUB,)
    assert local.get("API_KEY") == SECRET_VALUE
    assert local.binding_problems() == {}
    assert store.load()["API_KEY"] == SECRET_VALUE
    assert stored_origins(store.load()) == {"API_KEY": [LOCAL]}


def test_bind_unstored_rejected(local_app):
    vault = Vault(local_app, MemoryStore())
    with pytest.raises(VaultError) as caught:
        vault.bind("API_KEY")
    assert caught.value.reason == "secret_not_stored"
    assert "keyside secrets set API_KEY" in caught.value.fix


def test_delete_withheld_key(github_app, local_app):
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    local = Vault(local_app, store)
    assert local.delete("API_KEY") is True
    assert store.load() == {}
    assert local.binding_problems() == {}


def test_delete_keeps_other_bindings(github_app):
    store = MemoryStore()
    vault = Vault(github_app, store)
    vault.set("API_KEY", SECRET_VALUE)
    vault.set("SPARE_KEY", "spare-value")
    vault.delete("SPARE_KEY")
    assert stored_origins(store.load()) == {"API_KEY": [GITHUB]}


def test_entry_stays_name_to_string(github_app):
    # keyside versions without bindings decode the entry as an object of string to string.
    store = MemoryStore()
    Vault(github_app, store).set("API_KEY", SECRET_VALUE)
    text = json.dumps(store.load())
    decoded = decode_entries(text, source="test entry", fix="none")
    assert all(isinstance(value, str) for value in decoded.values())


def test_values_not_logged(github_app, local_app, caplog):
    store = MemoryStore()
    with caplog.at_level(logging.DEBUG, logger="keyside"):
        Vault(github_app, store).set("API_KEY", SECRET_VALUE)
        local = Vault(local_app, store)
        local.load()
        local.bind("API_KEY")
    assert "secret withheld" in caplog.text
    assert SECRET_VALUE not in caplog.text


# -- keyside secrets ----------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run `keyside` in this process against one file vault; return (exit code, stdout, stderr)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(cli_secrets, "has_terminal", lambda: False)
    monkeypatch.setattr(cli_common, "has_terminal", lambda: False)
    monkeypatch.setattr(doctor, "CHECK_PROVIDERS", ("keyside.vault.checks",))
    vault_path = tmp_path / "vault.enc"

    def run(manifest: Manifest, *args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        code = main([*args, "--app", str(manifest.path.parent), "--vault", "file", "--vault-file", str(vault_path)])
        captured = capsys.readouterr()
        assert SECRET_VALUE not in captured.out + captured.err
        return code, captured.out, captured.err

    run.vault_path = vault_path  # type: ignore[attr-defined]
    return run


@pytest.fixture
def saved_for_github(cli, github_app):
    """The file vault holding API_KEY, saved by the app whose upstream is GitHub."""
    Vault(github_app, FileStore(cli.vault_path, PASSPHRASE, scrypt_n=MIN_SCRYPT_N)).set("API_KEY", SECRET_VALUE)


def file_vault(cli, manifest: Manifest) -> Vault:
    return Vault(manifest, FileStore(cli.vault_path, PASSPHRASE, scrypt_n=MIN_SCRYPT_N))


def test_cli_list_shows_mismatch(cli, saved_for_github, local_app):
    code, stdout, _ = cli(local_app, "secrets", "list")
    assert code == 0
    assert f"API_KEY is withheld: it is bound to {GITHUB}; this app would send it to {LOCAL}." in stdout
    assert "`keyside secrets set API_KEY`" in stdout
    assert "`keyside secrets bind API_KEY`" in stdout
    rows = {line.split()[0]: line.split()[1] for line in stdout.splitlines() if line.endswith("Key for the API.")}
    assert rows == {"API_KEY": "withheld"}


def test_cli_list_json_mismatch(cli, saved_for_github, local_app):
    code, stdout, _ = cli(local_app, "secrets", "list", "--json")
    assert code == 0
    row = {row["name"]: row for row in json.loads(stdout)["secrets"]}["API_KEY"]
    assert row["configured"] is False
    assert row["binding"] == "mismatch"
    assert row["recorded_origins"] == [GITHUB]
    assert row["current_origins"] == [LOCAL]


def test_cli_list_bound_has_no_note(cli, saved_for_github, github_app):
    code, stdout, _ = cli(github_app, "secrets", "list")
    assert code == 0
    assert "withheld" not in stdout


def test_cli_bind_yes(cli, saved_for_github, local_app, github_app):
    code, stdout, _ = cli(local_app, "secrets", "bind", "API_KEY", "--yes")
    assert code == 0
    assert f"API_KEY is bound to: {GITHUB}" in stdout
    assert f"This app would send it to: {LOCAL}" in stdout
    assert f"Bound API_KEY to {LOCAL}" in stdout
    assert file_vault(cli, local_app).get("API_KEY") == SECRET_VALUE
    assert file_vault(cli, github_app).get("API_KEY") is None


def test_cli_bind_needs_confirmation(cli, saved_for_github, local_app):
    code, _, stderr = cli(local_app, "secrets", "bind", "API_KEY")
    assert code == 2
    assert "--yes" in stderr
    assert file_vault(cli, local_app).get("API_KEY") is None


@pytest.mark.parametrize(("answer", "exit_code", "bound"), [("y", 0, True), ("n", 1, False), ("", 1, False)])
def test_cli_bind_prompt(cli, saved_for_github, local_app, monkeypatch, answer, exit_code, bound):
    monkeypatch.setattr(cli_secrets, "has_terminal", lambda: True)
    questions = []

    def answer_prompt(question: str) -> str:
        questions.append(question)
        return answer

    monkeypatch.setattr(builtins, "input", answer_prompt)
    code, _, _ = cli(local_app, "secrets", "bind", "API_KEY")
    assert code == exit_code
    assert questions == [f"Send the stored API_KEY to {LOCAL} from now on? [y/N] "]
    assert (file_vault(cli, local_app).get("API_KEY") == SECRET_VALUE) is bound


def test_cli_bind_unstored(cli, local_app):
    code, _, stderr = cli(local_app, "secrets", "bind", "API_KEY", "--yes")
    assert code == 1
    assert "API_KEY is not stored" in stderr
    assert "keyside secrets set API_KEY" in stderr


def test_cli_set_rebinds(cli, saved_for_github, local_app):
    code, _, _ = cli(local_app, "secrets", "set", "API_KEY", "--stdin", stdin="local-key-value\n")
    assert code == 0
    assert file_vault(cli, local_app).get("API_KEY") == "local-key-value"


def test_cli_delete_withheld(cli, saved_for_github, local_app, github_app):
    code, stdout, _ = cli(local_app, "secrets", "delete", "API_KEY")
    assert code == 0
    assert "Deleted API_KEY" in stdout
    assert file_vault(cli, github_app).is_stored("API_KEY") is False


def test_doctor_fails_on_mismatch(cli, saved_for_github, local_app):
    code, stdout, _ = cli(local_app, "doctor", "--json")
    assert code == 1
    checks = {check["name"]: check for check in json.loads(stdout)["checks"]}
    check = checks["secret API_KEY"]
    assert check["status"] == "fail"
    assert check["detail"] == f"withheld: bound to {GITHUB}; this app would send it to {LOCAL}"
    assert "keyside secrets set API_KEY" in check["fix"]
    assert "keyside secrets bind API_KEY" in check["fix"]


# -- the host -----------------------------------------------------------------------------------


@pytest.fixture
def host_saved_elsewhere(tmp_path):
    """A running host whose ECHO_KEY was saved by an app with the same id and another upstream port."""
    record = tmp_path / "sidecar.jsonl"
    store = MemoryStore()
    Vault(write_app(tmp_path / "elsewhere", upstream_port=10), store).set("ECHO_KEY", "echo-key-saved-elsewhere")
    manifest = write_app(tmp_path / "app")
    vault = Vault(manifest, store)
    vault.set("OTHER_KEY", "other-key-saved-here")
    with running_host(manifest, vault, tmp_path / "logs", sidecar_command=fake_sidecar(record=record)) as host:
        yield host, record


def test_host_withholds_from_sidecar(host_saved_elsewhere):
    host, record = host_saved_elsewhere
    starts = [event for event in read_records(record) if event.get("event") == "start"]
    assert starts[0]["secret_names"] == ["OTHER_KEY"]


def test_host_list_secrets_mismatch(host_saved_elsewhere):
    host, _ = host_saved_elsewhere
    rows = {row["name"]: row for row in host.invoke("settings", SETTINGS_URL, "list_secrets", {})}
    assert rows["ECHO_KEY"]["configured"] is False
    assert rows["ECHO_KEY"]["binding"] == "mismatch"
    assert rows["ECHO_KEY"]["recorded_origins"] == ["http://127.0.0.1:10"]
    assert rows["ECHO_KEY"]["current_origins"] == ["http://127.0.0.1:9"]
    assert "binding" not in rows["OTHER_KEY"]
    assert "echo-key-saved-elsewhere" not in json.dumps(rows)


def test_host_validate_withheld_key(host_saved_elsewhere):
    host, _ = host_saved_elsewhere
    with pytest.raises(IpcError) as caught:
        host.invoke("settings", SETTINGS_URL, "validate_secret", {"name": "ECHO_KEY"})
    assert caught.value.reason == "secret_binding_mismatch"


def test_host_set_secret_rebinds(host_saved_elsewhere):
    host, record = host_saved_elsewhere
    host.invoke("settings", SETTINGS_URL, "set_secret", {"name": "ECHO_KEY", "value": "echo-key-typed-here"})
    assert host.vault.get("ECHO_KEY") == "echo-key-typed-here"
    assert host.vault.binding_problems() == {}
    pushes = [event for event in read_records(record) if event.get("type") == "set_secret"]
    assert pushes[-1]["name"] == "ECHO_KEY"


def test_memory_vault_helper_binds_on_load(tmp_path):
    manifest = write_app(tmp_path / "app")
    vault = memory_vault(manifest, {"ECHO_KEY": "echo-key-value"})
    assert vault.get("ECHO_KEY") == "echo-key-value"
