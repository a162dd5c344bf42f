"""The encrypted file vault: round trips, file mode, wrong passphrase, tampering, atomic writes,
and concurrent writers in threads and processes. Tampering cases are in data/vault/file_tampering.json.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from keyside.manifest import load_manifest
from keyside.vault import FileStore, Vault, VaultError
from keyside.vault.file_store import MAX_SCRYPT_N, MIN_SCRYPT_N, SCRYPT_N, read_header

DATA = Path(__file__).parent / "data"
MANIFEST = load_manifest(DATA / "manifests" / "vault")
TAMPERING = json.loads((DATA / "vault" / "file_tampering.json").read_text())["cases"]
PASSPHRASE = "correct horse battery"
ALPHA_VALUE = "sk-alpha-Qm3vX8pL2"
BETA_VALUE = "sk-beta-Wr7nK4tJ9"


def open_file_vault(path: Path, passphrase: str = PASSPHRASE) -> Vault:
    # The lowest accepted scrypt cost keeps each key derivation near 50 ms in tests.
    return Vault(MANIFEST, FileStore(path, passphrase, scrypt_n=MIN_SCRYPT_N))


@pytest.fixture
def vault_path(tmp_path):
    path = tmp_path / "vault.enc"
    vault = open_file_vault(path)
    vault.set("ALPHA_KEY", ALPHA_VALUE)
    vault.set("BETA_KEY", BETA_VALUE)
    return path


def snapshot_file(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_round_trip_new_instance(vault_path):
    vault = open_file_vault(vault_path)
    assert vault.snapshot() == {"ALPHA_KEY": ALPHA_VALUE, "BETA_KEY": BETA_VALUE}
    assert vault.kind == "file"
    assert str(vault_path) in vault.backend_name


def test_file_hides_names_and_values(vault_path):
    content = vault_path.read_bytes()
    for text in (ALPHA_VALUE, BETA_VALUE, "ALPHA_KEY", "BETA_KEY", PASSPHRASE):
        assert text.encode() not in content


def test_file_format_header(vault_path):
    document = json.loads(vault_path.read_text())
    assert document["format"] == "keyside-file-vault"
    assert document["version"] == 1
    assert document["cipher"] == "AES-256-GCM"
    assert document["kdf"]["name"] == "scrypt"
    assert document["kdf"]["n"] == MIN_SCRYPT_N
    assert len(base64.b64decode(document["nonce"])) == 12
    assert read_header(vault_path) == {"version": 1, "n": MIN_SCRYPT_N, "r": 8, "p": 1}


def test_each_write_uses_new_nonce(vault_path):
    first = json.loads(vault_path.read_text())["nonce"]
    open_file_vault(vault_path).set("GAMMA_KEY", "g-value")
    assert json.loads(vault_path.read_text())["nonce"] != first


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_file_and_lock_mode_0600(vault_path):
    assert stat.S_IMODE(vault_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(vault_path.with_name("vault.enc.lock").stat().st_mode) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_missing_folder_created_private(tmp_path):
    path = tmp_path / "new" / "deeper" / "vault.enc"
    open_file_vault(path).set("ALPHA_KEY", "a-value")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert open_file_vault(path).get("ALPHA_KEY") == "a-value"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_loose_mode_warned_then_fixed(vault_path, caplog):
    vault_path.chmod(0o644)
    vault = open_file_vault(vault_path)
    with caplog.at_level(logging.WARNING, logger="keyside.vault.file_store"):
        vault.load()
    assert "readable by others" in caplog.text
    vault.set("GAMMA_KEY", "g-value")
    assert stat.S_IMODE(vault_path.stat().st_mode) == 0o600


def test_no_temporary_files_left(vault_path):
    open_file_vault(vault_path).delete("ALPHA_KEY")
    assert sorted(path.name for path in vault_path.parent.iterdir()) == ["vault.enc", "vault.enc.lock"]


def test_missing_file_loads_empty_without_writing(tmp_path):
    path = tmp_path / "vault.enc"
    vault = open_file_vault(path)
    assert vault.names() == []
    assert vault.delete("ALPHA_KEY") is False
    assert not path.exists()


def test_emptied_vault_keeps_file(vault_path):
    vault = open_file_vault(vault_path)
    vault.delete("ALPHA_KEY")
    vault.delete("BETA_KEY")
    assert open_file_vault(vault_path).names() == []


def test_wrong_passphrase_never_writes(vault_path):
    before = snapshot_file(vault_path)
    vault = open_file_vault(vault_path, "wrong horse battery")
    for action in (vault.load, lambda: vault.set("GAMMA_KEY", "g"), lambda: vault.delete("ALPHA_KEY")):
        with pytest.raises(VaultError) as caught:
            action()
        assert caught.value.reason == "wrong_passphrase"
        assert "wrong horse" not in str(caught.value)
    assert snapshot_file(vault_path) == before
    assert open_file_vault(vault_path).get("ALPHA_KEY") == ALPHA_VALUE


def test_logs_hide_values_and_passphrase(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="keyside")
    path = tmp_path / "vault.enc"
    vault = open_file_vault(path)
    vault.set("ALPHA_KEY", ALPHA_VALUE)
    vault.set("BETA_KEY", BETA_VALUE)
    path.chmod(0o644)
    reopened = open_file_vault(path)
    assert reopened.get("ALPHA_KEY") == ALPHA_VALUE
    reopened.delete("BETA_KEY")

    assert "file vault written" in caplog.text
    assert "file vault readable by others" in caplog.text
    assert ALPHA_VALUE not in caplog.text
    assert BETA_VALUE not in caplog.text
    assert PASSPHRASE not in caplog.text


@pytest.mark.parametrize("case", TAMPERING, ids=[case["id"] for case in TAMPERING])
def test_tampered_file_rejected_unchanged(vault_path, case):
    tamper(vault_path, case)
    before = snapshot_file(vault_path)
    vault = open_file_vault(vault_path)
    with pytest.raises(VaultError) as caught:
        vault.load()
    assert caught.value.reason == case["reason"]
    assert str(vault_path) in caught.value.message
    assert caught.value.fix
    assert ALPHA_VALUE not in str(caught.value)
    with pytest.raises(VaultError):
        vault.set("GAMMA_KEY", "g-value")
    assert snapshot_file(vault_path) == before


def tamper(path: Path, case: dict) -> None:
    if case["op"] == "raw":
        text = case["value"] * case.get("repeat", 1)
        path.write_bytes(text.encode(case.get("encoding", "utf-8")))
        return
    document = json.loads(path.read_text())
    *parents, leaf = case["field"].split(".")
    table = document
    for key in parents:
        table = table[key]
    if case["op"] == "set":
        table[leaf] = case["value"]
    elif case["op"] == "delete":
        del table[leaf]
    else:
        raw = bytearray(base64.b64decode(table[leaf]))
        if case["op"] == "flip_byte":
            raw[0] ^= 0x01
        elif case["op"] == "flip_last_byte":
            raw[-1] ^= 0x80
        elif case["op"] == "drop_last_byte":
            del raw[-1]
        else:
            raise AssertionError(f"unknown tamper op {case['op']}")
        table[leaf] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(("passphrase", "reason"), [
    ("", "passphrase_required"),
    (None, "passphrase_required"),
])
def test_missing_passphrase_rejected(tmp_path, passphrase, reason):
    with pytest.raises(VaultError) as caught:
        FileStore(tmp_path / "vault.enc", passphrase)
    assert caught.value.reason == reason


def test_short_passphrase_creates_nothing(tmp_path):
    path = tmp_path / "vault.enc"
    vault = open_file_vault(path, "short")
    with pytest.raises(VaultError) as caught:
        vault.set("ALPHA_KEY", "a-value")
    assert caught.value.reason == "weak_passphrase"
    assert not path.exists()
    assert vault.get("ALPHA_KEY") is None


def test_unicode_passphrase_normalized(tmp_path):
    path = tmp_path / "vault.enc"
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    open_file_vault(path, composed).set("ALPHA_KEY", "a-value")
    assert open_file_vault(path, decomposed).get("ALPHA_KEY") == "a-value"


@pytest.mark.parametrize("cost", [MIN_SCRYPT_N // 2, MAX_SCRYPT_N * 2, 20000])
def test_scrypt_cost_bounds(tmp_path, cost):
    with pytest.raises(ValueError):
        FileStore(tmp_path / "vault.enc", PASSPHRASE, scrypt_n=cost)


def test_default_cost_for_new_files(tmp_path):
    assert SCRYPT_N >= 2**17
    assert FileStore(tmp_path / "vault.enc", PASSPHRASE)._scrypt_n == SCRYPT_N


def test_failed_rename_keeps_old_file(vault_path, monkeypatch):
    before = snapshot_file(vault_path)
    vault = open_file_vault(vault_path)
    vault.load()

    def refuse_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse_replace)
    with pytest.raises(VaultError) as caught:
        vault.set("ALPHA_KEY", "new-value")
    assert caught.value.reason == "vault_write_failed"
    assert "No space left" in caught.value.message
    assert vault.get("ALPHA_KEY") == ALPHA_VALUE
    assert snapshot_file(vault_path) == before
    assert sorted(path.name for path in vault_path.parent.iterdir()) == ["vault.enc", "vault.enc.lock"]


def test_threads_lose_no_update(vault_path):
    names = ["ALPHA_KEY", "BETA_KEY", "GAMMA_KEY", "DELTA_KEY"]

    def writer(name: str) -> None:
        vault = open_file_vault(vault_path)
        for round_number in range(5):
            vault.set(name, f"{name}-{round_number}")

    threads = [threading.Thread(target=writer, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert open_file_vault(vault_path).snapshot() == {name: f"{name}-4" for name in names}


WRITER_SCRIPT = """
import sys
from keyside.manifest import load_manifest
from keyside.vault import open_vault
manifest = load_manifest(sys.argv[1])
vault = open_vault(manifest, "file", file_path=sys.argv[2], passphrase=sys.argv[3])
for round_number in range(int(sys.argv[5])):
    vault.set(sys.argv[4], f"{sys.argv[4]}-{round_number}")
"""


def test_processes_lose_no_update(vault_path):
    names = ["ALPHA_KEY", "BETA_KEY", "GAMMA_KEY", "DELTA_KEY"]
    rounds = 4
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(MANIFEST.path), str(vault_path), PASSPHRASE,
                          name, str(rounds)], stderr=subprocess.PIPE)
        for name in names
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=60)
        assert writer.returncode == 0, stderr.decode()
    assert open_file_vault(vault_path).snapshot() == {name: f"{name}-{rounds - 1}" for name in names}
