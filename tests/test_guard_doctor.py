"""`keyside doctor` guard checks: network settings and service upstreams, offline."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from keyside.guard.checks import checks
from keyside.manifest import NetworkSpec, parse_manifest


def _manifest(tmp_path: Path, services: dict, network: dict | None = None):
    (tmp_path / "pages").mkdir()
    data = {"app": {"id": "doctor-test", "name": "Doctor test"}, "services": services}
    if network is not None:
        data["network"] = network
    return parse_manifest(tmp_path / "keyside.toml", data)


def _by_name(results: list) -> dict:
    return {check.name: check for check in results}


def test_no_manifest_only_summary() -> None:
    results = checks(argparse.Namespace(manifest=None))
    assert [check.name for check in results] == ["outbound guard"]
    assert results[0].status == "ok"


def test_upstreams_checked(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {
        "public": {"upstream": "https://api.example.com"},
        "local": {"upstream": "http://127.0.0.1:11434", "allow_private_network": True},
        "metadata": {"upstream": "http://169.254.169.254", "allow_private_network": True},
    })
    results = _by_name(checks(argparse.Namespace(manifest=manifest)))
    assert results["service public upstream"].status == "ok"
    assert results["service local upstream"].status == "ok"
    assert "allow_configured" in results["service local upstream"].detail
    assert results["service metadata upstream"].status == "fail"
    assert "deny_metadata" in results["service metadata upstream"].detail


def test_network_settings_reported(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {}, {"allow_private": ["127.0.0.1:8080"], "nameservers": ["127.0.0.1:5353"]})
    results = _by_name(checks(argparse.Namespace(manifest=manifest)))
    assert results["network allow_private"].status == "warn"
    assert "127.0.0.1:8080" in results["network allow_private"].detail
    assert results["network nameservers"].status == "ok"


def test_bad_nameserver_fails(tmp_path: Path) -> None:
    # The loader rejects a host name here too; the doctor check covers manifests built in code.
    manifest = dataclasses.replace(
        _manifest(tmp_path, {}, {}), network=NetworkSpec(nameservers=("dns.example:53",))
    )
    results = _by_name(checks(argparse.Namespace(manifest=manifest)))
    assert results["network nameservers"].status == "fail"
    assert results["network nameservers"].fix
