"""What a collection records about its vectors, and the names it is known by.

A collection's encoding is fixed when it is created, from the settings of that time: the
model (its name, where it loads from, a hash of its weights), its dimension, the backend and
precision, the chunking and the lexical parameters. Every worker that writes into it and every
search of it use that encoding, whatever their settings, which only choose the encoding of
new collections. A collection recorded by an older bienc lacks some fields (None): those
fall back to the settings.

Names. Users address a collection by its name. On the store, a name is an alias of a physical
collection `NAME@N` (N = 1, 2, ...: its generation, one more at each reindex), or, for a
collection created by an older bienc, a physical collection of that very name. `@` never
appears in a name a user gives, so the two cannot collide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bienc.config.errors import CollectionError, InvalidInputError

SCHEMA_VERSION = 2
GENERATION_MARK = "@"
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,244}"
_GENERATION = r"[0-9]{1,9}"
NAME_RULE = "1-245 letters, digits, '_', '-' or '.', not starting with '-' or '.'"
COLLECTION_NAME = rf"^{_NAME}$"  # a name users give
PHYSICAL_OR_NAME = rf"^{_NAME}({GENERATION_MARK}{_GENERATION})?$"  # or a physical collection's
_COLLECTION_NAME = re.compile(COLLECTION_NAME)
_PHYSICAL_OR_NAME = re.compile(PHYSICAL_OR_NAME)
_PHYSICAL = re.compile(rf"^(?P<name>{_NAME}){GENERATION_MARK}(?P<generation>{_GENERATION})$")


def is_collection_name(name: object, physical: bool = False) -> bool:
    """Whether `name` is a valid collection name (`physical`: or a physical collection's)."""
    return isinstance(name, str) and \
        (_PHYSICAL_OR_NAME if physical else _COLLECTION_NAME).fullmatch(name) is not None


def invalid_name(name: object, hint: str = "") -> InvalidInputError:
    return InvalidInputError(f"collection name {name!r} is invalid: use {NAME_RULE}{hint}")


def physical_name(name: str, generation: int) -> str:
    return f"{name}{GENERATION_MARK}{generation}"


def split_physical(physical: str) -> tuple[str, int] | None:
    """(name, generation) of a physical collection `NAME@N`; None for any other name."""
    match = _PHYSICAL.match(physical)
    return (match["name"], int(match["generation"])) if match else None


def name_of(collection: str) -> str:
    """The name a collection is known by: its own, or, for a physical collection NAME@N,
    NAME (what a reindex's copy and the live writes of NAME share)."""
    split = split_physical(collection)
    return split[0] if split is not None else collection


def next_generation(name: str, physical: Iterable[str]) -> int:
    """One more than the highest generation of `name` among the `physical` collections (1
    when there is none): the generation of its next physical collection."""
    generations = [split[1] for p in physical
                   if (split := split_physical(p)) is not None and split[0] == name]
    return max(generations, default=0) + 1


@dataclass(frozen=True)
class Chunking:
    enabled: bool
    tokens: int
    overlap: int

    def fingerprint(self) -> str:
        return f"{self.tokens}/{self.overlap}" if self.enabled else "truncate"


POINT_IDS = ("uuid5", "document-key")  # the ways of making point ids, oldest first


@dataclass(frozen=True)
class CollectionEncoding:
    """How a collection's vectors are made (the module's docstring)."""

    model: str  # the model's name (bienc.encoding.plan.model_identity)
    dimension: int
    encoding: str = ""  # backend/precision, e.g. "openvino/int8"; "" unknown
    source: str | None = None  # what BIENC_MODEL was: where the model loads from
    weights: str | None = None  # sha256 of the model's weights
    chunking: Chunking | None = None
    lexical: Mapping[str, Any] | None = None  # BM25 parameters; None: dense vectors only
    # how its point ids are made (bienc.store.interface.point_id): a new collection's are
    # "document-key"; a record without the field is older, "uuid5"
    point_ids: str = "document-key"  # one of POINT_IDS

    def record(self) -> dict[str, Any]:
        """The JSON a collection keeps (Qdrant's collection metadata, Edge's collection.json)."""
        chunking = self.chunking
        return {
            "bienc_schema": SCHEMA_VERSION, "model": self.model, "dimension": self.dimension,
            "encoding": self.encoding, "source": self.source, "weights": self.weights,
            "chunking": {"enabled": chunking.enabled, "tokens": chunking.tokens,
                         "overlap": chunking.overlap} if chunking is not None else None,
            "lexical": dict(self.lexical) if self.lexical is not None else None,
            "point_ids": self.point_ids,
        }

    @classmethod
    def from_record(cls, name: str, location: str, record: Mapping[str, Any]) -> CollectionEncoding:
        if record.get("bienc_schema") is None:
            raise CollectionError(f"collection {name!r} at {location} was not created by bienc; "
                                  "choose another collection name")
        chunking = record.get("chunking")
        try:
            made = cls(
                model=str(record["model"]), dimension=int(record["dimension"]),
                encoding=str(record.get("encoding") or ""), source=record.get("source"),
                weights=record.get("weights"),
                chunking=Chunking(bool(chunking["enabled"]), int(chunking["tokens"]),
                                  int(chunking["overlap"])) if chunking else None,
                lexical=record.get("lexical"),
                point_ids=str(record.get("point_ids") or "uuid5"),
            )
            if made.point_ids not in POINT_IDS:
                raise ValueError(f"point ids {made.point_ids!r} are none of {', '.join(POINT_IDS)}"
                                 " (a newer bienc made it?)")
            return made
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectionError(f"collection {name!r} at {location}: its record is damaged "
                                  f"({type(exc).__name__}: {exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        """For users (bienc info, GET /v1/collections): the record without its schema number."""
        shown = self.record()
        del shown["bienc_schema"]
        return shown


def check_model(name: str, recorded: CollectionEncoding, model: str, dimension: int,
                weights: str | None) -> None:
    """Raise CollectionError unless a loaded model (its name, dimension and weights hash) is
    the one that filled collection `name`. Weights are compared where both are known: the same
    name with other weights (a fine-tuned copy, an upgraded model package) is another model."""
    if recorded.model != model or recorded.dimension != dimension:
        raise CollectionError(
            f"collection {name!r} holds {recorded.dimension}-d vectors of model "
            f"{recorded.model!r}, but the model loaded for it is {model!r} ({dimension}-d). "
            f"Make {recorded.model!r} loadable here (BIENC_MODEL={recorded.source or recorded.model}), "
            "or use another collection."
        )
    if recorded.weights and weights and recorded.weights != weights:
        raise CollectionError(
            f"collection {name!r} was filled by model {recorded.model!r} with weights "
            f"{recorded.weights[:16]}..., but the model loaded as {model!r} has weights "
            f"{weights[:16]}...: another model under the same name (a changed copy, or an "
            f"upgraded model package). Restore those weights, or rebuild the collection with "
            f"`bienc reindex {name} --model {recorded.source or recorded.model}`."
        )
