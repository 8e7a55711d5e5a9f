"""Chunk vectors in Qdrant: one small interface over a Qdrant server and the embedded engine.

A point is one chunk of one document. Its id is derived from (document id, chunk number), so
writing a document again overwrites its points instead of adding new ones. Chunk 0 carries the
whole document text; every chunk carries the document id, title, metadata and content hash.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from core.errors import (
    CollectionError,
    CollectionNotFoundError,
    ConfigError,
    InvalidInputError,
    StoreUnavailableError,
)
from core.settings import Settings

_POINT_NAMESPACE = uuid.UUID("6f1c3a52-8a0e-4d55-9a53-2f1f0b1e7c11")
SCHEMA_VERSION = 1


def point_id(doc_id: str, chunk_no: int) -> str:
    """Deterministic point id of a document's chunk: same input, same id, across processes."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}\x00{chunk_no}"))


@dataclass(frozen=True)
class ChunkPoint:
    doc_id: str
    chunk_no: int
    vector: np.ndarray
    payload: dict[str, Any]


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.doc_id, "score": self.score, "text": self.text, "snippet": self.snippet,
            "title": self.title, "metadata": self.metadata, "chunk": self.chunk,
        }


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str | None
    dimension: int
    documents: int
    points: int
    encoding: str | None = None  # backend/precision that encoded the documents

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "encoding": self.encoding,
                "dimension": self.dimension, "documents": self.documents, "points": self.points}


def collection_metadata(model: str, dimension: int, encoding: str) -> dict[str, Any]:
    """What a collection records about the vectors in it."""
    return {"bienc_schema": SCHEMA_VERSION, "model": model, "dimension": dimension,
            "encoding": encoding}


def vector_family(encoding: str) -> str:
    """Encodings whose vectors may share a collection: float32 and bfloat16 of either backend
    agree to a cosine of 0.9999 or better; int8 moves vectors further (README,
    "Speed")."""
    return "int8" if encoding.endswith("/int8") else "float"


def verify_recorded(name: str, location: str, recorded: Mapping[str, Any], size: int | None,
                    dimension: int, model: str, encoding: str | None = None) -> None:
    """Raise CollectionError unless collection `name` (its metadata `recorded`, vectors of
    `size`) holds `dimension`-d vectors of `model` and, when `encoding` is given, vectors of
    the same family (vector_family), so that one collection never mixes int8 and float."""
    if recorded.get("bienc_schema") is None:
        raise CollectionError(
            f"collection {name!r} at {location} was not created by bienc; "
            "choose another collection name"
        )
    if size != dimension or recorded.get("model") != model:
        raise CollectionError(
            f"collection {name!r} holds {size}-d vectors of model {recorded.get('model')!r}, "
            f"but the configured model {model!r} makes {dimension}-d vectors. Use another "
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


class Store(Protocol):
    """What bienc needs from a vector store; VectorStore (qdrant-client: a Qdrant server or
    its embedded local mode) and EdgeVectorStore (Qdrant Edge, in-process) provide it."""

    location: str

    def close(self) -> None: ...
    def ensure_collection(self, name: str, dimension: int, model: str, encoding: str = "") -> None: ...
    def check_collection(self, name: str, dimension: int, model: str,
                         encoding: str | None = None) -> None: ...
    def list_collections(self) -> list[str]: ...
    def info(self, name: str) -> CollectionInfo: ...
    def delete_collection(self, name: str) -> bool: ...
    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None: ...
    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]: ...
    def delete_chunks_from(self, name: str, first_stale: Mapping[str, int]) -> None: ...
    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None: ...
    def get_document(self, name: str, doc_id: str) -> dict[str, Any] | None: ...
    def search(self, name: str, vector: np.ndarray, top_k: int, *,
               query_filter: qm.Filter | None = None, score_threshold: float | None = None,
               with_text: bool = True, exact: bool = False) -> list[Hit]: ...


def metadata_filter(filters: Mapping[str, Any] | None) -> qm.Filter | None:
    """Exact-match filter on user metadata; a list value matches any of its items."""
    if not filters:
        return None
    conditions: list[qm.Condition] = []
    for key, value in filters.items():
        if not key or not isinstance(key, str):
            raise InvalidInputError("filter keys must be non-empty strings")
        field = f"metadata.{key}"
        if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
            conditions.append(qm.FieldCondition(key=field, match=qm.MatchAny(any=value)))
        elif isinstance(value, (str, int, bool)):
            conditions.append(qm.FieldCondition(key=field, match=qm.MatchValue(value=value)))
        else:
            raise InvalidInputError(
                f"filter {key!r}: value must be a string, integer, boolean or a non-empty list of "
                f"strings or integers, got {value!r}"
            )
    return qm.Filter(must=conditions)


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, (ResponseHandlingException, httpx.TransportError, ConnectionError))


class VectorStore:
    """Collections of chunk points. Methods raise StoreUnavailableError when Qdrant does not
    answer (callers may retry), CollectionError for a missing or mismatched collection."""

    def __init__(self, client: QdrantClient, location: str, *, shard_number: int | None = None,
                 replication_factor: int | None = None, hnsw_m: int = 16,
                 hnsw_ef_construct: int = 100, search_ef: int = 128, quantization: bool = False,
                 oversampling: float = 2.0):
        self._client = client
        self.location = location
        self._hnsw = qm.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct)
        self._quantization = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(
            type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)) if quantization else None
        rescoring = qm.QuantizationSearchParams(rescore=True, oversampling=oversampling) \
            if quantization else None
        # the embedded engine has no index to tune (and warns when given search params)
        self._search_params = {exact: qm.SearchParams(hnsw_ef=search_ef, exact=exact,
                                                      quantization=rescoring)
                               if location.startswith(("http://", "https://")) else None
                               for exact in (False, True)}
        # The embedded engine is plain Python without locking of its own: calls from the
        # API's threads and the in-process worker take turns. A server needs no such lock.
        self._lock: AbstractContextManager[Any] = (
            nullcontext() if location.startswith(("http://", "https://")) else threading.RLock()
        )
        self._shard_number = shard_number
        self._replication_factor = replication_factor

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._lock:
                return fn(*args, **kwargs)
        except Exception as exc:
            if _is_transient(exc):
                raise StoreUnavailableError(
                    f"Qdrant at {self.location} did not answer ({what}): {exc}"
                ) from exc
            raise

    def close(self) -> None:
        """Release the store (the embedded engine's folder lock, or the HTTP connections)."""
        with self._lock:
            self._client.close()

    # Collections

    def ensure_collection(self, name: str, dimension: int, model: str, encoding: str = "") -> None:
        """Create `name` for `model` if missing; refuse one that another model or encoding
        filled."""
        if not self._call("collection_exists", self._client.collection_exists, name):
            try:
                self._call("create_collection", self._client.create_collection, name,
                    vectors_config=qm.VectorParams(size=dimension, distance=qm.Distance.COSINE),
                    shard_number=self._shard_number, replication_factor=self._replication_factor,
                    hnsw_config=self._hnsw, quantization_config=self._quantization,
                    metadata=collection_metadata(model, dimension, encoding),
                )
            except (ValueError, UnexpectedResponse) as exc:
                if "already exists" not in str(exc):  # a concurrent worker created it first
                    raise
            self._create_indexes(name)
        self.check_collection(name, dimension, model, encoding)

    def _create_indexes(self, name: str) -> None:
        if self.location.startswith(("http://", "https://")):  # the embedded engine has none
            for field_name, schema in (("doc_id", qm.PayloadSchemaType.KEYWORD),
                                       ("chunk", qm.PayloadSchemaType.INTEGER)):
                self._call("create_payload_index", self._client.create_payload_index,
                           name, field_name, field_schema=schema)

    def check_collection(self, name: str, dimension: int, model: str,
                         encoding: str | None = None) -> None:
        """Raise CollectionError unless `name` exists and holds `dimension`-d vectors of `model`
        (encoded with `encoding`, when given)."""
        info = self._collection(name)
        params = info.config.params.vectors
        size = params.size if isinstance(params, qm.VectorParams) else None
        verify_recorded(name, self.location, info.config.metadata or {}, size, dimension, model,
                        encoding)

    def _collection(self, name: str) -> qm.CollectionInfo:
        try:
            return self._call("get_collection", self._client.get_collection, name)  # type: ignore[no-any-return]
        except (ValueError, UnexpectedResponse) as exc:
            if isinstance(exc, UnexpectedResponse) and exc.status_code != 404:
                raise
            raise CollectionNotFoundError(
                f"collection {name!r} does not exist at {self.location}; ingest into it first"
            ) from exc

    def list_collections(self) -> list[str]:
        response = self._call("get_collections", self._client.get_collections)
        return sorted(c.name for c in response.collections)

    def info(self, name: str) -> CollectionInfo:
        info = self._collection(name)
        params = info.config.params.vectors
        first_chunks = qm.Filter(must=[qm.FieldCondition(key="chunk", match=qm.MatchValue(value=0))])
        documents = self._call("count", self._client.count, name, count_filter=first_chunks).count
        points = self._call("count", self._client.count, name).count
        return CollectionInfo(
            name=name,
            model=(info.config.metadata or {}).get("model"),
            encoding=(info.config.metadata or {}).get("encoding"),
            dimension=params.size if isinstance(params, qm.VectorParams) else 0,
            documents=documents,
            points=points,
        )

    def delete_collection(self, name: str) -> bool:
        """Drop `name` and its points; False when it did not exist."""
        if not self._call("collection_exists", self._client.collection_exists, name):
            return False
        self._call("delete_collection", self._client.delete_collection, name)
        return True

    # Points

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Write points and return once Qdrant has applied them. Existing ids are overwritten."""
        if not points:
            return
        structs = [
            qm.PointStruct(id=point_id(p.doc_id, p.chunk_no), vector=p.vector.tolist(),
                           payload=p.payload)
            for p in points
        ]
        self._call("upsert", self._client.upsert, name, points=structs, wait=True)

    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Payload (all of it, or `fields`) of chunk 0 of each stored document among
        `doc_ids`; absent documents are left out."""
        ids = [point_id(doc_id, 0) for doc_id in doc_ids]
        if not ids:
            return {}
        records = self._call("retrieve", self._client.retrieve, name, ids=ids,
                             with_payload=fields if fields is not None else True,
                             with_vectors=False)
        return {r.payload["doc_id"]: r.payload for r in records if r.payload}

    def delete_chunks_from(self, name: str, first_stale: Mapping[str, int]) -> None:
        """For each document, delete its chunks numbered `first_stale[doc_id]` and above."""
        if not first_stale:
            return
        per_doc = [
            qm.Filter(must=[
                qm.FieldCondition(key="doc_id", match=qm.MatchValue(value=doc_id)),
                qm.FieldCondition(key="chunk", range=qm.Range(gte=first)),
            ])
            for doc_id, first in first_stale.items()
        ]
        selector = qm.FilterSelector(filter=qm.Filter(should=per_doc))  # type: ignore[arg-type]
        self._call("delete", self._client.delete, name, points_selector=selector, wait=True)

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None:
        """Delete every chunk of the given documents."""
        if not doc_ids:
            return
        self._collection(name)
        selector = qm.FilterSelector(filter=qm.Filter(must=[
            qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids)))]))
        self._call("delete", self._client.delete, name, points_selector=selector, wait=True)

    def get_document(self, name: str, doc_id: str) -> dict[str, Any] | None:
        """Chunk 0's payload of a document: its full text, title and metadata."""
        self._collection(name)
        return self.first_chunks(name, [doc_id]).get(doc_id)

    # Search

    def search(self, name: str, vector: np.ndarray, top_k: int, *,
               query_filter: qm.Filter | None = None, score_threshold: float | None = None,
               with_text: bool = True, exact: bool = False) -> list[Hit]:
        """The `top_k` best documents, each scored by its best chunk, best first. `exact`
        skips the ANN index (and quantisation) and scores every point: the reference for recall.

        A hit whose chunk belongs to another version of the document than its chunk 0 (a
        re-ingest is being written) is left out rather than shown with mixed text.
        """
        fields = ["doc_id", "chunk", "content_hash", "title", "metadata"]
        if with_text:
            fields += ["chunk_text", "text"]
        result = self._call("query_points_groups", self._client.query_points_groups, name,
            query=vector.tolist(), group_by="doc_id", limit=top_k, group_size=1,
            query_filter=query_filter, score_threshold=score_threshold, with_payload=fields,
            search_params=self._search_params[exact],
        )
        best = [group.hits[0].payload | {"_score": group.hits[0].score}
                for group in result.groups if group.hits and group.hits[0].payload]
        later = [p["doc_id"] for p in best if p["chunk"] != 0]
        heads = self.first_chunks(name, later, ["doc_id", "content_hash", *(["text"] if with_text else [])])
        hits = []
        for payload in best:
            doc_id = payload["doc_id"]
            head = payload if payload["chunk"] == 0 else heads.get(doc_id)
            if head is None or head.get("content_hash") != payload.get("content_hash"):
                continue  # mid-replacement: chunks of two versions
            hits.append(Hit(
                doc_id=doc_id, score=float(payload["_score"]),
                text=head.get("text") if with_text else None,
                snippet=payload.get("chunk_text", payload.get("text")) if with_text else None,
                title=payload.get("title"), metadata=payload.get("metadata") or {},
                chunk=int(payload["chunk"]),
            ))
        return hits


def open_store(settings: Settings) -> Store:
    """Connect to the configured Qdrant server, or open the embedded store on disk."""
    ann: dict[str, Any] = {
        "hnsw_m": settings.hnsw_m, "hnsw_ef_construct": settings.hnsw_ef_construct,
        "search_ef": settings.hnsw_ef, "quantization": settings.quantization == "int8",
        "oversampling": settings.quantization_oversampling,
    }
    in_memory = settings.resolved_qdrant_path == ":memory:"  # qdrant-local only
    if not settings.qdrant_url and settings.embedded_store == "edge" and not in_memory:
        from core.edge_store import EdgeVectorStore

        return EdgeVectorStore(Path(settings.resolved_qdrant_path), **ann)
    if settings.qdrant_url:
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key,
                              timeout=settings.qdrant_timeout_s)
    elif in_memory:
        client = QdrantClient(location=":memory:")
    else:
        try:
            client = QdrantClient(path=settings.resolved_qdrant_path)
        except RuntimeError as exc:  # portalocker: another process holds the folder
            raise ConfigError(
                f"the embedded store {settings.resolved_qdrant_path} is open in another process "
                "(a running `bienc worker` or `bienc serve`?). Stop it first, or run a Qdrant "
                "server and set BIENC_QDRANT_URL so that processes can share it."
            ) from exc
    return VectorStore(client, settings.store_location, shard_number=settings.shard_number,
                       replication_factor=settings.replication_factor, **ann)
