"""Argument checks and command declarations: types, lengths, allow-listed names, unknown names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyside.host import ArgSpec, CommandRegistry, IpcError, command
from keyside.host.commands import BUILTIN_COMMANDS, MAX_SECRET_VALUE_CHARS
from keyside.host.ipc import MAX_ARGS_JSON_BYTES, MAX_STRING_ARG_CHARS, build_command, check_arguments
from test_host_support import DATA, write_app

# Cases the argument check itself rejects; the rest are rejected by the command (see test_ipc_commands).
BAD_ARGS = [case for case in json.loads((DATA / "ipc_bad_args.json").read_text(encoding="utf-8"))["cases"]
            if case.get("checked_by") != "handler"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    return write_app(tmp_path_factory.mktemp("app"))


def _build_args(case: dict[str, Any]) -> Any:
    args = case["args"]
    repeat = case.get("repeat")
    if repeat:
        args = {**args, repeat["field"]: repeat["char"] * repeat["count"]}
    return args


@pytest.mark.parametrize("case", BAD_ARGS, ids=[case["id"] for case in BAD_ARGS])
def test_set_secret_bad_args_rejected(manifest, case):
    set_secret = BUILTIN_COMMANDS.get("set_secret")
    with pytest.raises(IpcError) as caught:
        check_arguments(set_secret, _build_args(case), manifest)
    assert caught.value.reason == case["reason"]


@pytest.mark.parametrize("case", BAD_ARGS, ids=[case["id"] for case in BAD_ARGS])
def test_bad_args_error_has_no_value(manifest, case):
    """A rejected argument value is never echoed: a page may have put a key in the wrong field."""
    set_secret = BUILTIN_COMMANDS.get("set_secret")
    args = _build_args(case)
    with pytest.raises(IpcError) as caught:
        check_arguments(set_secret, args, manifest)
    text = json.dumps(caught.value.to_dict())
    values = [v for v in (args.values() if isinstance(args, dict) else []) if isinstance(v, str) and len(v) >= 6]
    for value in values:
        assert value not in text


def test_set_secret_good_args_pass(manifest):
    set_secret = BUILTIN_COMMANDS.get("set_secret")
    checked = check_arguments(set_secret, {"name": "ECHO_KEY", "value": "k" * MAX_SECRET_VALUE_CHARS}, manifest)
    assert checked["name"] == "ECHO_KEY"
    assert len(checked["value"]) == MAX_SECRET_VALUE_CHARS


def test_optional_argument_gets_default(manifest):
    validate = BUILTIN_COMMANDS.get("validate_secret")
    assert check_arguments(validate, {"name": "ECHO_KEY"}, manifest) == {"name": "ECHO_KEY", "value": None}


def test_no_args_command_accepts_none_and_empty(manifest):
    runtime_info = BUILTIN_COMMANDS.get("runtime_info")
    assert check_arguments(runtime_info, None, manifest) == {}
    assert check_arguments(runtime_info, {}, manifest) == {}


TYPE_CASES = [
    # (declared type, value, accepted, value after the check)
    pytest.param(int, 3, True, 3, id="int-accepts-int"),
    pytest.param(int, True, False, None, id="int-rejects-bool"),
    pytest.param(int, 3.5, False, None, id="int-rejects-float"),
    pytest.param(int, "3", False, None, id="int-rejects-string"),
    pytest.param(float, 2, True, 2.0, id="float-accepts-int"),
    pytest.param(float, 2.5, True, 2.5, id="float-accepts-float"),
    pytest.param(float, False, False, None, id="float-rejects-bool"),
    pytest.param(bool, True, True, True, id="bool-accepts-bool"),
    pytest.param(bool, 1, False, None, id="bool-rejects-int"),
    pytest.param(str, "x", True, "x", id="str-accepts-str"),
    pytest.param(str, ["x"], False, None, id="str-rejects-list"),
    pytest.param(list, [1, "a"], True, [1, "a"], id="list-accepts-list"),
    pytest.param(list, {"a": 1}, False, None, id="list-rejects-dict"),
    pytest.param(dict, {"a": [1]}, True, {"a": [1]}, id="dict-accepts-dict"),
    pytest.param(dict, [], False, None, id="dict-rejects-list"),
]


@pytest.mark.parametrize(("declared", "value", "accepted", "expected"), TYPE_CASES)
def test_argument_types(manifest, declared, value, accepted, expected):
    spec = build_command("typed", lambda ctx, x: x, capability=None, args={"x": declared})
    if accepted:
        assert check_arguments(spec, {"x": value}, manifest) == {"x": expected}
    else:
        with pytest.raises(IpcError) as caught:
            check_arguments(spec, {"x": value}, manifest)
        assert caught.value.reason == "invalid_arguments"


LIMIT_CASES = [
    pytest.param(ArgSpec(str), "a" * MAX_STRING_ARG_CHARS, True, id="default-string-limit-exact"),
    pytest.param(ArgSpec(str), "a" * (MAX_STRING_ARG_CHARS + 1), False, id="default-string-limit-over"),
    pytest.param(ArgSpec(str, max_length=3), "abc", True, id="own-limit-exact"),
    pytest.param(ArgSpec(str, max_length=3), "abcd", False, id="own-limit-over"),
    pytest.param(ArgSpec(list, max_length=2), [1, 2, 3], False, id="list-items-over"),
    pytest.param(ArgSpec(dict, max_length=1), {"a": 1, "b": 2}, False, id="dict-keys-over"),
    pytest.param(ArgSpec(str), "line\nbreak", False, id="control-char-rejected"),
    pytest.param(ArgSpec(str, allow_control_chars=True), "line\nbreak", True, id="control-char-allowed"),
    pytest.param(ArgSpec(str), "del\x7fchar", False, id="delete-char-rejected"),
    pytest.param(ArgSpec(str), "caf\u00e9 \u2603", True, id="unicode-text-accepted"),
]


@pytest.mark.parametrize(("spec", "value", "accepted"), LIMIT_CASES)
def test_argument_limits(manifest, spec, value, accepted):
    declared = build_command("limited", lambda ctx, x: x, capability=None, args={"x": spec})
    if accepted:
        assert check_arguments(declared, {"x": value}, manifest) == {"x": value}
    else:
        with pytest.raises(IpcError) as caught:
            check_arguments(declared, {"x": value}, manifest)
        assert caught.value.reason == "invalid_arguments"


def test_non_json_argument_rejected(manifest):
    declared = build_command("loose", lambda ctx, x: x, capability=None, args={"x": dict})
    with pytest.raises(IpcError) as caught:
        check_arguments(declared, {"x": {"a": float("nan")}}, manifest)
    assert caught.value.reason == "invalid_arguments"


def test_deep_nesting_rejected(manifest):
    declared = build_command("nested", lambda ctx, x: x, capability=None, args={"x": list})
    value: list[Any] = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(IpcError) as caught:
        check_arguments(declared, {"x": value}, manifest)
    assert caught.value.reason == "invalid_arguments"


DECLARATION_ERRORS = [
    pytest.param(dict(name="Bad-Name", handler=lambda ctx: 1, capability=None), ValueError, id="bad-command-name"),
    pytest.param(dict(name="ok", handler=lambda ctx: 1, capability="Secrets!"), ValueError, id="bad-capability"),
    pytest.param(dict(name="ok", handler=lambda: 1, capability=None), TypeError, id="handler-without-context"),
    pytest.param(dict(name="ok", handler=lambda ctx: 1, capability=None, args={"x": str}), TypeError,
                 id="handler-misses-argument"),
    pytest.param(dict(name="ok", handler=lambda ctx, x: 1, capability=None, args={"x": set}), TypeError,
                 id="unsupported-type"),
    pytest.param(dict(name="ok", handler=lambda ctx, x: 1, capability=None, args={"x": 5}), TypeError,
                 id="not-a-type"),
    pytest.param(dict(name="ok", handler=lambda ctx, X: 1, capability=None, args={"X": str}), ValueError,
                 id="bad-argument-name"),
]


@pytest.mark.parametrize(("declaration", "error"), DECLARATION_ERRORS)
def test_bad_declaration_raises(declaration, error):
    with pytest.raises(error):
        build_command(**declaration)


def test_secret_name_spec_must_be_string():
    with pytest.raises(TypeError):
        ArgSpec(int, secret_name=True)


def test_decorator_registers_command():
    registry = CommandRegistry()

    @command("greet", capability="data", args={"who": str}, registry=registry)
    def greet(ctx, who):
        return f"hello {who}"

    registered = registry.get("greet")
    assert registered is not None
    assert registered.capability == "data"
    assert registered.args["who"].type is str
    assert registered.handler is greet
    assert registered.audit is False


def test_decorator_audits_secrets_capability_by_default():
    registry = CommandRegistry()

    @command("rotate", capability="secrets", registry=registry)
    def rotate(ctx):
        return None

    assert registry.get("rotate").audit is True


def test_decorator_rejects_duplicate_name():
    registry = CommandRegistry()
    command("twice", capability=None, registry=registry)(lambda ctx: 1)
    with pytest.raises(ValueError):
        command("twice", capability=None, registry=registry)(lambda ctx: 2)


def test_decorator_rejects_builtin_name():
    with pytest.raises(ValueError):
        command("local_api", capability=None, registry=CommandRegistry())(lambda ctx: 1)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.dictionaries(st.sampled_from(["name", "value", "extra", "Name", ""]) | st.text(max_size=8),
                            JSON_VALUES, max_size=4) | JSON_VALUES)
def test_fuzz_set_secret_args(manifest, args):
    """Any JSON a page sends either passes with exactly the declared shape or raises IpcError."""
    set_secret = BUILTIN_COMMANDS.get("set_secret")
    try:
        checked = check_arguments(set_secret, args, manifest)
    except IpcError as error:
        assert error.reason in ("invalid_arguments", "unknown_secret")
        return
    assert set(checked) == {"name", "value"}
    assert checked["name"] in manifest.secrets
    assert isinstance(checked["value"], str)
    assert len(checked["value"]) <= MAX_SECRET_VALUE_CHARS
    assert len(json.dumps(args).encode()) <= MAX_ARGS_JSON_BYTES

