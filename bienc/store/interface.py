"""What bienc needs from a vector store, in its own types: the Store protocol, points, hits,
collection info. Engines implement it (bienc.store.qdrant: a Qdrant server or qdrant-client's
local mode; bienc.store.edge: Qdrant Edge in-process); bienc.store.factory picks one.

A point is one chunk of one document. Its id is derived from (document id, chunk number), so
writing a document again overwrites its points instead of adding new ones. Chunk 0 carries the
whole document text; every chunk carries the document id, title, metadata and content hash.
Every chunk has a dense vector (unnamed); in a collection with lexical vectors, chunk 0 also
has the whole document's BM25 vector (sparse, named LEXICAL_VECTOR, IDF applied by the store
at query time over the chunk-0 points it holds, so over documents).

A search runs in legs (dense, lexical), each returning Candidates (a document, its best chunk,
the score); the search module fuses and cuts them, and `fetch_hits` reads the payloads of the
documents it keeps, and only those.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bienc.config.errors import CollectionError
from bienc.store.filters import MetadataFilter

if TYPE_CHECKING:  # numpy: only processes that encode or search need it
    import numpy as np

_POINT_NAMESPACE = uuid.UUID("6f1c3a52-8a0e-4d55-9a53-2f1f0b1e7c11")
SCHEMA_VERSION = 1
LEXICAL_VECTOR = "bm25"  # the sparse vector's name; the dense vector is the unnamed default
HIT_FIELDS = ["doc_id", "chunk", "content_hash", "title", "metadata"]
TEXT_FIELDS = ["chunk_text", "text"]


def point_id(doc_id: str, chunk_no: int) -> str:
    """Deterministic point id of a document's chunk: same input, same id, across processes."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}\x00{chunk_no}"))


class SparseVector(Protocol):
    """Token ids and their weights (qdrant_edge.SparseVector is one)."""

    @property
    def indices(self) -> Sequence[int]: ...
    @property
    def values(self) -> Sequence[float]: ...


@dataclass(frozen=True)
class ChunkPoint:
    doc_id: str
    chunk_no: int
    vector: np.ndarray
    payload: dict[str, Any]
    sparse: SparseVector | None = None  # the whole document's lexical vector (chunk 0 only)


@dataclass(frozen=True)
class Candidate:
    """A document found by a search leg (or by their fusion): its best chunk and the score.
    `scores` holds each leg's own score of a fused document."""

    doc_id: str
    chunk: int
    score: float
    scores: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Hit:
    """One document in a result list, scored by its best-matching chunk."""

    doc_id: str
    score: float
    text: str | None
    snippet: str | None
    title: str | None
    metadata: dict[str, Any]
    chunk: int
    scores: Mapping[str, float] | None = None  # hybrid: each leg's score (absent: not found there)

    def to_dict(self) -> dict[str, Any]:
        hit = {
            "id": self.doc_id, "score": self.score, "text": self.text, "snippet": self.snippet,
            "title": self.title, "metadata": self.metadata, "chunk": self.chunk,
        }
        if self.scores is not None:
            hit["scores"] = dict(self.scores)
        return hit


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str | None
    dimension: int
    documents: int
    points: int
    encoding: str | None = None  # backend/precision that encoded the documents
    lexical: Mapping[str, Any] | None = None  # BM25 parameters; None: dense vectors only

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "encoding": self.encoding,
                "dimension": self.dimension, "documents": self.documents, "points": self.points,
                "lexical": dict(self.lexical) if self.lexical is not None else None}


def collection_metadata(model: str, dimension: int, encoding: str,
                        lexical: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a collection records about the vectors in it: the model, its dimension and
    encoder, and the parameters of its lexical vectors (None: it has none)."""
    return {"bienc_schema": SCHEMA_VERSION, "model": model, "dimension": dimension,
            "encoding": encoding, "lexical": dict(lexical) if lexical is not None else None}


def vector_family(encoding: str) -> str:
    """Encodings whose vectors may share a collection: float32 and bfloat16 of either backend
    agree to a cosine of 0.9999 or better; int8 moves vectors further (README,
    "Speed")."""
    return "int8" if encoding.endswith("/int8") else "float"


def verify_recorded(name: str, location: str, recorded: Mapping[str, Any], size: int | None,
                    dimension: int | None, model: str, encoding: str | None = None) -> None:
    """Raise CollectionError unless collection `name` (its metadata `recorded`, vectors of
    `size`) holds `dimension`-d vectors of `model` and, when `encoding` is given, vectors of
    the same family (vector_family), so that one collection never mixes int8 and float.
    `dimension` None checks the model alone (a process that has not loaded it)."""
    if recorded.get("bienc_schema") is None:
        raise CollectionError(
            f"collection {name!r} at {location} was not created by bienc; "
            "choose another collection name"
        )
    if (dimension is not None and size != dimension) or recorded.get("model") != model:
        makes = f" makes {dimension}-d vectors" if dimension is not None else ""
        raise CollectionError(
            f"collection {name!r} holds {size}-d vectors of model {recorded.get('model')!r}, "
            f"but the configured model is {model!r}{makes}. Use another "
            f"collection, or set BIENC_MODEL to {recorded.get('model')!r}."
        )
    stored = recorded.get("encoding")
    if encoding and stored and vector_family(str(stored)) != vector_family(encoding):
        backend, _, dtype = str(stored).partition("/")
        raise CollectionError(
            f"collection {name!r} holds vectors encoded with {stored}, this encoder is "
            f"{encoding}; int8 and full-precision vectors do not mix in one collection. Set "
            f"BIENC_BACKEND={backend} and BIENC_DTYPE={dtype}, or ingest into another collection."
        )


def no_lexical_vectors(name: str) -> CollectionError:
    return CollectionError(f"collection {name!r} has no lexical vectors (it was created without them)")


def hits_from(chosen: Sequence[Candidate], payloads: Mapping[tuple[str, int], Mapping[str, Any]],
              with_text: bool) -> list[Hit]:
    """The hits of `chosen` documents, in order, from the payloads of their best chunks and
    of their chunk 0 (keyed by document id and chunk number).

    A document whose best chunk belongs to another version than its chunk 0 (a re-ingest is
    being written) or whose chunk 0 is gone (deleted meanwhile) is left out rather than shown
    with mixed text.
    """
    hits = []
    for candidate in chosen:
        payload = payloads.get((candidate.doc_id, candidate.chunk))
        head = payloads.get((candidate.doc_id, 0))
        if payload is None or head is None or head.get("content_hash") != payload.get("content_hash"):
            continue
        hits.append(Hit(
            doc_id=candidate.doc_id, score=float(candidate.score),
            text=head.get("text") if with_text else None,
            snippet=payload.get("chunk_text", payload.get("text")) if with_text else None,
            title=payload.get("title"), metadata=payload.get("metadata") or {},
            chunk=candidate.chunk, scores=candidate.scores,
        ))
    return hits


def hit_chunks(chosen: Sequence[Candidate]) -> list[tuple[str, int]]:
    """The chunks whose payloads `hits_from` needs: each document's best chunk and chunk 0."""
    keys = [(c.doc_id, c.chunk) for c in chosen]
    keys += [(c.doc_id, 0) for c in chosen if c.chunk != 0]
    return keys


class Store(Protocol):
    """What bienc needs from a vector store; VectorStore (qdrant-client: a Qdrant server or
    its embedded local mode) and EdgeVectorStore (Qdrant Edge, in-process) provide it."""

    location: str

    def close(self) -> None: ...
    def ensure_collection(self, name: str, dimension: int, model: str, encoding: str = "",
                          lexical: Mapping[str, Any] | None = None) -> dict[str, Any]: ...
    def check_collection(self, name: str, dimension: int | None, model: str,
                         encoding: str | None = None) -> dict[str, Any]: ...
    def list_collections(self) -> list[str]: ...
    def info(self, name: str) -> CollectionInfo: ...
    def delete_collection(self, name: str) -> bool: ...
    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None: ...
    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]: ...
    def delete_chunks_from(self, name: str, first_stale: Mapping[str, int]) -> None: ...
    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None: ...
    def get_document(self, name: str, doc_id: str) -> dict[str, Any] | None: ...
    def dense_candidates(self, name: str, vector: np.ndarray, limit: int, *,
                         query_filter: MetadataFilter | None = None,
                         score_threshold: float | None = None,
                         exact: bool = False) -> list[Candidate]: ...
    def lexical_candidates(self, name: str, query: SparseVector, limit: int, *,
                           query_filter: MetadataFilter | None = None,
                           score_threshold: float | None = None) -> list[Candidate]: ...
    def fetch_hits(self, name: str, chosen: Sequence[Candidate], with_text: bool = True
                   ) -> list[Hit]: ...
    def search(self, name: str, vector: np.ndarray, top_k: int, *,
               query_filter: MetadataFilter | None = None, score_threshold: float | None = None,
               with_text: bool = True, exact: bool = False) -> list[Hit]: ...
