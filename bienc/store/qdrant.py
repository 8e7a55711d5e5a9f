"""Chunk vectors through qdrant-client: a Qdrant server (BIENC_QDRANT_URL) or qdrant-client's
embedded local mode. The interface and the point layout are bienc.store.interface's; filters
are bienc.store.filters', translated here."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from bienc.config.errors import CollectionNotFoundError, StoreUnavailableError
from bienc.store.filters import MetadataFilter
from bienc.store.interface import (
    ChunkPoint,
    CollectionInfo,
    Hit,
    collection_metadata,
    point_id,
    verify_recorded,
)


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, (ResponseHandlingException, httpx.TransportError, ConnectionError))


class VectorStore:
    """Collections of chunk points. Methods raise StoreUnavailableError when Qdrant does not
    answer (callers may retry), CollectionError for a missing or mismatched collection."""

    def __init__(self, client: QdrantClient, location: str, *, remote: bool,
                 shard_number: int | None = None,
                 replication_factor: int | None = None, hnsw_m: int = 16,
                 hnsw_ef_construct: int = 100, search_ef: int = 128, quantization: bool = False,
                 oversampling: float = 2.0):
        self._client = client
        self.location = location
        self._remote = remote
        self._hnsw = qm.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct)
        self._quantization = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(
            type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)) if quantization else None
        rescoring = qm.QuantizationSearchParams(rescore=True, oversampling=oversampling) \
            if quantization else None
        # the embedded engine has no index to tune (and warns when given search params)
        self._search_params = {exact: qm.SearchParams(hnsw_ef=search_ef, exact=exact,
                                                      quantization=rescoring)
                               if remote else None
                               for exact in (False, True)}
        # The embedded engine is plain Python without locking of its own: calls from the
        # API's threads and the in-process worker take turns. A server needs no such lock.
        self._lock: AbstractContextManager[Any] = (
            nullcontext() if remote else threading.RLock()
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
        if self._remote:  # the embedded engine has none
            for field_name, schema in (("doc_id", qm.PayloadSchemaType.KEYWORD),
                                       ("chunk", qm.PayloadSchemaType.INTEGER)):
                self._call("create_payload_index", self._client.create_payload_index,
                           name, field_name, field_schema=schema)

    def check_collection(self, name: str, dimension: int | None, model: str,
                         encoding: str | None = None) -> None:
        """Raise CollectionError unless `name` exists and holds `dimension`-d vectors (any, when
        None) of `model`, encoded with `encoding` when given; CollectionNotFoundError if it
        does not exist."""
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
               query_filter: MetadataFilter | None = None, score_threshold: float | None = None,
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
            query_filter=qdrant_filter(query_filter), score_threshold=score_threshold,
            with_payload=fields,
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


def qdrant_filter(query_filter: MetadataFilter | None) -> qm.Filter | None:
    """The filter in qdrant-client's terms: one condition per key, any-of for a list."""
    if query_filter is None:
        return None
    conditions: list[qm.Condition] = [
        qm.FieldCondition(key=m.payload_key, match=qm.MatchValue(value=m.values[0]))
        if len(m.values) == 1 else
        qm.FieldCondition(key=m.payload_key, match=qm.MatchAny(any=list(m.values)))  # type: ignore[arg-type]
        for m in query_filter.matches
    ]
    return qm.Filter(must=conditions)
