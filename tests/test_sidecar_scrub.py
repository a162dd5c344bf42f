"""Scrubbing of secret values from bodies that arrive in chunks, and redaction of log records."""

from __future__ import annotations

import base64
import json
import logging
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyside.manifest import InjectSpec, ServiceSpec
from keyside.redact import MASK, RedactingFilter, Redactor, strip_url_queries
from keyside.sidecar.keystore import BASE64_MIN_BYTES, KeyStore, base64_forms, basic_credential, leak_forms
from keyside.sidecar.scrub import ScrubPattern

SECRET = "sk-live-4f9a8b7c6d5e4f3a2b1c"
OTHER = "ghp_ABCDEFGHIJKLMNOP1234"
PATTERN = ScrubPattern([SECRET, OTHER, "sk-live"])


def scrub_in_chunks(pattern: ScrubPattern, data: bytes, cuts: list[int]) -> bytes:
    scrubber = pattern.stream()
    pieces = []
    previous = 0
    for cut in sorted(set(cuts)):
        pieces.append(scrubber.feed(data[previous:cut]))
        previous = cut
    pieces.append(scrubber.feed(data[previous:]))
    pieces.append(scrubber.finish())
    return b"".join(pieces)


@pytest.mark.parametrize("split", range(0, 60))
def test_scrub_secret_split_at_every_byte(split: int) -> None:
    body = f'{{"echo": "{SECRET}", "n": 1}}'.encode()
    output = scrub_in_chunks(PATTERN, body, [split])
    assert SECRET.encode() not in output
    assert output == f'{{"echo": "{MASK}", "n": 1}}'.encode()


def test_scrub_secret_one_byte_per_chunk() -> None:
    body = f"data: {SECRET}\n\ndata: {OTHER}\n\n".encode()
    output = scrub_in_chunks(PATTERN, body, list(range(len(body))))
    assert output == f"data: {MASK}\n\ndata: {MASK}\n\n".encode()


def test_scrub_longer_value_wins_over_its_prefix() -> None:
    # "sk-live" is itself a value and a prefix of SECRET; SECRET must be masked whole.
    output = scrub_in_chunks(PATTERN, f"a {SECRET} b sk-live c".encode(), [9])
    assert output == f"a {MASK} b {MASK} c".encode()


def test_scrub_flushes_through_newline() -> None:
    # An SSE event ending in a newline must go out at once: no value can span a newline.
    scrubber = PATTERN.stream()
    event = b'data: {"delta": "sk-li"}\n\n'
    assert scrubber.feed(event) == event


def test_scrub_holds_only_possible_value_start() -> None:
    scrubber = PATTERN.stream()
    sent = scrubber.feed(b"data: partial sk-li")
    assert sent == b"data: partial "
    assert scrubber.feed(b"ve!\n") == b"sk-live!\n".replace(b"sk-live", MASK.encode())


def test_scrub_holds_at_most_max_length_minus_one() -> None:
    pattern = ScrubPattern([SECRET])
    scrubber = pattern.stream()
    data = b"x" * 10 + SECRET[:-1].encode() * 3
    sent = scrubber.feed(data)
    assert len(data) - len(sent) == pattern.max_length - 1
    assert scrubber.finish() == data[len(sent):]


def test_scrub_without_values_passes_through() -> None:
    pattern = ScrubPattern([])
    scrubber = pattern.stream()
    assert scrubber.feed(b"abc") == b"abc"
    assert scrubber.finish() == b""
    assert pattern.scrub_text("abc") == "abc"


def test_scrub_ignores_values_too_short_to_mask() -> None:
    pattern = ScrubPattern(["ab", SECRET])
    assert pattern.scrub_text("ab cd") == "ab cd"


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.binary(max_size=40),
    middle=st.binary(max_size=40),
    suffix=st.binary(max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_scrub_chunked_equals_whole(prefix: bytes, middle: bytes, suffix: bytes, cuts: list[int]) -> None:
    body = prefix + SECRET.encode() + middle + OTHER.encode() + suffix
    whole = PATTERN.scrub_bytes(body)
    chunked = scrub_in_chunks(PATTERN, body, [cut for cut in cuts if cut <= len(body)])
    assert chunked == whole
    assert SECRET.encode() not in chunked
    assert OTHER.encode() not in chunked


def test_leak_forms_cover_encodings() -> None:
    value = "k/ey+with space\"quote"
    forms = leak_forms(value)
    assert "k%2Fey%2Bwith%20space%22quote" in forms
    assert "k%2Fey%2Bwith+space%22quote" in forms
    assert json.dumps(value)[1:-1] in forms


def test_leak_forms_cover_html_escaping() -> None:
    value = "key<with>&\"quotes'0123"
    assert "key&lt;with&gt;&amp;&quot;quotes&#x27;0123" in leak_forms(value)


# A key whose base64 contains "+", which the URL-safe alphabet writes as "-".
BASE64_KEY = "sk-??>>~~-0123456789abcdefghij"


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
@pytest.mark.parametrize("prefix_bytes", range(6))
def test_base64_of_key_masked_at_any_offset(encode: Any, prefix_bytes: int) -> None:
    key = BASE64_KEY.encode("utf-8")
    blob = encode(b"p" * prefix_bytes + key + b"trailing bytes").decode("ascii")
    store = KeyStore({}, Redactor())
    store.set("API_KEY", BASE64_KEY)
    scrubbed = store.pattern.scrub_text(blob)
    assert MASK in scrubbed
    # At most 2 bytes at each end of the key (4 characters each) stay visible.
    removed_chars = len(blob) - (len(scrubbed) - len(MASK))
    assert removed_chars >= (len(key) - 4) * 4 // 3


@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_of_key_alone_masked_whole(encode: Any) -> None:
    store = KeyStore({}, Redactor())
    store.set("API_KEY", BASE64_KEY)
    encoded = encode(BASE64_KEY.encode("utf-8")).decode("ascii")
    assert store.pattern.scrub_text(f'{{"echo": "{encoded}"}}') == f'{{"echo": "{MASK}"}}'


def test_short_key_has_no_base64_forms() -> None:
    assert base64_forms("k" * (BASE64_MIN_BYTES - 1)) == set()
    assert base64_forms("k" * BASE64_MIN_BYTES)


def test_keystore_pattern_masks_basic_credential() -> None:
    service = ServiceSpec("basic", "https://api.example", "BASIC_KEY", InjectSpec("basic", username="user"),
                          ("GET",), ("/",))
    store = KeyStore({"basic": service}, Redactor())
    store.set("BASIC_KEY", SECRET)
    credential = basic_credential("user", SECRET)
    assert store.pattern.scrub_text(f"Authorization: Basic {credential}") == f"Authorization: Basic {MASK}"


def test_keystore_delete_removes_from_pattern_not_redactor() -> None:
    redactor = Redactor()
    store = KeyStore({}, redactor)
    store.set("API_KEY", SECRET)
    assert store.delete("API_KEY") is True
    assert store.pattern.scrub_text(SECRET) == SECRET
    assert redactor.redact(SECRET) == MASK


def test_keystore_pattern_includes_tokens() -> None:
    token = "a" * 64
    store = KeyStore({}, Redactor(), extra_values=lambda: [token])
    assert store.pattern.scrub_text(f"x{token}y") == f"x{MASK}y"


def make_record(message: str, *args: object, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("keyside.test", logging.INFO, __file__, 1, message, args, exc_info)


def test_filter_masks_secret_in_arguments() -> None:
    record = make_record("upstream failed key=%s service=%s", SECRET, "openai")
    assert RedactingFilter(Redactor([SECRET])).filter(record) is True
    assert record.getMessage() == f"upstream failed key={MASK} service=openai"


def test_filter_masks_secret_in_traceback() -> None:
    try:
        raise ValueError(f"upstream rejected {SECRET}")
    except ValueError:
        record = make_record("request failed", exc_info=sys.exc_info())
    RedactingFilter(Redactor([SECRET])).filter(record)
    text = logging.Formatter().format(record)
    assert "ValueError: upstream rejected" in text
    assert SECRET not in text
    assert record.exc_info is None


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /v1/x?api_key=abc HTTP/1.1", "GET /v1/x?[query removed] HTTP/1.1"),
    ("path=/v1/x?api_key=abc status=400", "path=/v1/x?[query removed] status=400"),
    ("url=https://api.example/v1?api_key=abc", "url=https://api.example/v1?[query removed]"),
    ("/v1/x?api_key=abc at the start", "/v1/x?[query removed] at the start"),
    ("quoted '/v1/x?api_key=abc'", "quoted '/v1/x?[query removed]'"),
    ("a question? and a/b?c stay", "a question? and a/b?c stay"),
], ids=["request-line", "key-value", "absolute-url", "text-start", "quoted", "prose"])
def test_strip_url_queries(text: str, expected: str) -> None:
    assert strip_url_queries(text) == expected
