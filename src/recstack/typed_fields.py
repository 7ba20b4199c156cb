"""Checking parsed YAML / JSON values against a dataclass's field annotations, once.

Shared by model parameters (``recstack.models.params``) and the trainer's config
(``recstack.training.config``): lists become tuples, strings become Enums (case-insensitive),
ints become floats, mappings become nested dataclasses (those with ``from_dict``); anything
else raises :class:`FieldError`, whose ``key`` names the field (``behaviours[1].history``).

Example:
    >>> coerce("dims", tuple[int, ...], [32, 16])
    (32, 16)
    >>> coerce("lr", float, "fast")
    Traceback (most recent call last):
    ...
    recstack.typed_fields.FieldError: lr: expected a number, got 'fast'
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from recstack.errors import ConfigError

__all__ = ["FieldError", "coerce", "coerce_fields"]


class FieldError(ConfigError):
    """A configuration field is unknown or invalid; ``key`` names it, ``problem`` says why."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def coerce_fields(instance: Any) -> None:
    """Replace every field of a (frozen) dataclass instance by its checked, converted value."""
    hints = typing.get_type_hints(type(instance))
    for spec in dataclasses.fields(instance):
        value = coerce(spec.name, hints[spec.name], getattr(instance, spec.name))
        object.__setattr__(instance, spec.name, value)  # frozen: lists -> tuples, str -> Enum


def coerce(key: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``hint`` and converted to its Python shape."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return coerce(key, inner, value)
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise FieldError(key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
        if len(value) != len(args):
            raise FieldError(key, f"expected a list of {len(args)} values, got {value!r}")
        return tuple(coerce(f"{key}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
    if origin is Mapping:  # a free-form mapping (another model's params), read-only
        if not isinstance(value, Mapping):
            raise FieldError(key, f"expected a mapping, got {value!r}")
        return types.MappingProxyType(dict(value))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and hasattr(hint, "from_dict"):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise FieldError(key, f"expected a mapping, got {value!r}")
        try:
            return hint.from_dict(value)
        except FieldError as error:
            raise type(error)(f"{key}.{error.key}", error.problem) from None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        choices = [member.value for member in hint]
        if isinstance(value, str) and value.lower() in choices:
            return hint(value.lower())
        raise FieldError(key, f"expected one of {choices}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise FieldError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise FieldError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: no conversion for annotation {hint!r}")  # a bug in the dataclass
