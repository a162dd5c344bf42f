"""IPC commands: how a command is declared, how its arguments are checked, and the error it raises.

A command names the capability a window needs to call it and the type of every argument. The
arguments come from an untrusted page, so `check_arguments` rejects unknown names, wrong types,
oversized values and secret names outside the manifest's allow-list before a handler runs.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keyside.errors import KeysideError
from keyside.manifest import LABEL_PATTERN, Manifest

if TYPE_CHECKING:
    from keyside.host.host import Host

# Command names read like Python identifiers, so an app author can use the handler's name.
COMMAND_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# The serialized arguments of one call. Large enough for any form a settings page sends,
# small enough that a page cannot make the host parse megabytes per call.
MAX_ARGS_JSON_BYTES = 64 * 1024
# Default for a string argument without its own `max_length`.
MAX_STRING_ARG_CHARS = 4096
# Names of secrets, services and other identifiers; manifest names are at most 64 characters.
MAX_NAME_ARG_CHARS = 256
# Items in a list or keys in a dict argument without its own `max_length`.
MAX_COLLECTION_ARG_ITEMS = 256

ARG_TYPES = (str, int, float, bool, list, dict)


class IpcError(KeysideError):
    """A rejected or failed UI command; `reason` names why and reaches the page unchanged."""

    reason = "ipc_error"


@dataclass(frozen=True)
class ArgSpec:
    """The declared type and limits of one command argument.

    `max_length` counts characters for a string and items for a list or dict. A string
    argument rejects control characters unless `allow_control_chars` is set. With
    `secret_name`, the value must be a secret name declared in the manifest.
    """

    type: type
    required: bool = True
    default: Any = None
    max_length: int | None = None
    secret_name: bool = False
    allow_control_chars: bool = False

    def __post_init__(self) -> None:
        if self.type not in ARG_TYPES:
            raise TypeError(f"argument type {self.type!r} is not supported; use one of "
                            f"{', '.join(t.__name__ for t in ARG_TYPES)}")
        if self.secret_name and self.type is not str:
            raise TypeError("a secret_name argument must have type str")

    @property
    def limit(self) -> int | None:
        if self.max_length is not None:
            return self.max_length
        if self.type is str:
            return MAX_NAME_ARG_CHARS if self.secret_name else MAX_STRING_ARG_CHARS
        if self.type in (list, dict):
            return MAX_COLLECTION_ARG_ITEMS
        return None


@dataclass(frozen=True)
class CallContext:
    """The caller of one command: the window label bound by the shell and the page origin of the call."""

    window: str
    origin: str
    command: str
    host: Host


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Command:
    name: str
    capability: str | None
    args: Mapping[str, ArgSpec]
    handler: Handler
    # Calls are written to the audit log, allowed or not.
    audit: bool


class CommandRegistry:
    """A set of commands by name; registering a name twice raises ValueError."""

    def __init__(self, commands: Mapping[str, Command] | None = None):
        self._commands: dict[str, Command] = dict(commands or {})

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"command {command.name!r} is already registered")
        self._commands[command.name] = command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def remove(self, name: str) -> None:
        self._commands.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._commands))


# Commands added by app code through the `command` decorator.
APP_COMMANDS = CommandRegistry()


def _as_spec(name: str, value: type | ArgSpec) -> ArgSpec:
    if isinstance(value, ArgSpec):
        return value
    if isinstance(value, type):
        return ArgSpec(value)
    raise TypeError(f"argument {name!r}: expected a type or ArgSpec, got {value!r}")


def build_command(name: str, handler: Handler, *, capability: str | None,
                  args: Mapping[str, type | ArgSpec] | None = None, audit: bool | None = None) -> Command:
    """Check a command declaration and return the Command; raise ValueError or TypeError on a bad one.

    The handler must accept the call context first and then every declared argument by name.
    """
    if not isinstance(name, str) or not COMMAND_NAME_PATTERN.match(name):
        raise ValueError(f"command name {name!r} is invalid: use lower-case letters, digits and '_', "
                         "starting with a letter")
    if capability is not None and not LABEL_PATTERN.match(capability):
        raise ValueError(f"capability {capability!r} is invalid: use a name such as 'data' or 'secrets'")
    specs = {arg_name: _as_spec(arg_name, value) for arg_name, value in (args or {}).items()}
    for arg_name in specs:
        if not COMMAND_NAME_PATTERN.match(arg_name):
            raise ValueError(f"argument name {arg_name!r} of command {name!r} is invalid")

    parameters = inspect.signature(handler).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    positional = [p for p in parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise TypeError(f"handler of command {name!r} must take the call context as its first parameter")
    for arg_name in specs:
        if arg_name not in parameters and not accepts_any:
            raise TypeError(f"handler of command {name!r} has no parameter for argument {arg_name!r}")

    if audit is None:
        audit = capability == "secrets"
    return Command(name, capability, specs, handler, audit)


def command(name: str, *, capability: str | None, args: Mapping[str, type | ArgSpec] | None = None,
            audit: bool | None = None, registry: CommandRegistry | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated function as the UI command `name`.

    Only windows whose manifest entry lists `capability` may call it (None: any window of the
    app). `args` maps each argument name to a type (str, int, float, bool, list, dict) or an
    ArgSpec. The handler is called as handler(ctx, **args); it may be a coroutine function, and a
    plain function runs in a worker thread. Calls are audited when `audit` is true, which is the
    default for the `secrets` capability.
    """
    target = APP_COMMANDS if registry is None else registry

    def decorate(handler: Handler) -> Handler:
        built = build_command(name, handler, capability=capability, args=args, audit=audit)
        if target is not _builtin_registry() and name in _builtin_registry():
            raise ValueError(f"command {name!r} is a built-in command; choose another name")
        target.add(built)
        return handler

    return decorate


def _builtin_registry() -> CommandRegistry:
    # Imported here because the built-in commands are declared with this module's decorator.
    from keyside.host.commands import BUILTIN_COMMANDS

    return BUILTIN_COMMANDS


def _invalid(message: str, fix: str) -> IpcError:
    return IpcError(message, reason="invalid_arguments", fix=fix)


def _has_control_chars(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def _check_value(command_name: str, arg_name: str, spec: ArgSpec, value: Any, manifest: Manifest) -> Any:
    where = f"argument {arg_name!r} of {command_name}"
    expected = spec.type
    # bool is a subclass of int in Python but a different JSON type, so it never passes as a number.
    if isinstance(value, bool) and expected is not bool:
        raise _invalid(f"{where}: expected {expected.__name__}, got bool.", f"pass a {expected.__name__}")
    if expected is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, expected):
        raise _invalid(f"{where}: expected {expected.__name__}, got {type(value).__name__}.",
                       f"pass a {expected.__name__}")

    limit = spec.limit
    if limit is not None and isinstance(value, str | list | dict) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "items"
        raise _invalid(f"{where}: longer than {limit} {unit} ({len(value)}).", f"send at most {limit} {unit}")
    if isinstance(value, str) and not spec.allow_control_chars and _has_control_chars(value):
        raise _invalid(f"{where}: contains control characters.", "remove line breaks and control characters")
    if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
        raise _invalid(f"{where}: object keys must be strings.", "pass a JSON object")

    if spec.secret_name and value not in manifest.secrets:
        allowed = ", ".join(sorted(manifest.secrets)) or "(none)"
        # The rejected value is not echoed: a page that mixed up its fields may have sent a key here.
        raise IpcError(f"{where}: not a secret name declared by this app.", reason="unknown_secret",
                       fix=f"use one of: {allowed}")
    return value


def check_arguments(command: Command, args: Any, manifest: Manifest) -> dict[str, Any]:
    """Return the call's arguments with defaults filled in, or raise IpcError.

    Reasons: `invalid_arguments` (not an object, too large, unknown or missing name, wrong type
    or length, control characters) and `unknown_secret` (a secret name the manifest does not declare).
    """
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _invalid(f"arguments of {command.name}: expected an object, got {type(args).__name__}.",
                       "pass the arguments as a JSON object")
    try:
        size = len(json.dumps(args, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError):
        raise _invalid(f"arguments of {command.name}: not plain JSON values.",
                       "pass strings, numbers, booleans, lists and objects only") from None
    except RecursionError:
        raise _invalid(f"arguments of {command.name}: nested too deeply.", "flatten the arguments") from None
    if size > MAX_ARGS_JSON_BYTES:
        raise _invalid(f"arguments of {command.name}: {size} bytes, more than {MAX_ARGS_JSON_BYTES}.",
                       "send smaller arguments")

    unknown = [name for name in args if name not in command.args]
    if unknown:
        # The names are not echoed: they are page data and may hold a key pasted into the wrong place.
        expected = ", ".join(command.args) or "no arguments"
        raise _invalid(f"{command.name} got {len(unknown)} unknown argument name(s).", f"use only: {expected}")

    checked: dict[str, Any] = {}
    for name, spec in command.args.items():
        if name not in args or args[name] is None:
            if spec.required:
                raise _invalid(f"{command.name} is missing argument {name!r}.",
                               f"pass {name} as a {spec.type.__name__}")
            checked[name] = spec.default
            continue
        checked[name] = _check_value(command.name, name, spec, args[name], manifest)
    return checked
