"""What bienc needs from a vector store, in its own types: the Store protocol, points, hits,
collection info. Engines implement it (bienc.store.qdrant: a Qdrant server or qdrant-client's
local mode; bienc.store.edge: Qdrant Edge in-process) on bienc.store.base, which holds what
they share; bienc.store.factory picks one.

A point is one chunk of one document. Its id is derived from (document id, chunk number), so
writing a document again overwrites its points instead of adding new ones. Chunk 0 carries the
whole document text; every chunk carries the document id, title, metadata, content hash and
version (bienc.queue.versions).
Every chunk has a dense vector (unnamed); in a collection with lexical vectors, chunk 0 also
has the whole document's BM25 vector (sparse, named LEXICAL_VECTOR, IDF applied by the store
at query time over the chunk-0 points it holds, so over documents).

A search runs in legs (dense, lexical), each returning Candidates (a document, its best chunk,
the score); the search module fuses and cuts them, and `fetch_hits` reads the payloads of the
documents it keeps, and only those.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from bienc.config.errors import CollectionError, CollectionNotFoundError
from bienc.config.settings import HNSW_EF_PER_DOCUMENT
from bienc.store.filters import Condition, MetadataFilter
from bienc.store.record import CollectionEncoding

if TYPE_CHECKING:  # numpy: only processes that encode or search need it
    import numpy as np

_POINT_NAMESPACE = uuid.UUID("6f1c3a52-8a0e-4d55-9a53-2f1f0b1e7c11")
_NAMESPACE_BYTES = _POINT_NAMESPACE.bytes
LEXICAL_VECTOR = "bm25"  # the sparse vector's name; the dense vector is the unnamed default
HIT_FIELDS = ["doc_id", "chunk", "content_hash", "title", "metadata", "page", "section"]
TEXT_FIELDS = ["chunk_text", "text"]
# A document's chunk 0: counting these counts documents. Lexical IDF is computed over them,
# live points only (each document counts once, a deleted one stops counting at once): the
# engines' collection-wide statistics go on counting deleted and overwritten points (Edge,
# measured with qdrant-edge-py 0.9.0; a server while they sit in its sparse index, Qdrant >= 1.19
# taking a corpus filter).
FIRST_CHUNKS: tuple[Condition, ...] = (("chunk", (0,)),)
IDF_CORPUS = FIRST_CHUNKS
EF_MIN = 128  # HNSW candidates a dense search keeps at least: a shorter walk misses neighbours
# Graph size (points) up to which the candidate lists above are kept as they are: at 100,000
# points they find 0.99 of the exact top 10 (bench/search_latency.py). A bigger graph walks a
# longer list, one more list per tenfold growth (hnsw_ef).
EF_REFERENCE_POINTS = 100_000


def hnsw_ef(documents: int, most: int, per_document: int = HNSW_EF_PER_DOCUMENT,
            points: int = 0, reference: int = EF_REFERENCE_POINTS) -> int:
    """The HNSW candidate list (`ef`) of a dense search for `documents` documents in a graph
    of `points` points (0: not known): it grows with the documents, `per_document`
    (BIENC_HNSW_EF_PER_DOCUMENT) a document, EF_MIN at least; and, past `reference` points,
    with the graph's size, times 1 + log10(points / reference) (x2 at ten times the
    reference). At the same list, a bigger graph finds fewer of the true neighbours
    (bench/search_latency.py, top-10 at 256 candidates, SciFact chunks: 0.997 at 100,000
    points, 0.976 at 1,000,000); the list grows as the logarithm of the size, as HNSW's
    search cost does (Malkov and Yashunin, 2018), so a search's cost keeps to that
    logarithm. `most` (BIENC_HNSW_EF) at most."""
    ef = max(EF_MIN, per_document * documents)
    if points > reference:
        ef = round(ef * (1 + math.log10(points / reference)))
    return min(most, ef)


def point_id(doc_id: str, chunk_no: int, ids: str = "document-key") -> str:
    """Deterministic point id of a document's chunk: same input, same id, across processes,
    made as a collection records (CollectionEncoding.point_ids):

    - "document-key": 12 bytes of sha1(namespace, doc_id) (UUID version and variant bits
      set), then the chunk number (4 bytes, big-endian). A search learns from a point's id
      alone which document it belongs to (document_key) and which chunk it is: the dense leg
      groups chunks by document without reading their payloads, which cost ~5 us a point
      (measured with Qdrant Edge; a top-100 search reads ~500 chunks). 90 random bits name a
      document: two of 10^8 documents share a key with probability ~4e-12.
    - "uuid5": uuid5(namespace, "doc_id NUL chunk"), collections made before; a reindex
      makes the new collection's ids the first way.
    """
    return _keyed_id(doc_id, chunk_no) if ids == "document-key" else _uuid5_id(doc_id, chunk_no)


def document_key(point: uuid.UUID) -> int:
    """The document part of a "document-key" point id (point_id)."""
    return point.int >> 32


def chunk_number(point: uuid.UUID) -> int:
    """The chunk number in a "document-key" point id (point_id)."""
    return point.int & 0xFFFFFFFF


def _uuid_text(raw: bytes | bytearray) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=1 << 16)
def _keyed_id(doc_id: str, chunk_no: int) -> str:
    if not 0 <= chunk_no < 1 << 32:
        raise ValueError(f"chunk number {chunk_no} is out of range")
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + doc_id.encode()).digest()[:12])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return _uuid_text(digest + chunk_no.to_bytes(4, "big"))


@functools.lru_cache(maxsize=1 << 16)
def _uuid5_id(doc_id: str, chunk_no: int) -> str:
    """uuid5(namespace, "doc_id NUL chunk"), spelled out: uuid.uuid5 takes ~6 us, and a
    top-1000 search needs up to 2,000 of them (cached: search results repeat documents)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{doc_id}\x00{chunk_no}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return _uuid_text(digest)


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


class Candidate(NamedTuple):
    """A document found by a search leg (or by their fusion): its best chunk and the score.
    `scores` holds each leg's own score of a fused document. A tuple, not a dataclass: a
    top-1000 hybrid search makes ~5,000 of them, and a frozen dataclass took 2.5 times as
    long to build (560 against 220 ns)."""

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
    page: int | None = None  # the best chunk's PDF page (1-based), for documents from PDFs
    section: list[str] | None = None  # the best chunk's heading trail, outermost first

    def to_dict(self) -> dict[str, Any]:
        """JSON form; `page` and `section` only where the document has them (files)."""
        hit = {
            "id": self.doc_id, "score": self.score, "text": self.text, "snippet": self.snippet,
            "title": self.title, "metadata": self.metadata, "chunk": self.chunk,
        }
        if self.page is not None:
            hit["page"] = self.page
        if self.section:
            hit["section"] = list(self.section)
        if self.scores is not None:
            hit["scores"] = dict(self.scores)
        return hit


@dataclass(frozen=True)
class CollectionInfo:
    name: str  # what users call it
    physical: str  # the store's collection that name resolves to
    encoding: CollectionEncoding
    documents: int
    points: int
    # the embedded store's index: parts indexed, points not yet, builds failed in a row
    # (bienc.store.parts.Parts.state); None for a Qdrant server, which builds its own
    index: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        info = {"name": self.name, "physical": self.physical, "documents": self.documents,
                "points": self.points, **self.encoding.to_dict()}
        if self.index is not None:
            info["index"] = dict(self.index)
        return info


class Names(Protocol):
    """A store's names: what `resolved` needs (every Store has it)."""

    location: str

    def resolve(self, name: str) -> str | None: ...


def resolved(store: Names, name: str) -> str:
    """The physical collection `name` stands for, or CollectionNotFoundError."""
    physical = store.resolve(name)
    if physical is None:
        raise CollectionNotFoundError(
            f"collection {name!r} does not exist at {store.location}; ingest into it first")
    return physical


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
            page=payload.get("page"), section=payload.get("section") or None,
        ))
    return hits


def hit_chunks(chosen: Sequence[Candidate]) -> list[tuple[str, int]]:
    """The chunks whose payloads `hits_from` needs: each document's best chunk and chunk 0."""
    keys = [(c.doc_id, c.chunk) for c in chosen]
    keys += [(c.doc_id, 0) for c in chosen if c.chunk != 0]
    return keys


class Store(Protocol):
    """What bienc needs from a vector store; VectorStore (qdrant-client: a Qdrant server or
    its embedded local mode) and EdgeVectorStore (Qdrant Edge, in-process) provide it.

    Every method taking a collection `name` takes a user's name (resolved through its alias)
    or a physical collection's (bienc.store.record)."""

    location: str

    def close(self) -> None: ...
    # Collections and names
    def ensure_collection(self, name: str, encoding: CollectionEncoding) -> CollectionEncoding: ...
    def describe(self, name: str) -> CollectionEncoding: ...
    def resolve(self, name: str) -> str | None: ...
    def switch_alias(self, name: str, physical: str) -> None: ...
    def list_collections(self) -> list[str]: ...
    def list_physical(self) -> list[str]: ...
    def info(self, name: str) -> CollectionInfo: ...
    def index_builds(self) -> dict[str, dict[str, Any]]: ...
    def delete_collection(self, name: str) -> bool: ...
    def drop_physical(self, physical: str) -> bool: ...
    # Points
    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None: ...
    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]: ...
    def document_ids(self, name: str, query_filter: MetadataFilter | None = None) -> list[str]: ...
    def count_documents(self, name: str, query_filter: MetadataFilter | None = None) -> int: ...
    def document_points(self, name: str, doc_ids: Sequence[str]) -> list[ChunkPoint]: ...
    def delete_chunks_from(self, name: str, first_stale: Mapping[str, int]) -> None: ...
    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None: ...
    def set_versions(self, name: str, versions: Mapping[str, int]) -> None: ...
    def get_document(self, name: str, doc_id: str) -> dict[str, Any] | None: ...
    # Whole collections (snapshots, export)
    def read_points(self, name: str, sink: Callable[[Sequence[ChunkPoint]], None]) -> None: ...
    def documents_page(self, name: str, after: str | None, limit: int
                       ) -> tuple[list[dict[str, Any]], str | None]: ...
    def server_snapshot(self, physical: str, into: Path) -> bool: ...
    def restore_server_snapshot(self, physical: str, source: Path, checksum: str) -> None: ...
    # Search
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
