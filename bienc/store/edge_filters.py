"""Filters in Qdrant Edge's terms, and the payload indexes that keep them fast.

Filtering on a payload field without an index reads every candidate's payload (~1.5 us a
point: 150 ms a query at 100k chunks); with an index it is ~0.1 ms (bench/filters.py
compares the two).
`doc_id` and `chunk` are indexed on every part. A `metadata.*` key is indexed when it is
declared (BIENC_INDEXED_FIELDS, with its type: on every part, from the collection's opening)
or else the first time a search filters on it (keyword, integer or bool from the value it is
matched with, float for a number range, datetime for a date range; at most 32 keys a
collection).

An index answers only the conditions of its type (measured with qdrant-edge-py 0.9.0: an
integer index makes a number range skip decimal values and a date range find nothing; a float
index makes a date range find nothing; a datetime index makes a number range match dates;
keyword and bool indexes leave other conditions to the payload). So an automatic index that a
later filter's condition would get wrong is dropped, and its key is left unindexed from then
on (bienc.store.filters.serves); a declared one stays, and such a condition is refused.
Edge 0.9.0 converts a Python bool in MatchValue to an integer (True matches 1, not true); a
numpy bool is passed instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import qdrant_edge as qe

from bienc.store.filters import (
    PAYLOAD_PREFIX,
    Condition,
    FieldRange,
    IndexType,
    MetadataFilter,
    Scalar,
    check_declared,
    conditions,
    index_for,
    iso_bound,
    serves,
    translate,
)
from bienc.store.interface import FIRST_CHUNKS
from bienc.store.parts import Parts

log = logging.getLogger(__name__)

MAX_AUTO_INDEXES = 32
_SCHEMAS: dict[IndexType, qe.PayloadSchemaType] = {
    "keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float, "bool": qe.PayloadSchemaType.Bool,
    "datetime": qe.PayloadSchemaType.Datetime,
}
_BASE_INDEXES = (("doc_id", qe.PayloadSchemaType.Keyword), ("chunk", qe.PayloadSchemaType.Integer))


def _edge_value(value: Scalar) -> Any:
    # Edge 0.9.0 reads a Python bool in MatchValue as an integer; a numpy bool stays a bool.
    return np.bool_(value) if isinstance(value, bool) else value


class _EdgeBuilder:
    """bienc.store.filters.FilterBuilder for Edge."""

    def equals(self, key: str, value: Scalar) -> qe.FieldCondition:
        return qe.FieldCondition(key=key, match=qe.MatchValue(_edge_value(value)))

    def equals_any(self, key: str, values: list[Scalar]) -> qe.FieldCondition:
        return qe.FieldCondition(key=key, match=qe.MatchAny(values))  # type: ignore[arg-type]

    def within(self, key: str, bounds: FieldRange) -> qe.FieldCondition:
        if bounds.dates:
            return qe.FieldCondition(key=key, range=qe.RangeDateTime(
                **{name: iso_bound(value) for name, value in bounds.bounds().items()}))
        return qe.FieldCondition(key=key, range=qe.RangeFloat(**bounds.bounds()))

    def empty(self, key: str) -> qe.IsEmptyCondition:
        return qe.IsEmptyCondition(key=key)

    def all_of(self, must: list[Any], must_not: list[Any]) -> qe.Filter:
        return qe.Filter(must=must or None, must_not=must_not or None)


_BUILDER = _EdgeBuilder()


def edge_filter(of: Sequence[Condition]) -> qe.Filter:
    """Conditions in Edge's terms (bienc.store.filters.conditions)."""
    return qe.Filter(must=conditions(of, _BUILDER.equals, _BUILDER.equals_any))  # type: ignore[arg-type]


def metadata_filter(query_filter: MetadataFilter, also: Sequence[Condition] = ()) -> qe.Filter:
    """A metadata filter in Edge's terms, with bienc's conditions `also` (FIRST_CHUNKS)."""
    return translate(query_filter, _BUILDER, also)


FIRST_CHUNKS_FILTER = edge_filter(FIRST_CHUNKS)


def documents_filter(doc_ids: Sequence[str]) -> qe.Filter:
    """Every chunk of the given documents."""
    return qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))])


class FieldIndexes:
    """A collection's payload indexes on metadata fields: those `declared` (field -> type), and
    those searches added (`auto`). `create_on` gives a new part all of them."""

    def __init__(self, declared: Mapping[str, IndexType]):
        self.declared = dict(declared)
        self.auto: dict[str, IndexType] = {}
        self.unindexed: set[str] = set()  # keys no one index serves, or whose index failed
        self._lock = threading.Lock()

    def create_on(self, shard: qe.EdgeShard) -> None:
        """The payload indexes of a new part (and of the lexical part)."""
        for field_name, schema in _BASE_INDEXES:
            shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
        for key, kind in {**self.auto, **self.declared}.items():
            shard.update(qe.UpdateOperation.create_field_index(PAYLOAD_PREFIX + key, _SCHEMAS[kind]))

    def load(self, parts: Parts) -> None:
        """Learn the automatic indexes the collection's parts have, and give every part the
        declared ones it lacks. (An automatic index some parts lack, or have of another type,
        is made alike on all of them by the first search that needs it.)"""
        kinds = {schema: kind for kind, schema in _SCHEMAS.items()}
        for schema in parts.schemas():
            for field_name, info in schema.items():
                key = field_name.removeprefix(PAYLOAD_PREFIX)
                if field_name.startswith(PAYLOAD_PREFIX) and key not in self.declared \
                        and info.data_type in kinds:
                    self.auto.setdefault(key, kinds[info.data_type])
        for key, kind in self.declared.items():
            parts.ensure_field_index(PAYLOAD_PREFIX + key, _SCHEMAS[kind])

    def cover(self, parts: Parts, query_filter: MetadataFilter) -> None:
        """Before a search with `query_filter`: refuse a condition a declared index would get
        wrong; index each other key the first time it is seen; drop an automatic index that a
        condition would get wrong (the search runs once it is gone)."""
        check_declared(query_filter, self.declared)
        for clause in query_filter.clauses():
            key = clause.key
            if key in self.declared or key in self.unindexed:
                continue
            current = self.auto.get(key)
            if current is not None and serves(current, clause):
                continue
            with self._lock:
                self._change(parts, key, index_for(clause))

    def _change(self, parts: Parts, key: str, wanted: IndexType | None) -> None:
        current = self.auto.get(key)
        if key in self.unindexed or current == wanted:
            return
        field_name = PAYLOAD_PREFIX + key
        try:
            if current is not None:  # filtered in ways no one index serves
                parts.drop_field_index(field_name)
                del self.auto[key]
                self.unindexed.add(key)
            elif wanted is not None and len(self.auto) < MAX_AUTO_INDEXES:
                self.auto[key] = wanted
                parts.ensure_field_index(field_name, _SCHEMAS[wanted])
        except Exception as exc:  # filtering still works, only slower
            log.warning("could not change the payload index of %r: %s", field_name, exc)
            self.auto.pop(key, None)
            self.unindexed.add(key)
