"""Metadata filters in bienc's own terms: validated where a request enters (a bad key or value
is InvalidInputError naming it, never a store error), translated by each engine (`conditions`).

A filter is a mapping from metadata key to a value or a list of values. A document matches
when, for every key, its metadata holds that value (or one of the list's). Keys are ASCII
letters, digits, '_' and '-'; a dot reaches into a nested object (`{"source.site": "x"}`
matches metadata `{"source": {"site": "x"}}`). Values are strings, 64-bit integers or
booleans; a list holds strings or integers, not both. A boolean matches only a boolean
(`true` never matches `1`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bienc.config.errors import InvalidInputError

Scalar = str | int | bool
# A condition on a point's payload: the field (a payload key) holds one of the values.
Condition = tuple[str, tuple[Scalar, ...]]
EngineCondition = TypeVar("EngineCondition")

MAX_KEYS = 16
MAX_KEY_CHARS = 128
MAX_VALUES = 1024
_INT64 = (-(2**63), 2**63 - 1)
_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
PAYLOAD_PREFIX = "metadata."  # where user metadata sits in a point's payload


@dataclass(frozen=True)
class FieldMatch:
    """The metadata field `key` equals one of `values` (a single value: equals it)."""

    key: str
    values: tuple[Scalar, ...]

    @property
    def payload_key(self) -> str:
        return PAYLOAD_PREFIX + self.key


@dataclass(frozen=True)
class MetadataFilter:
    """Every match must hold."""

    matches: tuple[FieldMatch, ...]

    def conditions(self) -> tuple[Condition, ...]:
        return tuple((m.payload_key, m.values) for m in self.matches)


def conditions(of: Sequence[Condition], equals: Callable[[str, Scalar], EngineCondition],
               equals_any: Callable[[str, list[Scalar]], EngineCondition]) -> list[EngineCondition]:
    """`of` in an engine's terms, every one of which must hold: one condition per payload key,
    `equals` for a single value, `equals_any` for several (the engine's constructors)."""
    return [equals(key, values[0]) if len(values) == 1 else equals_any(key, list(values))
            for key, values in of]


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInputError("filter keys must be non-empty strings")
    if len(key) > MAX_KEY_CHARS or not _KEY.fullmatch(key):
        shown = key if len(key) <= 40 else key[:40] + "..."
        raise InvalidInputError(
            f"filter key {shown!r} is invalid: use up to {MAX_KEY_CHARS} ASCII letters, digits, "
            "'_' or '-', with '.' between the names of nested fields"
        )
    return key


def _check_scalar(key: str, value: Any, *, in_list: bool) -> Scalar:
    if isinstance(value, bool):
        if in_list:
            raise InvalidInputError(f"filter {key!r}: a list holds strings or integers, not booleans")
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise InvalidInputError(f"filter {key!r}: integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, str):
        return value
    raise InvalidInputError(
        f"filter {key!r}: value must be a string, integer, boolean or a non-empty list of "
        f"strings or integers, got {value!r}"[:300]
    )


def parse_filter(raw: Mapping[str, Any] | None) -> MetadataFilter | None:
    """The filter a request gave, checked; None when it gave none (or an empty one)."""
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInputError("filter must be an object of metadata keys to values")
    if len(raw) > MAX_KEYS:
        raise InvalidInputError(f"filter has {len(raw)} keys, over the limit of {MAX_KEYS}")
    matches = []
    for key, value in raw.items():
        key = _check_key(key)
        if isinstance(value, list):
            if not value or len(value) > MAX_VALUES:
                raise InvalidInputError(
                    f"filter {key!r}: a list needs 1 to {MAX_VALUES} values, got {len(value)}")
            values = tuple(_check_scalar(key, v, in_list=True) for v in value)
            if len({type(v) for v in values}) > 1:
                raise InvalidInputError(f"filter {key!r}: a list holds strings or integers, not both")
            matches.append(FieldMatch(key, values))
        else:
            matches.append(FieldMatch(key, (_check_scalar(key, value, in_list=False),)))
    return MetadataFilter(tuple(matches))
