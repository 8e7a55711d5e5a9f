"""BIENC_INDEXED_FIELDS: the metadata fields every collection keeps a payload index on, each
with the type of its values (bienc.store.filters says which conditions each type serves)."""

from __future__ import annotations

import re
from typing import Literal

IndexType = Literal["keyword", "integer", "float", "bool", "datetime"]
INDEX_TYPES: tuple[IndexType, ...] = ("keyword", "integer", "float", "bool", "datetime")
METADATA_KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
MAX_KEY_CHARS = 128


def parse_index_declarations(text: str) -> dict[str, IndexType]:
    """`KEY:TYPE,KEY:TYPE` as a mapping of metadata key to type; ValueError naming a bad entry."""
    declared: dict[str, IndexType] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        key, _, kind = entry.partition(":")
        key, kind = key.strip(), kind.strip().lower()
        if len(key) > MAX_KEY_CHARS or not METADATA_KEY.fullmatch(key):
            raise ValueError(f"{entry[:60]!r}: the key must be a metadata key (ASCII letters, "
                             "digits, '_' and '-', with '.' between nested names)")
        if kind not in INDEX_TYPES:
            raise ValueError(f"{entry[:60]!r}: give KEY:TYPE with TYPE one of {', '.join(INDEX_TYPES)}")
        declared[key] = kind  # type: ignore[assignment]
    return declared
