"""`keyside doctor`: the vault checks with their fixes, exit codes, JSON output and check providers."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import keyring.core
import pytest
from keyring.backends import null

from conftest import need
from keyside.cli import doctor, main
from keyside.cli.common import PASSPHRASE_ENV
from keyside.manifest import load_manifest
from keyside.vault import FileStore, Vault, open_vault
from keyside.vault.file_store import MIN_SCRYPT_N
from test_vault_keyring import secret_service_running, write_test_app

DATA = Path(__file__).parent / "data"
PASSPHRASE = "doctor test passphrase"
SECRET_VALUE = "Hv6sN2kQ8xB4mT1r"


@pytest.fixture(autouse=True)
def only_vault_checks(monkeypatch):
    # Other providers (display, Qt) depend on the machine; these tests are about the vault.
    monkeypatch.setattr(doctor, "CHECK_PROVIDERS", ("keyside.vault.checks",))


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv("KEYSIDE_VAULT", raising=False)
    return write_test_app(tmp_path / "app", f"doc-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def run_doctor(capsys):
    """Run `keyside doctor --json` in this process; return the exit code and the checks by name."""

    def run(*args: str) -> tuple[int, dict[str, dict]]:
        code = main(["doctor", "--json", *args])
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is (code == 0)
        return code, {check["name"]: check for check in report["checks"]}

    return run


def test_memory_vault_report(app_dir, run_doctor):
    code, checks = run_doctor("--app", str(app_dir), "--vault", "memory")
    assert code == 0
    assert checks["keyside"]["status"] == "ok"
    assert checks["manifest"]["status"] == "ok"
    assert checks["vault backend"]["status"] == "warn"
    assert checks["vault"]["detail"].endswith("0 of 4 declared secret(s) set")
    missing = checks["secret ALPHA_KEY"]
    assert missing["status"] == "warn"
    assert "First test key." in missing["detail"]
    assert missing["fix"] == f"Run `keyside secrets set ALPHA_KEY --app {app_dir} --vault memory`."


def test_text_report_shows_fixes(app_dir, capsys):
    code = main(["doctor", "--app", str(app_dir), "--vault", "memory"])
    output = capsys.readouterr().out
    assert code == 0
    assert "[warn] secret BETA_KEY" in output
    assert "fix: Run `keyside secrets set BETA_KEY" in output
    assert output.rstrip().endswith("0 failed, 5 warning(s), 3 ok")


@pytest.mark.secret_service
def test_system_vault_report(app_dir, run_doctor, monkeypatch):
    need(secret_service_running(), "no Secret Service on the session bus (run under scripts/netns-pytest)")
    manifest = load_manifest(app_dir)
    vault = open_vault(manifest)
    vault.set("ALPHA_KEY", SECRET_VALUE)
    try:
        code, checks = run_doctor("--app", str(app_dir))
    finally:
        vault.delete("ALPHA_KEY")
    assert code == 0
    assert checks["vault backend"] == {"name": "vault backend", "status": "ok",
                                       "detail": "system: SecretService Keyring", "fix": None}
    assert checks["secret ALPHA_KEY"]["status"] == "ok"
    assert checks["secret BETA_KEY"]["status"] == "warn"
    assert SECRET_VALUE not in json.dumps(checks)


def test_weak_backend_fails(app_dir, run_doctor, monkeypatch):
    monkeypatch.setattr(keyring.core, "_keyring_backend", null.Keyring())
    code, checks = run_doctor("--app", str(app_dir))
    assert code == 1
    backend = checks["vault backend"]
    assert backend["status"] == "fail"
    assert "weak_backend" in backend["detail"]
    assert "PYTHON_KEYRING_BACKEND" in backend["fix"]
    assert "vault" not in checks


@pytest.mark.parametrize(("case", "manifest_text", "status"), [
    ("missing_folder", None, "fail"),
    ("invalid_manifest", '[app]\nid = "Bad Id"\nname = "X"\n', "fail"),
])
def test_manifest_problems_fail(tmp_path, run_doctor, case, manifest_text, status):
    folder = tmp_path / "app"
    if manifest_text is not None:
        folder.mkdir()
        (folder / "keyside.toml").write_text(manifest_text)
    code, checks = run_doctor("--app", str(folder), "--vault", "memory")
    assert code == 1
    assert checks["manifest"]["status"] == status
    assert checks["manifest"]["fix"]


def test_no_app_chosen_only_warns(tmp_path, run_doctor, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("keyside.manifest.DEFAULT_APP", "no-such-bundled-app")
    code, checks = run_doctor("--vault", "memory")
    assert code == 0
    assert checks["manifest"]["status"] == "warn"
    assert checks["vault backend"]["status"] == "warn"


@pytest.fixture
def vault_file(app_dir, tmp_path):
    path = tmp_path / "vault.enc"
    Vault(load_manifest(app_dir), FileStore(path, PASSPHRASE, scrypt_n=MIN_SCRYPT_N)).set("ALPHA_KEY", SECRET_VALUE)
    return path


def test_file_vault_without_passphrase(app_dir, vault_file, run_doctor):
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(vault_file))
    assert code == 0
    assert checks["vault backend"]["status"] == "ok"
    assert f"scrypt n={MIN_SCRYPT_N}" in checks["vault backend"]["detail"]
    assert checks["vault passphrase"]["status"] == "warn"
    assert "secret ALPHA_KEY" not in checks


def test_file_vault_with_passphrase(app_dir, vault_file, run_doctor, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(vault_file))
    assert code == 0
    assert checks["secret ALPHA_KEY"]["status"] == "ok"
    assert checks["secret BETA_KEY"]["fix"].endswith(f"--vault file --vault-file {vault_file}`.")
    assert SECRET_VALUE not in json.dumps(checks)


def test_file_vault_wrong_passphrase(app_dir, vault_file, run_doctor, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(vault_file))
    assert code == 1
    assert checks["vault"]["status"] == "fail"
    assert "wrong_passphrase" in checks["vault"]["detail"]


def test_file_vault_missing_file(app_dir, tmp_path, run_doctor):
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(tmp_path / "none.enc"))
    assert code == 0
    assert checks["vault backend"]["status"] == "warn"
    assert "does not exist yet" in checks["vault backend"]["detail"]


@pytest.mark.parametrize("with_passphrase", [False, True], ids=["no-passphrase", "passphrase-in-environment"])
def test_file_vault_missing_creates_nothing(app_dir, tmp_path, run_doctor, monkeypatch, with_passphrase):
    missing = tmp_path / "typo-folder" / "none.enc"
    if with_passphrase:
        monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(missing))
    assert code == 0
    assert "does not exist yet" in checks["vault backend"]["detail"]
    assert not missing.exists()
    assert not missing.with_name(missing.name + ".lock").exists()
    assert not missing.parent.exists()


def test_file_vault_corrupt(app_dir, vault_file, run_doctor):
    vault_file.write_text("not a vault")
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(vault_file))
    assert code == 1
    assert checks["vault backend"]["status"] == "fail"
    assert checks["vault backend"]["fix"]


def test_file_vault_loose_mode(app_dir, vault_file, run_doctor):
    vault_file.chmod(0o644)
    code, checks = run_doctor("--app", str(app_dir), "--vault", "file", "--vault-file", str(vault_file))
    assert code == 0
    assert checks["vault file permissions"]["status"] == "warn"
    assert checks["vault file permissions"]["fix"] == f"Run `chmod 600 {vault_file}`."


PROVIDERS = {
    "doctor_good_provider": """
        from keyside.cli.doctor import Check, OK
        def checks(args):
            return [Check("display", OK, "a display is available")]
    """,
    "doctor_broken_provider": """
        def checks(args):
            raise RuntimeError("provider bug")
    """,
    "doctor_needs_package": """
        import keyside_package_that_is_not_installed
        def checks(args):
            return []
    """,
}


def test_check_providers(app_dir, tmp_path, run_doctor, monkeypatch):
    for name, source in PROVIDERS.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    providers = ("keyside.vault.checks", "doctor_not_installed_provider", *PROVIDERS)
    monkeypatch.setattr(doctor, "CHECK_PROVIDERS", providers)
    code, checks = run_doctor("--app", str(app_dir), "--vault", "memory")
    assert code == 1
    assert "doctor_not_installed_provider" not in checks
    assert checks["display"]["status"] == "ok"
    assert checks["doctor_broken_provider"]["status"] == "fail"
    assert "provider bug" in checks["doctor_broken_provider"]["detail"]
    assert checks["doctor_needs_package"]["status"] == "fail"
    assert "keyside_package_that_is_not_installed" in checks["doctor_needs_package"]["fix"]


def test_check_status_validated():
    with pytest.raises(ValueError):
        doctor.Check("x", "maybe", "detail")
