"""URL check: the table in tests/data/ssrf_urls.toml and numeric IPv4 parsing against inet_aton."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyside.guard import GuardDenied, check_url, parse_host_port
from keyside.guard.urls import MAX_URL_CHARS, _ipv4_from_inet_aton

CASES = tomllib.loads((Path(__file__).parent / "data" / "ssrf_urls.toml").read_text())["case"]
URL_LEVEL = [case for case in CASES if case["reason"].startswith("url_")]
PARSED = [case for case in CASES if not case["reason"].startswith("url_")]


@pytest.mark.parametrize("case", URL_LEVEL, ids=[case["id"] for case in URL_LEVEL])
def test_url_rejected(case: dict) -> None:
    with pytest.raises(GuardDenied) as caught:
        check_url(case["url"])
    assert caught.value.reason == case["reason"]


@pytest.mark.parametrize("case", PARSED, ids=[case["id"] for case in PARSED])
def test_url_normalised(case: dict) -> None:
    checked = check_url(case["url"])
    if "normalised" in case:
        assert checked.url == case["normalised"]
    if "host" in case:
        assert checked.host == case["host"]
    if "address" in case:
        assert str(checked.address) == case["address"]
    assert checked.url.startswith(f"{checked.scheme}://")


def test_url_table_ids_unique() -> None:
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))


def test_normalised_url_is_a_fixed_point() -> None:
    for case in PARSED:
        checked = check_url(case["url"])
        assert check_url(checked.url) == checked


def test_url_too_long() -> None:
    with pytest.raises(GuardDenied) as caught:
        check_url("https://api.example.com/" + "a" * MAX_URL_CHARS)
    assert caught.value.reason == "url_too_long"


def test_url_not_a_string() -> None:
    with pytest.raises(GuardDenied) as caught:
        check_url(b"http://example.com/")  # type: ignore[arg-type]
    assert caught.value.reason == "url_invalid"


def test_message_omits_query() -> None:
    with pytest.raises(GuardDenied) as caught:
        check_url("http://example.com:0/?api_key=sk-live-123456")
    assert "sk-live-123456" not in str(caught.value)


def test_checked_url_parts() -> None:
    checked = check_url("https://[2606:4700::1]:8443/a?b=c")
    assert checked.scheme == "https"
    assert checked.host == "2606:4700::1"
    assert checked.port == 8443
    assert checked.path_query == "/a?b=c"
    assert checked.origin == ("https", "2606:4700::1", 8443)
    assert checked.host_port == "[2606:4700::1]:8443"


# Numeric host spellings: the guard must read them exactly as the OS's inet_aton(3) does,
# otherwise the resolver would dial an address the guard never classified.
decimal_part = st.integers(0, 2**32 - 1).map(str)
octal_part = st.integers(0, 2**32 - 1).map(lambda n: "0" + format(n, "o"))
hex_part = st.integers(0, 2**32 - 1).map(lambda n: "0x" + format(n, "x"))
upper_hex_part = st.integers(0, 2**32 - 1).map(lambda n: "0X" + format(n, "X"))
odd_part = st.sampled_from(["0x", "08", "09", "0", "00", "", "1e3", "-1"])
numeric_part = st.one_of(decimal_part, octal_part, hex_part, upper_hex_part, odd_part,
                         st.integers(0, 300).map(str))
numeric_host = st.lists(numeric_part, min_size=1, max_size=5).map(".".join)


def _os_inet_aton(text: str) -> str | None:
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        return None


@given(numeric_host)
def test_numeric_host_matches_inet_aton(host: str) -> None:
    ours = _ipv4_from_inet_aton(host)
    assert (str(ours) if ours is not None else None) == _os_inet_aton(host)


@given(numeric_host)
def test_numeric_host_url_never_resolved_as_name(host: str) -> None:
    # A host that inet_aton reads as a number must become that address: it never reaches a
    # resolver as a name, and it is never rejected in a way that hides its real meaning.
    # One trailing dot is stripped first, as for every host.
    expected = _os_inet_aton(host[:-1] if host.endswith(".") else host)
    try:
        checked = check_url(f"http://{host}/")
    except GuardDenied as error:
        assert expected is None
        assert error.reason == "url_invalid_host"
        return
    if expected is None:
        assert checked.address is None
    else:
        assert str(checked.address) == expected


@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:11434", ("::1", 11434)),
    ("LocalHost:80", ("localhost", 80)),
    ("0x7f.1:9000", ("127.0.0.1", 9000)),
    ("nas.local.:5000", ("nas.local", 5000)),
])
def test_host_port_parsed(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


@pytest.mark.parametrize("value", ["127.0.0.1", "localhost:", "host:0", "a@b:80", "[::1]", "x y:80", "h:99999"])
def test_host_port_rejected(value: str) -> None:
    with pytest.raises(GuardDenied) as caught:
        parse_host_port(value)
    assert caught.value.reason == "invalid_host_port"
