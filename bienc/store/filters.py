"""Metadata filters in bienc's own terms: validated where a request enters (a bad key or value
is InvalidInputError naming it, never a store error), translated by each engine (`translate`).

A filter is a JSON object; a document matches when every entry holds:

    "lang": "en"                      the field equals the value (string, integer or boolean)
    "year": [2019, 2020]              the field equals one of the values (strings or integers)
    "year": {"gte": 2019, "lt": 2022} the field is a number in the range (gte, gt, lte, lt;
                                      integers or decimals)
    "date": {"gte": "2024-01-01"}     the field is a date or time in the range (ISO-8601 bounds)
    "lang": {"exists": true}          the field holds a value (false: it is missing, null or [])
    "not": {...}                      the filter inside does not hold (a list of filters: none
                                      of them holds)

Keys are ASCII letters, digits, '_' and '-'; a dot reaches into a nested object
(`{"source.site": "x"}` matches metadata `{"source": {"site": "x"}}`). A boolean matches only
a boolean (`true` never matches `1`). A field holding a list matches when one of its items
does. A key named `not` with a string, integer or list value is an ordinary key.

Dates are compared as instants, one without an offset taken as UTC. The engines read a
metadata value (Qdrant's parser, the same in each) when it is a string of one of the forms
`YYYY-MM-DD`, `YYYY-MM-DD[T ]HH:MM`, `YYYY-MM-DD[T ]HH:MM:SS[.fraction]` with an optional `Z`
or `+HH:MM` offset; any other value never falls in a date range. Bounds are read here (those
forms, and an offset after `HH:MM` too) and handed to the engines in one form,
`YYYY-MM-DDTHH:MM:SS.ffffffZ`.

A payload index answers only the conditions of its own type (bienc.store.edge_filters
measured it on Qdrant Edge: an integer index makes a range skip decimal values and a date
range find nothing; a datetime index makes a number range match dates). `check_declared`
refuses a condition that an index declared in BIENC_INDEXED_FIELDS would answer wrongly;
`serves` says which automatic index may stay under a condition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from bienc.config.errors import InvalidInputError
from bienc.config.indexed_fields import MAX_KEY_CHARS, METADATA_KEY
from bienc.config.indexed_fields import IndexType as IndexType

Scalar = str | int | bool
# A condition on a point's payload: the field (a payload key) holds one of the values.
Condition = tuple[str, tuple[Scalar, ...]]
EngineCondition = TypeVar("EngineCondition")

MAX_KEYS = 16  # conditions in one filter, counted through every `not`
MAX_DEPTH = 4  # `not` inside `not`
MAX_VALUES = 1024
_INT64 = (-(2**63), 2**63 - 1)
_KEY = METADATA_KEY
NOT = "not"
BOUNDS = ("gte", "gt", "lte", "lt")
EXISTS = "exists"
# A date bound's forms: Qdrant's, and an offset after HH:MM (Python's reader alone would also
# take 20240501 and weeks)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,9}))?)?"
                   r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?")
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
class FieldRange:
    """The metadata field `key` is a number (bounds: floats) or a date (bounds: UTC datetimes)
    within the bounds given (None: unbounded on that side)."""

    key: str
    gte: float | datetime | None = None
    gt: float | datetime | None = None
    lte: float | datetime | None = None
    lt: float | datetime | None = None

    @property
    def payload_key(self) -> str:
        return PAYLOAD_PREFIX + self.key

    @property
    def dates(self) -> bool:
        return any(isinstance(b, datetime) for b in (self.gte, self.gt, self.lte, self.lt))

    def bounds(self) -> dict[str, Any]:
        """The bounds given, by name (gte, gt, lte, lt)."""
        return {name: value for name in BOUNDS if (value := getattr(self, name)) is not None}


@dataclass(frozen=True)
class FieldExists:
    """The metadata field `key` holds a value (`exists`), or is missing, null or [] (not)."""

    key: str
    exists: bool

    @property
    def payload_key(self) -> str:
        return PAYLOAD_PREFIX + self.key


Clause = FieldMatch | FieldRange | FieldExists


@dataclass(frozen=True)
class MetadataFilter:
    """Every clause holds, and none of the `excluded` filters does."""

    matches: tuple[Clause, ...]
    excluded: tuple[MetadataFilter, ...] = ()

    def clauses(self) -> Iterator[Clause]:
        """Every clause, those inside `not` included."""
        yield from self.matches
        for inner in self.excluded:
            yield from inner.clauses()


def conditions(of: Sequence[Condition], equals: Callable[[str, Scalar], EngineCondition],
               equals_any: Callable[[str, list[Scalar]], EngineCondition]) -> list[EngineCondition]:
    """`of` in an engine's terms, every one of which must hold: one condition per payload key,
    `equals` for a single value, `equals_any` for several (the engine's constructors)."""
    return [equals(key, values[0]) if len(values) == 1 else equals_any(key, list(values))
            for key, values in of]


EngineFilter = TypeVar("EngineFilter")
_Made = TypeVar("_Made", covariant=True)
_Filter = TypeVar("_Filter", covariant=True)


class FilterBuilder(Protocol[_Made, _Filter]):
    """An engine's constructors of conditions on a payload key, and of a filter."""

    def equals(self, key: str, value: Scalar) -> _Made: ...
    def equals_any(self, key: str, values: list[Scalar]) -> _Made: ...
    def within(self, key: str, bounds: FieldRange) -> _Made: ...
    def empty(self, key: str) -> _Made: ...
    def all_of(self, must: list[Any], must_not: list[Any]) -> _Filter: ...


def translate(query_filter: MetadataFilter, builder: FilterBuilder[Any, EngineFilter],
              also: Sequence[Condition] = ()) -> EngineFilter:
    """`query_filter` in an engine's terms (`builder`'s), with the conditions `also` (on any
    payload key, bienc's own such as FIRST_CHUNKS) required besides."""
    must: list[Any] = conditions(also, builder.equals, builder.equals_any)
    must_not: list[Any] = []
    for clause in query_filter.matches:
        if isinstance(clause, FieldMatch):
            values = clause.values
            must.append(builder.equals(clause.payload_key, values[0]) if len(values) == 1
                        else builder.equals_any(clause.payload_key, list(values)))
        elif isinstance(clause, FieldRange):
            must.append(builder.within(clause.payload_key, clause))
        else:
            (must_not if clause.exists else must).append(builder.empty(clause.payload_key))
    must_not.extend(translate(inner, builder) for inner in query_filter.excluded)
    return builder.all_of(must, must_not)


def iso_bound(moment: datetime) -> str:
    """A date bound in the one form handed to the engines."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Indexes


def index_for(clause: Clause) -> IndexType | None:
    """The payload index that serves `clause` (None: any serves it, none speeds it much)."""
    if isinstance(clause, FieldMatch):
        value = clause.values[0]
        return "bool" if isinstance(value, bool) else "integer" if isinstance(value, int) else "keyword"
    if isinstance(clause, FieldRange):
        return "datetime" if clause.dates else "float"
    return None


def serves(index: IndexType, clause: Clause, *, declared: bool = False) -> bool:
    """Whether an index of type `index` on the clause's field leaves its answer as it is without
    one. A declared integer index serves a number range: whoever declared it said the field
    holds integers."""
    if not isinstance(clause, FieldRange):
        return True
    if clause.dates:
        return index in ("datetime", "keyword", "bool")
    return index in ("float", "keyword", "bool") or (declared and index == "integer")


def check_declared(query_filter: MetadataFilter, declared: Mapping[str, IndexType]) -> None:
    """InvalidInputError for a condition that a declared index (BIENC_INDEXED_FIELDS) would
    answer wrongly: a range of dates on a number field, or of numbers on a date field."""
    for clause in query_filter.clauses():
        index = declared.get(clause.key)
        if index is not None and not serves(index, clause, declared=True):
            kind = "dates" if isinstance(clause, FieldRange) and clause.dates else "numbers"
            raise InvalidInputError(
                f"filter {clause.key!r}: a range of {kind}, but the field is indexed as {index} "
                f"(BIENC_INDEXED_FIELDS): give bounds of its type, or declare the field as "
                f"{'datetime' if kind == 'dates' else 'float'}")


# Parsing


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"filter keys must be non-empty strings{where}")
    if len(key) > MAX_KEY_CHARS or not _KEY.fullmatch(key):
        shown = key if len(key) <= 40 else key[:40] + "..."
        raise InvalidInputError(
            f"filter key {shown!r}{where} is invalid: use up to {MAX_KEY_CHARS} ASCII letters, "
            "digits, '_' or '-', with '.' between the names of nested fields"
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
        f"filter {key!r}: value must be a string, integer, boolean, a non-empty list of strings "
        f"or integers, or an object of gte/gt/lte/lt or exists, got {value!r}"[:300]
    )


def parse_date(key: str, text: str) -> datetime:
    """An ISO-8601 date or date-time bound, as an aware datetime (UTC when it has no offset)."""
    found = _DATE.fullmatch(text)
    if found is None:
        raise InvalidInputError(
            f"filter {key!r}: {text[:40]!r} is not a date: give YYYY-MM-DD or "
            "YYYY-MM-DDTHH:MM[:SS[.fff]] with an optional Z or +HH:MM")
    if found.group(1) is not None and len(found.group(1)) > 6:  # Python reads 6 digits at most
        text = text[:found.start(1) + 6] + text[found.end(1):]
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError as exc:
        raise InvalidInputError(f"filter {key!r}: {text[:40]!r} is not a date: {exc}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_bound(key: str, name: str, value: Any) -> float | datetime:
    if isinstance(value, str):
        return parse_date(key, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"filter {key!r}: bound {name!r} must be a number or an ISO-8601 "
                                f"date string, got {value!r}"[:300])
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise InvalidInputError(f"filter {key!r}: integer {value} is outside the 64-bit range")
    if not math.isfinite(value):
        raise InvalidInputError(f"filter {key!r}: bound {name!r} must be a finite number")
    return float(value)


def _parse_operators(key: str, value: Mapping[str, Any]) -> Clause:
    """An object of operators: a range (gte, gt, lte, lt) or `exists`."""
    unknown = sorted(str(name) for name in value if name not in (*BOUNDS, EXISTS))
    if unknown or not value:
        what = f"unknown operator {unknown[0]!r}" if unknown else "an empty object"
        raise InvalidInputError(f"filter {key!r}: {what}: use gte, gt, lte, lt (a range) or "
                                "exists (true or false)"[:300])
    if EXISTS in value:
        if len(value) > 1:
            raise InvalidInputError(f"filter {key!r}: give either exists or a range, not both")
        if not isinstance(value[EXISTS], bool):
            raise InvalidInputError(f"filter {key!r}: exists must be true or false")
        return FieldExists(key, value[EXISTS])
    bounds = {name: _parse_bound(key, name, bound) for name, bound in value.items()}
    if len({isinstance(b, datetime) for b in bounds.values()}) > 1:
        raise InvalidInputError(f"filter {key!r}: a range's bounds are all numbers or all dates")
    return FieldRange(key, **bounds)  # type: ignore[arg-type]


def _parse_value(key: str, value: Any) -> Clause:
    if isinstance(value, Mapping):
        return _parse_operators(key, value)
    if isinstance(value, list):
        if not value or len(value) > MAX_VALUES:
            raise InvalidInputError(
                f"filter {key!r}: a list needs 1 to {MAX_VALUES} values, got {len(value)}")
        values = tuple(_check_scalar(key, v, in_list=True) for v in value)
        if len({type(v) for v in values}) > 1:
            raise InvalidInputError(f"filter {key!r}: a list holds strings or integers, not both")
        return FieldMatch(key, values)
    return FieldMatch(key, (_check_scalar(key, value, in_list=False),))


def _negations(value: Any) -> list[Mapping[str, Any]] | None:
    """The filters a `not` entry excludes; None when `value` makes it an ordinary key."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return value
    if isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
        raise InvalidInputError("filter 'not': give a filter object, or a list of filter objects")
    return None


def _parse(raw: Any, depth: int, counted: list[int]) -> MetadataFilter:
    where = " (inside 'not')" if depth else ""
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidInputError(f"filter{where} must be a non-empty object of metadata keys to "
                                "values")
    matches: list[Clause] = []
    excluded: list[MetadataFilter] = []
    for key, value in raw.items():
        negated = _negations(value) if key == NOT else None
        if negated is not None:
            if depth + 1 > MAX_DEPTH:
                raise InvalidInputError(f"filter 'not': nested more than {MAX_DEPTH} deep")
            excluded.extend(_parse(inner, depth + 1, counted) for inner in negated)
            continue
        counted[0] += 1
        if counted[0] > MAX_KEYS:
            raise InvalidInputError(f"filter has more than {MAX_KEYS} conditions (counting those "
                                    "inside 'not')")
        matches.append(_parse_value(_check_key(key, where), value))
    return MetadataFilter(tuple(matches), tuple(excluded))


def parse_filter(raw: Mapping[str, Any] | None) -> MetadataFilter | None:
    """The filter a request gave, checked; None when it gave none (or an empty one)."""
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidInputError("filter must be an object of metadata keys to values")
    if len(raw) > MAX_KEYS:
        raise InvalidInputError(f"filter has {len(raw)} keys, over the limit of {MAX_KEYS}")
    return _parse(raw, 0, [0])
