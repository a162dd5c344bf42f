"""The system store: backend checks, error mapping, migration and concurrent writers.

Tests marked secret_service run against the real Secret Service (gnome-keyring under
dbus-run-session, as .ci/run and scripts/netns-pytest start it). The others use small
in-process backends that fail on purpose, for failures a real daemon cannot be made to show.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from contextlib import closing
from pathlib import Path

import keyring
import keyring.core
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import SecretService, fail, null
from keyring.backends.chainer import ChainerBackend
from keyring.errors import InitError, KeyringLocked, NoKeyringError, PasswordDeleteError, PasswordSetError

from conftest import need
from keyside.manifest import load_manifest
from keyside.vault import KeyringStore, Vault, VaultError, open_vault
from keyside.vault.binding import BINDINGS_KEY
from keyside.vault.keyring_store import ENTRY_USERNAME, backend_weakness, check_backend, current_backend

MANIFEST = load_manifest(Path(__file__).parent / "data" / "manifests" / "vault")
ALPHA_VALUE = "sk-alpha-Hc4rT9wQ1"


# In-process backends. Every one has a negative priority, because keyring registers each
# KeyringBackend subclass: a positive priority would let it join keyring's automatic chainer
# and change which backend other tests in this process get.

class DictKeyring(KeyringBackend):
    """A backend in a dict; `failures` maps get/set/delete to the exception that call raises."""

    priority = -1

    def __init__(self):
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}
        self.failures: dict[str, Exception] = {}

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.failures:
            raise self.failures[operation]

    def get_password(self, service, username):
        self._maybe_fail("get")
        return self.entries.get((service, username))

    def set_password(self, service, username, password):
        self._maybe_fail("set")
        self.entries[(service, username)] = password

    def delete_password(self, service, username):
        self._maybe_fail("delete")
        if (service, username) not in self.entries:
            raise PasswordDeleteError("not found")
        del self.entries[(service, username)]


class PlaintextKeyring(DictKeyring):
    """Stands in for keyrings.alt.file.PlaintextKeyring, which this suite does not install."""


class NoEncryptionSchemeKeyring(DictKeyring):
    scheme = "no encryption"


class WrappingKeyring(DictKeyring):
    """Wraps another backend in `_keyring`, as keyrings.alt.multi.MultipartKeyringWrapper does."""

    def __init__(self, inner: KeyringBackend):
        super().__init__()
        self._keyring = inner


def fixed_chainer(*backends: KeyringBackend) -> ChainerBackend:
    class FixedChainer(ChainerBackend):
        priority = -1

    FixedChainer.backends = list(backends)  # type: ignore[misc, assignment]
    return FixedChainer()


def app_manifest(prefix: str = "vt"):
    return dataclasses.replace(MANIFEST, app_id=f"{prefix}-{uuid.uuid4().hex[:12]}")


def write_test_app(folder: Path, app_id: str) -> Path:
    """Write a copy of the vault test app's manifest with `app_id` into `folder` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    text = MANIFEST.path.read_text().replace('id = "vault-test"', f'id = "{app_id}"')
    (folder / "keyside.toml").write_text(text)
    return folder


def dict_store(backend: DictKeyring, tmp_path: Path, manifest=MANIFEST) -> KeyringStore:
    return KeyringStore(manifest.keyring_service, sorted(manifest.secrets), backend=backend,
                        lock_path=tmp_path / "keyring.lock")


# Backend checks

@pytest.mark.parametrize(("case", "make_backend", "reason"), [
    ("fail_backend", fail.Keyring, "vault_unavailable"),
    ("null_backend", null.Keyring, "weak_backend"),
    ("plaintext_by_name", PlaintextKeyring, "weak_backend"),
    ("plaintext_scheme", NoEncryptionSchemeKeyring, "weak_backend"),
    ("chainer_with_null", lambda: fixed_chainer(DictKeyring(), null.Keyring()), "weak_backend"),
    ("chainer_with_plaintext", lambda: fixed_chainer(PlaintextKeyring(), DictKeyring()), "weak_backend"),
    ("wrapper_of_plaintext", lambda: WrappingKeyring(PlaintextKeyring()), "weak_backend"),
])
def test_unsafe_backend_rejected(case, make_backend, reason):
    with pytest.raises(VaultError) as caught:
        check_backend(make_backend())
    assert caught.value.reason == reason
    assert "--vault file" in caught.value.fix


@pytest.mark.parametrize(("case", "make_backend"), [
    ("secret_service", SecretService.Keyring),
    ("dict_backend", DictKeyring),
    ("chainer_of_safe", lambda: fixed_chainer(DictKeyring(), SecretService.Keyring())),
    ("wrapper_of_safe", lambda: WrappingKeyring(DictKeyring())),
])
def test_safe_backend_accepted(case, make_backend):
    backend = make_backend()
    check_backend(backend)
    assert backend_weakness(backend) is None


def test_store_rejects_null_backend_before_use(tmp_path):
    with pytest.raises(VaultError) as caught:
        KeyringStore("keyside.x", [], backend=null.Keyring(), lock_path=tmp_path / "lock")
    assert caught.value.reason == "weak_backend"
    assert "discards" in caught.value.message


@pytest.mark.parametrize(("case", "backend_name"), [
    ("missing_module", "keyside_no_such_module.Keyring"),
    ("missing_class", "keyring.backends.null.NoSuchKeyring"),
])
def test_unloadable_configured_backend(monkeypatch, case, backend_name):
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", backend_name)
    with pytest.raises(VaultError) as caught:
        current_backend()
    assert caught.value.reason == "vault_unavailable"


def test_configured_null_backend_refused(monkeypatch):
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    with pytest.raises(VaultError) as caught:
        open_vault(app_manifest(), "system")
    assert caught.value.reason == "weak_backend"


# Error mapping

@pytest.mark.parametrize(("case", "operation", "error", "reason"), [
    ("locked_on_read", "get", KeyringLocked("Failed to unlock the collection!"), "vault_locked"),
    ("init_error", "get", InitError("Failed to create the collection"), "vault_unavailable"),
    ("no_keyring", "get", NoKeyringError("No recommended backend"), "vault_unavailable"),
    ("backend_specific", "get", RuntimeError("D-Bus connection lost"), "vault_unavailable"),
    ("locked_on_write", "set", KeyringLocked("Failed to unlock the collection!"), "vault_locked"),
    ("set_refused", "set", PasswordSetError("Access denied"), "vault_write_failed"),
    ("backend_specific_write", "set", OSError("disk full"), "vault_write_failed"),
])
def test_backend_errors_mapped(tmp_path, case, operation, error, reason):
    backend = DictKeyring()
    backend.entries[(MANIFEST.keyring_service, ENTRY_USERNAME)] = json.dumps({"ALPHA_KEY": ALPHA_VALUE})
    vault = Vault(MANIFEST, dict_store(backend, tmp_path))
    if operation == "set":
        vault.load()
    backend.failures[operation] = error
    with pytest.raises(VaultError) as caught:
        vault.load() if operation == "get" else vault.set("BETA_KEY", "sk-beta-value")
    assert caught.value.reason == reason
    assert caught.value.fix
    assert str(error) in caught.value.message
    if operation == "set":
        assert vault.snapshot() == {"ALPHA_KEY": ALPHA_VALUE}


def test_backend_error_quoting_value_redacted(tmp_path):
    backend = DictKeyring()
    vault = Vault(MANIFEST, dict_store(backend, tmp_path))
    backend.failures["set"] = RuntimeError(f"cannot store {ALPHA_VALUE!r}")
    with pytest.raises(VaultError) as caught:
        vault.set("ALPHA_KEY", ALPHA_VALUE)
    assert ALPHA_VALUE not in str(caught.value)
    assert "[REDACTED]" in caught.value.message


@pytest.mark.parametrize(("case", "stored"), [
    ("not_json", "ALPHA_KEY=sk-1"),
    ("json_list", '["sk-1"]'),
    ("number_value", '{"ALPHA_KEY": 5}'),
])
def test_corrupt_entry_never_overwritten(tmp_path, case, stored):
    backend = DictKeyring()
    backend.entries[(MANIFEST.keyring_service, ENTRY_USERNAME)] = stored
    vault = Vault(MANIFEST, dict_store(backend, tmp_path))
    for action in (vault.load, lambda: vault.set("ALPHA_KEY", "sk-new")):
        with pytest.raises(VaultError) as caught:
            action()
        assert caught.value.reason == "vault_corrupt"
        assert stored not in str(caught.value)
    assert backend.entries[(MANIFEST.keyring_service, ENTRY_USERNAME)] == stored


class WindowsVaultStandIn(DictKeyring):
    """Carries the name of keyring's Windows backend, whose entries hold at most 2560 bytes."""


WindowsVaultStandIn.__module__ = "keyring.backends.Windows"
WindowsVaultStandIn.__qualname__ = "WinVaultKeyring"


def test_entry_size_limit_checked(tmp_path):
    backend = WindowsVaultStandIn()
    vault = Vault(MANIFEST, dict_store(backend, tmp_path))
    vault.set("ALPHA_KEY", "a" * 1000)
    with pytest.raises(VaultError) as caught:
        vault.set("BETA_KEY", "b" * 1000)
    assert caught.value.reason == "vault_write_failed"
    assert "at most 2560" in caught.value.message
    assert "--vault file" in caught.value.fix
    assert vault.snapshot() == {"ALPHA_KEY": "a" * 1000}
    stored = json.loads(backend.entries[(MANIFEST.keyring_service, ENTRY_USERNAME)])
    assert stored.pop(BINDINGS_KEY)
    assert stored == {"ALPHA_KEY": "a" * 1000}


def test_empty_vault_removes_entry(tmp_path):
    backend = DictKeyring()
    vault = Vault(MANIFEST, dict_store(backend, tmp_path))
    vault.set("ALPHA_KEY", ALPHA_VALUE)
    assert (MANIFEST.keyring_service, ENTRY_USERNAME) in backend.entries
    vault.delete("ALPHA_KEY")
    assert backend.entries == {}


def test_migration_delete_failure_keeps_values(tmp_path, caplog):
    backend = DictKeyring()
    backend.entries[(MANIFEST.keyring_service, "ALPHA_KEY")] = ALPHA_VALUE
    backend.failures["delete"] = KeyringLocked("locked")
    with caplog.at_level(logging.WARNING, logger="keyside.vault.keyring_store"):
        vault = Vault(MANIFEST, dict_store(backend, tmp_path))
        assert vault.get("ALPHA_KEY") == ALPHA_VALUE
    assert "old keyring entry not removed" in caplog.text
    assert ALPHA_VALUE not in caplog.text
    consolidated = json.loads(backend.entries[(MANIFEST.keyring_service, ENTRY_USERNAME)])
    assert json.loads(consolidated.pop(BINDINGS_KEY))["origins"] == {"ALPHA_KEY": []}
    assert consolidated == {"ALPHA_KEY": ALPHA_VALUE}
    assert (MANIFEST.keyring_service, "ALPHA_KEY") in backend.entries


def test_migration_write_failure_keeps_old_entries(tmp_path):
    backend = DictKeyring()
    backend.entries[(MANIFEST.keyring_service, "ALPHA_KEY")] = ALPHA_VALUE
    backend.failures["set"] = PasswordSetError("Access denied")
    with pytest.raises(VaultError) as caught:
        Vault(MANIFEST, dict_store(backend, tmp_path)).load()
    assert caught.value.reason == "vault_write_failed"
    assert backend.entries == {(MANIFEST.keyring_service, "ALPHA_KEY"): ALPHA_VALUE}


# The real Secret Service

def secret_service_running() -> bool:
    if os.environ.get("KEYSIDE_SECRET_SERVICE") == "1":
        return True
    try:
        import secretstorage

        with closing(secretstorage.dbus_init()) as connection:
            return secretstorage.check_service_availability(connection)
    except Exception:  # no session bus, no secretstorage, or a bus that refuses us
        return False


@pytest.fixture
def secret_service():
    need(secret_service_running(), "no Secret Service on the session bus (run under scripts/netns-pytest)")
    need(shutil.which("secret-tool") is not None, "secret-tool (libsecret-tools) is not installed")
    return SecretService.Keyring()


@pytest.fixture
def real_app(secret_service, tmp_path, monkeypatch):
    """A unique app whose keyring entries are removed after the test."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(keyring.core, "_keyring_backend", secret_service)
    manifest = app_manifest()
    yield manifest
    subprocess.run(["secret-tool", "clear", "service", manifest.keyring_service], check=False, timeout=10)


def secret_tool_entries(service: str, username: str | None = None) -> list[str]:
    """Return the item paths secret-tool finds for `service` (and `username`)."""
    command = ["secret-tool", "search", "--all", "service", service]
    if username is not None:
        command += ["username", username]
    result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("[/")]


def secret_tool_lookup(service: str, username: str) -> str:
    result = subprocess.run(["secret-tool", "lookup", "service", service, "username", username],
                            capture_output=True, text=True, timeout=10)
    return result.stdout


@pytest.mark.secret_service
def test_real_round_trip_one_entry(real_app):
    vault = open_vault(real_app)
    assert vault.backend_name == "system (SecretService Keyring)"
    vault.set("ALPHA_KEY", f"  {ALPHA_VALUE}\n")
    vault.set("BETA_KEY", "sk-beta-value")
    assert len(secret_tool_entries(real_app.keyring_service)) == 1
    assert len(secret_tool_entries(real_app.keyring_service, ENTRY_USERNAME)) == 1
    stored = json.loads(secret_tool_lookup(real_app.keyring_service, ENTRY_USERNAME))
    assert stored.pop(BINDINGS_KEY)
    assert stored == {"ALPHA_KEY": ALPHA_VALUE, "BETA_KEY": "sk-beta-value"}
    assert open_vault(real_app).snapshot() == stored


@pytest.mark.secret_service
def test_real_delete_all_removes_entry(real_app):
    vault = open_vault(real_app)
    vault.set("ALPHA_KEY", ALPHA_VALUE)
    assert vault.delete("ALPHA_KEY") is True
    assert secret_tool_entries(real_app.keyring_service) == []
    assert open_vault(real_app).names() == []


@pytest.mark.secret_service
def test_real_migration_from_old_layout(real_app, secret_service):
    service = real_app.keyring_service
    secret_service.set_password(service, "ALPHA_KEY", f" {ALPHA_VALUE} ")
    secret_service.set_password(service, "BETA_KEY", "sk-beta-old")
    assert len(secret_tool_entries(service)) == 2

    vault = open_vault(real_app)
    assert vault.snapshot() == {"ALPHA_KEY": ALPHA_VALUE, "BETA_KEY": "sk-beta-old"}
    assert len(secret_tool_entries(service)) == 1
    assert secret_tool_entries(service, "ALPHA_KEY") == []
    assert secret_tool_entries(service, "BETA_KEY") == []
    assert json.loads(secret_tool_lookup(service, ENTRY_USERNAME))["ALPHA_KEY"] == ALPHA_VALUE


@pytest.mark.secret_service
def test_real_migration_one_entry_wins(real_app, secret_service):
    service = real_app.keyring_service
    secret_service.set_password(service, ENTRY_USERNAME, json.dumps({"ALPHA_KEY": "sk-newer"}))
    secret_service.set_password(service, "ALPHA_KEY", "sk-older")
    assert open_vault(real_app).get("ALPHA_KEY") == "sk-newer"
    assert secret_tool_entries(service, "ALPHA_KEY") == []


@pytest.mark.secret_service
def test_real_threads_lose_no_update(real_app):
    names = sorted(real_app.secrets)
    vaults = [open_vault(real_app), open_vault(real_app)]

    def writer(index: int) -> None:
        for round_number in range(3):
            vaults[index % 2].set(names[index], f"{names[index]}-{round_number}")

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert open_vault(real_app).snapshot() == {name: f"{name}-2" for name in names}


WRITER_SCRIPT = """
import sys
from keyside.manifest import load_manifest
from keyside.vault import open_vault
vault = open_vault(load_manifest(sys.argv[1]), "system")
for round_number in range(int(sys.argv[3])):
    vault.set(sys.argv[2], f"{sys.argv[2]}-{round_number}")
"""


@pytest.mark.secret_service
def test_real_processes_lose_no_update(real_app, tmp_path):
    manifest_dir = write_test_app(tmp_path / "app", real_app.app_id)
    names, rounds = sorted(real_app.secrets), 3
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(manifest_dir), name, str(rounds)],
                         stderr=subprocess.PIPE, env=os.environ.copy())
        for name in names
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=60)
        assert writer.returncode == 0, stderr.decode()
    assert open_vault(real_app).snapshot() == {name: f"{name}-{rounds - 1}" for name in names}
    assert len(secret_tool_entries(real_app.keyring_service)) == 1


class ScratchCollection:
    """A separate gnome-keyring collection with a known password, so locking it leaves the
    login collection of other tests alone. It uses gnome-keyring's internal D-Bus interface
    (CreateWithMasterPassword, UnlockWithMasterPassword), which needs no prompt.
    """

    SERVICE_PATH = "/org/freedesktop/secrets"
    BUS_NAME = "org.freedesktop.secrets"
    INTERNAL = "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface"

    def __init__(self, password: bytes):
        from jeepney import DBusAddress
        from jeepney.io.blocking import open_dbus_connection

        self._address = DBusAddress
        self.connection = open_dbus_connection(bus="SESSION")
        session = self._call(self.SERVICE_PATH, "org.freedesktop.Secret.Service", "OpenSession", "sv",
                             ("plain", ("s", "")))[1]
        self.secret = (session, b"", password, "text/plain")
        label = {"org.freedesktop.Secret.Collection.Label": ("s", f"keyside-test-{uuid.uuid4().hex[:8]}")}
        self.path = self._call(self.SERVICE_PATH, self.INTERNAL, "CreateWithMasterPassword", "a{sv}(oayays)",
                               (label, self.secret))[0]

    def _call(self, path: str, interface: str, method: str, signature: str, body: tuple) -> tuple:
        from jeepney import new_method_call
        from jeepney.wrappers import unwrap_msg

        address = self._address(path, bus_name=self.BUS_NAME, interface=interface)
        reply = self.connection.send_and_get_reply(new_method_call(address, method, signature, body), timeout=10)
        return unwrap_msg(reply)

    def lock(self) -> None:
        self._call(self.SERVICE_PATH, "org.freedesktop.Secret.Service", "Lock", "ao", ([self.path],))

    def unlock(self) -> None:
        self._call(self.SERVICE_PATH, self.INTERNAL, "UnlockWithMasterPassword", "o(oayays)",
                   (self.path, self.secret))

    def close(self) -> None:
        try:
            self.unlock()
            self._call(self.path, "org.freedesktop.Secret.Collection", "Delete", "", ())
        finally:
            self.connection.close()


@pytest.fixture
def scratch_collection(secret_service):
    try:
        collection = ScratchCollection(b"scratch-password")
    except Exception as error:  # a Secret Service other than gnome-keyring lacks the internal interface
        need(False, f"cannot create a scratch collection: {error}")
    yield collection
    collection.close()


@pytest.mark.secret_service
def test_real_locked_collection(scratch_collection, tmp_path):
    backend = SecretService.Keyring()
    backend.preferred_collection = scratch_collection.path
    store = KeyringStore(MANIFEST.keyring_service, sorted(MANIFEST.secrets), backend=backend,
                         lock_path=tmp_path / "keyring.lock")
    Vault(MANIFEST, store).set("ALPHA_KEY", ALPHA_VALUE)

    scratch_collection.lock()
    # Without a display, gnome-keyring cannot show its unlock prompt, so the prompt is dismissed.
    locked = Vault(MANIFEST, store)
    for action in (locked.load, lambda: locked.set("BETA_KEY", "sk-beta")):
        with pytest.raises(VaultError) as caught:
            action()
        assert caught.value.reason == "vault_locked"
        assert "Unlock" in caught.value.fix
        assert "--vault file" in caught.value.fix

    scratch_collection.unlock()
    assert Vault(MANIFEST, store).snapshot() == {"ALPHA_KEY": ALPHA_VALUE}


@pytest.mark.secret_service
def test_real_missing_collection(secret_service, tmp_path):
    backend = SecretService.Keyring()
    backend.preferred_collection = "/org/freedesktop/secrets/collection/keyside_no_such_collection"
    store = KeyringStore(MANIFEST.keyring_service, [], backend=backend, lock_path=tmp_path / "keyring.lock")
    with pytest.raises(VaultError) as caught:
        Vault(MANIFEST, store).load()
    assert caught.value.reason in ("vault_unavailable", "vault_locked")
    assert caught.value.fix
