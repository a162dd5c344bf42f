"""Vault semantics over any store: allow-list, trimming, empty deletes, persist-then-cache, threads."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from keyside.manifest import load_manifest
from keyside.vault import MAX_SECRET_VALUE_CHARS, MemoryStore, Vault, VaultError, open_vault
from keyside.vault.binding import BINDINGS_KEY
from keyside.vault.errors import VAULT_WRITE_FAILED
from keyside.vault.store import Change, Entries, decode_entries, encode_entries

MANIFEST = load_manifest(Path(__file__).parent / "data" / "manifests" / "vault")


class FailingStore(MemoryStore):
    """A memory store whose writes fail on demand, to show that the cache follows the store."""

    def __init__(self, initial: Entries | None = None):
        super().__init__(initial)
        self.fail_writes = False
        self.loads = 0

    def load(self) -> Entries:
        self.loads += 1
        return super().load()

    def update(self, change: Change) -> Entries:
        if self.fail_writes:
            change(self.load())  # the change runs, as it would before a real write fails
            raise VaultError("simulated write failure", reason=VAULT_WRITE_FAILED)
        return super().update(change)


@pytest.fixture
def vault():
    return open_vault(MANIFEST, "memory")


def test_memory_vault_identity(vault):
    assert vault.kind == "memory"
    assert "memory" in vault.backend_name
    assert vault.names() == []


@pytest.mark.parametrize(("given", "stored"), [
    ("sk-abc", "sk-abc"),
    ("  sk-abc  ", "sk-abc"),
    ("\tsk-abc\n", "sk-abc"),
    ("sk-äöü-ключ", "sk-äöü-ключ"),
    ("a b", "a b"),
])
def test_set_trims_value(vault, given, stored):
    vault.set("ALPHA_KEY", given)
    assert vault.get("ALPHA_KEY") == stored
    assert vault.is_configured("ALPHA_KEY")


@pytest.mark.parametrize("empty", ["", "   ", "\n\t "])
def test_empty_value_deletes(vault, empty):
    vault.set("ALPHA_KEY", "sk-abc")
    vault.set("ALPHA_KEY", empty)
    assert vault.get("ALPHA_KEY") is None
    assert not vault.is_configured("ALPHA_KEY")


@pytest.mark.parametrize(("case", "value"), [
    ("line_break_inside", "sk-abc\ndef"),
    ("carriage_return", "sk-abc\rX-Injected: 1"),
    ("nul", "sk\x00abc"),
    ("delete_character", "sk\x7fabc"),
    ("too_long", "k" * (MAX_SECRET_VALUE_CHARS + 1)),
    ("not_text", b"sk-bytes"),
])
def test_invalid_value_rejected(vault, case, value):
    vault.set("ALPHA_KEY", "sk-previous")
    with pytest.raises(VaultError) as caught:
        vault.set("ALPHA_KEY", value)
    assert caught.value.reason == "invalid_secret_value"
    assert vault.get("ALPHA_KEY") == "sk-previous"
    if isinstance(value, str) and len(value) > 4:
        assert value.strip() not in str(caught.value)


def test_max_length_value_accepted(vault):
    vault.set("ALPHA_KEY", "k" * MAX_SECRET_VALUE_CHARS)
    assert len(vault.get("ALPHA_KEY")) == MAX_SECRET_VALUE_CHARS


@pytest.mark.parametrize("operation", ["set", "get", "delete", "is_configured"])
def test_undeclared_name_rejected(vault, operation):
    arguments = ("OPENAI_API_KEY", "sk-x") if operation == "set" else ("OPENAI_API_KEY",)
    with pytest.raises(VaultError) as caught:
        getattr(vault, operation)(*arguments)
    assert caught.value.reason == "unknown_secret"
    assert "ALPHA_KEY" in caught.value.fix


def test_undeclared_name_quoted_briefly(vault):
    pasted_key = "sk-" + "x" * 200
    with pytest.raises(VaultError) as caught:
        vault.set(pasted_key, "value")
    assert pasted_key not in str(caught.value)


def test_names_and_snapshot_sorted_copy(vault):
    vault.set("GAMMA_KEY", "g")
    vault.set("ALPHA_KEY", "a")
    assert vault.names() == ["ALPHA_KEY", "GAMMA_KEY"]
    snapshot = vault.snapshot()
    assert snapshot == {"ALPHA_KEY": "a", "GAMMA_KEY": "g"}
    snapshot["ALPHA_KEY"] = "changed"
    assert vault.get("ALPHA_KEY") == "a"


def test_undeclared_stored_entries_hidden_and_kept():
    store = MemoryStore({"ALPHA_KEY": "a", "REMOVED_KEY": "old"})
    vault = Vault(MANIFEST, store)
    assert vault.names() == ["ALPHA_KEY"]
    assert vault.snapshot() == {"ALPHA_KEY": "a"}
    vault.set("BETA_KEY", "b")
    assert store.load()["REMOVED_KEY"] == "old"


def test_delete_reports_existence(vault):
    assert vault.delete("ALPHA_KEY") is False
    vault.set("ALPHA_KEY", "a")
    assert vault.delete("ALPHA_KEY") is True
    assert vault.delete("ALPHA_KEY") is False


def test_load_runs_once():
    store = FailingStore({"ALPHA_KEY": "a"})
    vault = Vault(MANIFEST, store)
    vault.load()
    vault.load()
    vault.names()
    assert store.loads == 1


def test_failed_write_keeps_cache():
    store = FailingStore({"ALPHA_KEY": "a"})
    vault = Vault(MANIFEST, store)
    store.fail_writes = True
    with pytest.raises(VaultError) as caught:
        vault.set("ALPHA_KEY", "new")
    assert caught.value.reason == VAULT_WRITE_FAILED
    with pytest.raises(VaultError):
        vault.delete("ALPHA_KEY")
    assert vault.get("ALPHA_KEY") == "a"
    assert store.load() == {"ALPHA_KEY": "a"}


def test_cache_takes_other_writers_changes():
    store = MemoryStore()
    first, second = Vault(MANIFEST, store), Vault(MANIFEST, store)
    first.load()
    second.set("BETA_KEY", "b")
    first.set("ALPHA_KEY", "a")
    assert first.snapshot() == {"ALPHA_KEY": "a", "BETA_KEY": "b"}


def test_threads_lose_no_update():
    store = MemoryStore()
    vaults = [Vault(MANIFEST, store), Vault(MANIFEST, store)]
    names = sorted(MANIFEST.secrets)

    def writer(index: int) -> None:
        vault = vaults[index % 2]
        for round_number in range(50):
            vault.set(names[index], f"value-{index}-{round_number}")

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stored = store.load()
    assert json.loads(stored.pop(BINDINGS_KEY))["origins"] == {name: [] for name in names}
    assert stored == {name: f"value-{index}-49" for index, name in enumerate(names)}


def test_unknown_vault_kind():
    with pytest.raises(VaultError) as caught:
        open_vault(MANIFEST, "cloud")
    assert caught.value.reason == "unknown_vault_kind"


def test_file_kind_needs_passphrase(tmp_path):
    with pytest.raises(VaultError) as caught:
        open_vault(MANIFEST, "file", file_path=tmp_path / "v.enc")
    assert caught.value.reason == "passphrase_required"


def test_default_file_path_in_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    manifest = dataclasses.replace(MANIFEST, app_id="path-check")
    vault = open_vault(manifest, "file", passphrase="long enough passphrase")
    assert str(tmp_path / "keyside" / "path-check" / "vault.enc") in vault.backend_name


@pytest.mark.parametrize(("case", "text", "reason"), [
    ("not_json", "{oops", "vault_corrupt"),
    ("array", "[1, 2]", "vault_corrupt"),
    ("number_value", '{"ALPHA_KEY": 1}', "vault_corrupt"),
    ("null_value", '{"ALPHA_KEY": null}', "vault_corrupt"),
])
def test_decode_entries_rejects(case, text, reason):
    with pytest.raises(VaultError) as caught:
        decode_entries(text, source="entry", fix="fix it")
    assert caught.value.reason == reason


def test_encode_entries_round_trip():
    entries = {"B_KEY": "b", "A_KEY": "ä \"quoted\""}
    text = encode_entries(entries)
    assert text.index("A_KEY") < text.index("B_KEY")
    assert decode_entries(text, source="entry", fix="") == entries


def test_file_path_only_for_file_vault(tmp_path):
    from keyside.manifest import load_manifest
    from keyside.vault import open_vault

    manifest = load_manifest("monitor")
    vault_file = tmp_path / "vault.enc"
    assert open_vault(manifest, "memory").file_path is None
    file_vault = open_vault(manifest, "file", file_path=vault_file, passphrase="correct horse battery")
    assert file_vault.file_path == vault_file
