"""Validation shared by the frozen dataclasses of limits (guard limits, supervisor settings).

A field whose name ends in `_s` is a number of seconds above 0. Any other field is an integer of
at least its minimum: 1 unless the class names it in `minimums`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from keyside.errors import KeysideError


def validate_limit_fields(settings: Any, label: str, error: Callable[..., KeysideError],
                          minimums: Mapping[str, int] | None = None) -> None:
    """Raise `error` naming the first field of the dataclass `settings` that is out of range."""
    for item in fields(settings):
        value = getattr(settings, item.name)
        if item.name.endswith("_s"):
            valid = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            requirement = "a number of seconds above 0"
        else:
            minimum = (minimums or {}).get(item.name, 1)
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
            requirement = f"an integer of at least {minimum}"
        if not valid:
            raise error(f"{label} {item.name} must be {requirement}, got {value!r}.",
                        fix=f"Set {item.name} to a value such as the default {item.default}.")
