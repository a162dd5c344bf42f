"""`keyside net check`: verdict, reason and addresses, exit codes, and no request sent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import test_guard_client
from dns_server import DnsServer
from keyside.cli import main
from test_guard_client import DialSpy

# Fixtures shared with test_guard_client.
dial_spy = test_guard_client.dial_spy



@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["net", "check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("url,reason", [
    ("http://0x7f.1/", "deny_loopback"),
    ("http://169.254.43518/latest/meta-data/", "deny_metadata"),
    ("http://[::ffff:10.0.0.1]/", "deny_private"),
    ("ftp://example.com/", "url_scheme"),
    ("http://user@example.com/", "url_userinfo"),
])
def test_literal_denied(url: str, reason: str, capsys: pytest.CaptureFixture[str], dial_spy: DialSpy) -> None:
    code, out, _ = run(capsys, url)
    assert code == 1
    assert "verdict: deny" in out
    assert f"reason:  {reason}" in out
    assert dial_spy.attempts == []


def test_numeric_spelling_explained(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "http://2130706433:8080/")
    assert code == 1
    assert "url:     http://127.0.0.1:8080/" in out
    assert "127.0.0.1" in out
    assert "a loopback address (deny_loopback)" in out


def test_name_allowed_through_nameserver(capsys: pytest.CaptureFixture[str], dns: DnsServer,
                                         dial_spy: DialSpy) -> None:
    dns.set("api.test", "93.184.215.14", "2606:4700::1")
    code, out, _ = run(capsys, "https://api.test/v1/models", "--nameserver", dns.nameserver)
    assert code == 0
    assert "verdict: allow" in out
    assert "reason:  allow_public" in out
    assert "93.184.215.14" in out
    assert "2606:4700::1" in out
    assert dial_spy.attempts == []


def test_mixed_answers_show_every_address(capsys: pytest.CaptureFixture[str], dns: DnsServer) -> None:
    dns.set("mixed.test", "93.184.215.14", "10.1.2.3")
    code, out, _ = run(capsys, "https://mixed.test/", "--nameserver", dns.nameserver)
    assert code == 1
    assert "reason:  deny_private" in out
    lines = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert lines[0][:2] == ["93.184.215.14", "allow"]
    assert lines[1][:2] == ["10.1.2.3", "deny"]


def test_allow_private_option(capsys: pytest.CaptureFixture[str], dns: DnsServer) -> None:
    dns.set("model.test", "127.0.0.1")
    code, out, _ = run(capsys, "http://model.test:11434/api", "--nameserver", dns.nameserver,
                       "--allow-private", "model.test:11434")
    assert code == 0
    assert "reason:  allow_configured" in out


def test_no_answer(capsys: pytest.CaptureFixture[str], dns: DnsServer) -> None:
    code, out, _ = run(capsys, "https://missing.test/", "--nameserver", dns.nameserver)
    assert code == 1
    assert "reason:  dns_no_answer" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "http://[::ffff:169.254.169.254]/?token=abc123secret", "--json")
    result = json.loads(out)
    assert code == 1
    assert result["verdict"] == "deny"
    assert result["reason"] == "deny_metadata"
    assert result["addresses"][0]["embedded"] == "169.254.169.254"
    assert "abc123secret" not in out


def test_query_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = run(capsys, "http://127.0.0.1/?api_key=sk-secret-value-9")
    assert "sk-secret-value-9" not in out + err


@pytest.mark.parametrize("argv", [
    ["http://x.test/", "--nameserver", "not-an-address"],
    ["http://x.test/", "--nameserver", "dns.example:53"],
    ["http://x.test/", "--allow-private", "127.0.0.1"],
])
def test_bad_option_is_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Fix:" in err


def test_missing_url_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["net", "check"])
    assert caught.value.code == 2


def test_net_without_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["net"]) == 2
    assert "check" in capsys.readouterr().err


@pytest.mark.parametrize("nameserver", ["127.0.0.1", "[::1]", "dns.example:53"])
def test_bad_nameserver_fix_names_dns_port(nameserver: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "http://x.test/", "--nameserver", nameserver)
    assert code == 2
    assert "IP:PORT" in err
    assert '"127.0.0.1:53"' in err
    assert "8080" not in err
    assert "nas.local" not in err


@pytest.mark.parametrize("url,host_port,reason", [
    ("http://127.0.0.1:9/x", "127.0.0.1:9", "deny_loopback"),
    ("http://10.0.0.5:8080/", "10.0.0.5:8080", "deny_private"),
    ("http://[::1]:11434/", "[::1]:11434", "deny_loopback"),
])
def test_liftable_denial_fix_names_options(url: str, host_port: str, reason: str,
                                           capsys: pytest.CaptureFixture[str], dial_spy: DialSpy) -> None:
    code, out, _ = run(capsys, url)
    assert code == 1
    assert f"reason:  {reason}" in out
    assert f"--allow-private {host_port}" in out
    assert f'allow_private = ["{host_port}"] under [network]' in out
    assert "allow_private_network = true" in out
    assert dial_spy.attempts == []


def test_liftable_denial_fix_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "http://127.0.0.1:9/", "--json")
    assert code == 1
    assert "--allow-private 127.0.0.1:9" in json.loads(out)["message"]


def test_metadata_denial_offers_no_allowance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "http://169.254.169.254/")
    assert code == 1
    assert "--allow-private" not in out
    assert "never reachable" in out
