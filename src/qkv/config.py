"""Typed, frozen, validated configuration objects (STYLE principle 2).

Every config in qkv is a frozen dataclass deriving from `Config`. Field types are checked when the
object is built, `Literal` fields only accept their listed values, and `from_dict` refuses keys it does
not know, so a typo in a TOML file or a `--set` override is an error instead of a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field, and `key` holds its
    name where one key is to blame (so that a run config can point at the line that sets it)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _check(name: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp` where that is lossless (int -> float), else raise."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{name}: may not be None")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(name, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{name}: {value!r} is not of type {tp}")
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            # a single value where a list goes (`files = "my.txt"`): show the list it would be
            one = f" (a list of one is written [{json.dumps(value)}])" if isinstance(value, (str, int, float)) else ""
            raise ConfigError(f"{name}: expected a list, got {value!r}{one}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(name, v, args[0]) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{name}: expected {len(args)} values, got {len(value)}")
        return tuple(_check(name, v, a) for v, a in zip(value, args))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and type(value) is not tp:
        raise ConfigError(f"{name}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: type checks on construction, strict `from_dict`, `to_dict` for JSON."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for field in dataclasses.fields(self):
            name = f"{type(self).__name__}.{field.name}"
            try:
                value = _check(name, getattr(self, field.name), hints[field.name])
            except ConfigError as err:
                raise ConfigError(str(err), key=field.name) from None
            object.__setattr__(self, field.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses raise ConfigError."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            hint = unknown_key_hint(unknown, cls.field_names())
            raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; {hint}", key=unknown[0])
        try:
            return cls(**data)
        except TypeError as err:  # a required field is missing
            raise ConfigError(f"{source}: {err}") from None
        except ConfigError as err:  # a bad value, or fields that do not fit together (`validate`)
            raise ConfigError(f"{source}: {err}", key=err.key) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


def close_key(name: str, known: list[str], spelling: bool = True) -> str | None:
    """The known key `name` is likely a misspelling of (when `spelling`) or a part of (`vocab_size`
    for `bpe_vocab_size`), if any."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) if spelling else []
    close = close or [k for k in known if k.endswith("_" + name) or k.startswith(name + "_")][:1]
    return close[0] if close else None


def unknown_key_hint(unknown: list[str], known: list[str]) -> str:
    """'did you mean ...' for a likely misspelling (or a name missing its prefix), else the known keys."""
    for name in unknown:
        if (close := close_key(name, known)) is not None:
            return f"did you mean {close!r}?"
    return f"expected one of {known}"


def require(condition: bool, message: str, key: str | None = None) -> None:
    """Raise ConfigError(message) unless condition holds (for `validate`); `key`: the one field to blame."""
    if not condition:
        raise ConfigError(message, key=key)
