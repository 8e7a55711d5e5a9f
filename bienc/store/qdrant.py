"""Chunk vectors through qdrant-client: a Qdrant server (BIENC_QDRANT_URL) or qdrant-client's
embedded local mode. The interface and the point layout are bienc.store.interface's; filters
are bienc.store.filters', translated here. The server path needs Qdrant 1.19 or later (IDF
statistics over a corpus filter, for lexical search)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from bienc.config.errors import CollectionError, CollectionNotFoundError, StoreUnavailableError
from bienc.config.settings import HNSW_EF_PER_DOCUMENT
from bienc.store.base import StoreBase
from bienc.store.filters import (
    PAYLOAD_PREFIX,
    Condition,
    FieldRange,
    IndexType,
    MetadataFilter,
    Scalar,
    check_declared,
    conditions,
    translate,
)
from bienc.store.interface import (
    FIRST_CHUNKS,
    HIT_FIELDS,
    IDF_CORPUS,
    LEXICAL_VECTOR,
    TEXT_FIELDS,
    Candidate,
    ChunkPoint,
    CollectionInfo,
    Hit,
    SparseVector,
    hit_chunks,
    hits_from,
    hnsw_ef,
    no_lexical_vectors,
    point_id,
)
from bienc.store.record import CollectionEncoding, physical_name, split_physical


class _ClientBuilder:
    """bienc.store.filters.FilterBuilder for qdrant-client."""

    def equals(self, key: str, value: Scalar) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, match=qm.MatchValue(value=value))

    def equals_any(self, key: str, values: list[Scalar]) -> qm.FieldCondition:
        return qm.FieldCondition(key=key, match=qm.MatchAny(any=values))  # type: ignore[arg-type]

    def within(self, key: str, bounds: FieldRange) -> qm.FieldCondition:
        if bounds.dates:
            return qm.FieldCondition(key=key, range=qm.DatetimeRange(**bounds.bounds()))
        return qm.FieldCondition(key=key, range=qm.Range(**bounds.bounds()))

    def empty(self, key: str) -> qm.IsEmptyCondition:
        return qm.IsEmptyCondition(is_empty=qm.PayloadField(key=key))

    def all_of(self, must: list[Any], must_not: list[Any]) -> qm.Filter:
        return qm.Filter(must=must or None, must_not=must_not or None)


_BUILDER = _ClientBuilder()
_SCHEMAS: dict[IndexType, qm.PayloadSchemaType] = {
    "keyword": qm.PayloadSchemaType.KEYWORD, "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT, "bool": qm.PayloadSchemaType.BOOL,
    "datetime": qm.PayloadSchemaType.DATETIME,
}


def _filter(of: Sequence[Condition]) -> qm.Filter:
    """Conditions in qdrant-client's terms (bienc.store.filters.conditions)."""
    return qm.Filter(must=conditions(of, _BUILDER.equals, _BUILDER.equals_any))  # type: ignore[arg-type]


_FIRST_CHUNKS = _filter(FIRST_CHUNKS)
_IDF_OVER_DOCUMENTS = qm.SearchParams(idf=qm.IdfCorpusParams(corpus=_filter(IDF_CORPUS)))


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, (ResponseHandlingException, httpx.TransportError, ConnectionError))


class VectorStore(StoreBase):
    """Collections of chunk points. Methods raise StoreUnavailableError when Qdrant does not
    answer (callers may retry), CollectionError for a missing or mismatched collection."""

    def __init__(self, client: QdrantClient, location: str, *, remote: bool,
                 api_key: str | None = None, timeout_s: float = 30.0,
                 shard_number: int | None = None,
                 replication_factor: int | None = None, hnsw_m: int = 16,
                 hnsw_ef_construct: int = 100, search_ef: int = 128,
                 ef_per_document: int = HNSW_EF_PER_DOCUMENT, quantization: bool = False,
                 oversampling: float = 2.0, indexed_fields: Mapping[str, IndexType] | None = None):
        self._client = client
        self._declared = dict(indexed_fields or {})
        self._indexed: set[str] = set()  # collections given the declared indexes, by name
        self._point_ids: dict[str, str] = {}  # each collection's point-id scheme, as last read
        self.location = location
        self._remote = remote
        self._api_key = api_key  # for the snapshot files, moved over Qdrant's REST API directly
        self._timeout_s = timeout_s
        self._hnsw = qm.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct)
        self._quantization = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(
            type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)) if quantization else None
        self._rescoring = qm.QuantizationSearchParams(rescore=True, oversampling=oversampling) \
            if quantization else None
        self._search_ef = search_ef
        self._ef_per_document = ef_per_document
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

    # Collections and names

    def _aliases(self) -> dict[str, str]:
        response = self._call("get_aliases", self._client.get_aliases)
        return {a.alias_name: a.collection_name for a in response.aliases}

    def resolve(self, name: str) -> str | None:
        """The physical collection `name` stands for (Qdrant's alias, or a collection of that
        very name), or None."""
        target = self._aliases().get(name)
        if target is not None:
            return target
        return name if self._call("collection_exists", self._client.collection_exists, name) else None

    def switch_alias(self, name: str, physical: str) -> None:
        """Make `name` stand for `physical` in one step (Qdrant applies the alias operations
        of one request atomically). A collection of that very name (made by an older bienc)
        is dropped first: a name cannot be both, so it is missing for that moment."""
        operations: list[qm.AliasOperations] = []
        if name in self._aliases():
            operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=name)))
        elif self._call("collection_exists", self._client.collection_exists, name):
            self._call("delete_collection", self._client.delete_collection, name)
        operations.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(
            collection_name=physical, alias_name=name)))
        self._call("update_collection_aliases", self._client.update_collection_aliases,
                   change_aliases_operations=operations)

    def ensure_collection(self, name: str, encoding: CollectionEncoding) -> CollectionEncoding:
        """The encoding `name` records, creating it with `encoding` if it does not exist: as
        physical collection NAME@1 and the alias NAME, or, for a physical name (NAME@N, a
        reindex's new collection), as that collection alone. Safe against concurrent workers
        creating the same one (the names are fixed, so the loser finds the winner's)."""
        existing = self.resolve(name)
        if existing is not None:
            return self.describe(existing)
        physical = name if split_physical(name) else physical_name(name, 1)
        sparse = {LEXICAL_VECTOR: qm.SparseVectorParams(modifier=qm.Modifier.IDF)} \
            if encoding.lexical is not None else None
        try:
            self._call("create_collection", self._client.create_collection, physical,
                vectors_config=qm.VectorParams(size=encoding.dimension, distance=qm.Distance.COSINE),
                sparse_vectors_config=sparse,
                shard_number=self._shard_number, replication_factor=self._replication_factor,
                hnsw_config=self._hnsw, quantization_config=self._quantization,
                metadata=encoding.record(),
            )
            self._create_indexes(physical)
        except (ValueError, UnexpectedResponse) as exc:
            if "already exists" not in str(exc):  # a concurrent worker created it first
                raise
        if physical != name:
            try:
                self._call("update_collection_aliases", self._client.update_collection_aliases,
                           change_aliases_operations=[qm.CreateAliasOperation(create_alias=qm.CreateAlias(
                               collection_name=physical, alias_name=name))])
            except (ValueError, UnexpectedResponse) as exc:
                if "already exists" not in str(exc):
                    raise
        return self.describe(name)

    def _create_indexes(self, name: str) -> None:
        if self._remote:  # the embedded engine has none
            for field_name, schema in (("doc_id", qm.PayloadSchemaType.KEYWORD),
                                       ("chunk", qm.PayloadSchemaType.INTEGER)):
                self._call("create_payload_index", self._client.create_payload_index,
                           name, field_name, field_schema=schema)
            self._index_declared(name)

    def _index_declared(self, name: str) -> None:
        """Give a server's collection the declared payload indexes (BIENC_INDEXED_FIELDS) it
        lacks or has of another type; once per collection name and process."""
        if not self._remote or not self._declared or name in self._indexed:
            return
        schema = self._collection(name).payload_schema or {}
        for key, kind in self._declared.items():
            field_name, wanted = PAYLOAD_PREFIX + key, _SCHEMAS[kind]
            held = schema.get(field_name)
            if held is None or held.data_type != wanted:
                self._call("create_payload_index", self._client.create_payload_index, name,
                           field_name, field_schema=wanted, wait=True)
        self._indexed.add(name)

    def _query_filter(self, name: str, query_filter: MetadataFilter | None,
                      also: Sequence[Condition] = ()) -> qm.Filter | None:
        """A request's filter in qdrant-client's terms, with bienc's conditions `also`; refuses a
        condition a declared index would answer wrongly (as the Edge store does)."""
        if query_filter is None:
            return _filter(also) if also else None
        check_declared(query_filter, self._declared)
        self._index_declared(name)
        return translate(query_filter, _BUILDER, also)

    def describe(self, name: str) -> CollectionEncoding:
        """What `name` records; CollectionNotFoundError if it does not exist."""
        return CollectionEncoding.from_record(name, self.location,
                                              self._collection(name).config.metadata or {})

    def _collection(self, name: str) -> qm.CollectionInfo:
        try:
            return self._call("get_collection", self._client.get_collection, name)  # type: ignore[no-any-return]
        except (ValueError, UnexpectedResponse) as exc:
            if isinstance(exc, UnexpectedResponse) and exc.status_code != 404:
                raise
            raise CollectionNotFoundError(
                f"collection {name!r} does not exist at {self.location}; ingest into it first"
            ) from exc

    def list_physical(self) -> list[str]:
        response = self._call("get_collections", self._client.get_collections)
        return sorted(c.name for c in response.collections)

    def list_collections(self) -> list[str]:
        """The names users know: every alias, and every collection no alias stands for."""
        aliases = self._aliases()
        targets = set(aliases.values())
        return sorted(set(aliases) | {p for p in self.list_physical() if p not in targets})

    def info(self, name: str) -> CollectionInfo:
        physical = self._physical(name)
        encoding = self.describe(physical)
        documents = self._call("count", self._client.count, physical, count_filter=_FIRST_CHUNKS).count
        points = self._call("count", self._client.count, physical).count
        return CollectionInfo(name=name, physical=physical, encoding=encoding,
                              documents=documents, points=points)

    def drop_physical(self, physical: str) -> bool:
        """Drop the physical collection of that very name, and any alias of it; False when
        there was none."""
        if physical not in self.list_physical():
            return False
        operations: list[qm.AliasOperations] = [
            qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))
            for alias, target in self._aliases().items() if target == physical]
        if operations:
            self._call("update_collection_aliases", self._client.update_collection_aliases,
                       change_aliases_operations=operations)
        self._call("delete_collection", self._client.delete_collection, physical)
        return True

    # Points

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Write points and return once Qdrant has applied them. Existing ids are overwritten."""
        if not points:
            return
        ids = self.describe(name).point_ids
        structs = [
            qm.PointStruct(id=point_id(p.doc_id, p.chunk_no, ids), vector=_vector(p), payload=p.payload)
            for p in points
        ]
        self._call("upsert", self._client.upsert, name, points=structs, wait=True)

    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Payload (all of it, or `fields`) of chunk 0 of each stored document among
        `doc_ids`; absent documents are left out."""
        doc_ids = list(doc_ids)
        if not doc_ids:
            return {}
        made = self.describe(name).point_ids
        ids = [point_id(doc_id, 0, made) for doc_id in doc_ids]
        records = self._call("retrieve", self._client.retrieve, name, ids=ids,
                             with_payload=fields if fields is not None else True,
                             with_vectors=False)
        return {r.payload["doc_id"]: r.payload for r in records if r.payload}

    def document_ids(self, name: str, query_filter: MetadataFilter | None = None) -> list[str]:
        """Every document's id (those `query_filter` matches), in the store's order."""
        self._collection(name)  # CollectionNotFoundError (local mode's scroll: ValueError)
        selector = self._query_filter(name, query_filter, FIRST_CHUNKS)
        ids: list[str] = []
        offset: Any = None
        while True:
            records, offset = self._call("scroll", self._client.scroll, name,
                                         scroll_filter=selector, limit=1000, offset=offset,
                                         with_payload=["doc_id"], with_vectors=False)
            ids.extend(str(r.payload["doc_id"]) for r in records if r.payload)
            if offset is None:
                return ids

    def count_documents(self, name: str, query_filter: MetadataFilter | None = None) -> int:
        """How many documents `query_filter` matches (all of them, without one)."""
        self._collection(name)
        selector = self._query_filter(name, query_filter, FIRST_CHUNKS)
        return int(self._call("count", self._client.count, name, count_filter=selector,
                              exact=True).count)

    def document_points(self, name: str, doc_ids: Sequence[str]) -> list[ChunkPoint]:
        """Every chunk point of the given documents, with its dense vector and payload (not
        its lexical vector), in no particular order."""
        if not doc_ids:
            return []
        selector = qm.Filter(must=[qm.FieldCondition(key="doc_id", match=qm.MatchAny(any=list(doc_ids)))])
        points: list[ChunkPoint] = []
        offset: Any = None
        while True:
            records, offset = self._call("scroll", self._client.scroll, name,
                                         scroll_filter=selector, limit=1024, offset=offset,
                                         with_payload=True, with_vectors=[""])
            for record in records:
                payload = record.payload or {}
                vector = record.vector.get("") if isinstance(record.vector, dict) else record.vector
                points.append(ChunkPoint(str(payload["doc_id"]), int(payload["chunk"]),
                                         np.asarray(vector, dtype=np.float32), payload))
            if offset is None:
                return points

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

    def set_versions(self, name: str, versions: Mapping[str, int]) -> None:
        """Set `version` in the payload of every chunk of each document (a document whose
        content is unchanged, written again as a newer version); nothing else changes."""
        if not versions:
            return
        operations = [qm.SetPayloadOperation(set_payload=qm.SetPayload(
            payload={"version": version}, filter=qm.Filter(must=[
                qm.FieldCondition(key="doc_id", match=qm.MatchValue(value=doc_id))])))
            for doc_id, version in versions.items()]
        self._call("set_payload", self._client.batch_update_points, name, operations, wait=True)

    # Whole collections

    def read_points(self, name: str, sink: Callable[[Sequence[ChunkPoint]], None]) -> None:
        """Every point of `name` (dense vector, payload and, for chunk 0 of a collection with
        lexical vectors, its lexical vector), handed to `sink` a page at a time. In local
        mode as of one moment (the engine's lock is held throughout); a server goes on
        taking writes meanwhile, so its callers hold the writers first (bienc.snapshots)."""
        with self._lock:
            self._collection(name)  # CollectionNotFoundError
            offset: Any = None
            while True:
                records, offset = self._call("scroll", self._client.scroll, name, limit=1024,
                                             offset=offset, with_payload=True, with_vectors=True)
                sink([_chunk_point(record) for record in records])
                if offset is None:
                    return

    def documents_page(self, name: str, after: str | None, limit: int
                       ) -> tuple[list[dict[str, Any]], str | None]:
        """Chunk 0's payload of up to `limit` documents in the order of their point ids,
        from point id `after` on (None: the first); and the point id the next page starts
        at (None: this was the last)."""
        self._collection(name)  # CollectionNotFoundError
        records, offset = self._call("scroll", self._client.scroll, name,
                                     scroll_filter=_FIRST_CHUNKS, limit=limit, offset=after,
                                     with_payload=True, with_vectors=False)
        return [r.payload for r in records if r.payload], None if offset is None else str(offset)

    def _rest(self, physical: str, path: str) -> str:
        return f"{self.location.rstrip('/')}/collections/{quote(physical, safe='')}/snapshots{path}"

    def _headers(self) -> dict[str, str]:
        return {"api-key": self._api_key} if self._api_key else {}

    def _one_peer(self) -> bool:
        """Whether the server is one node: a collection snapshot holds only the shards of the
        node that takes it, so in a cluster of several the points are read instead."""
        status = self._call("cluster_status", self._client.http.distributed_api.cluster_status).result
        return len(getattr(status, "peers", None) or {}) <= 1

    def server_snapshot(self, physical: str, into: Path) -> bool:
        """On a Qdrant server of one node: Qdrant's own snapshot of `physical` (created, copied
        to `into` over GET /collections/{c}/snapshots/{name}, its checksum checked, deleted
        on the server); True. False elsewhere (local mode has none; a cluster's would hold
        one node's shards)."""
        if not self._remote or not self._one_peer():
            return False
        made = self._call("create_snapshot", self._client.create_snapshot, physical, wait=True)
        if made is None:
            raise StoreUnavailableError(f"Qdrant at {self.location} did not create a snapshot of "
                                        f"{physical!r}")
        try:
            digest = hashlib.sha256()
            with httpx.stream("GET", self._rest(physical, f"/{quote(made.name, safe='')}"),
                              headers=self._headers(),
                              timeout=httpx.Timeout(self._timeout_s, read=None)) as response:
                if response.status_code != 200:
                    raise StoreUnavailableError(
                        f"Qdrant at {self.location} answered {response.status_code} for snapshot "
                        f"{made.name!r} of {physical!r}")
                with into.open("wb") as out:
                    for block in response.iter_bytes(1 << 20):
                        digest.update(block)
                        out.write(block)
            if made.checksum and digest.hexdigest() != made.checksum:
                raise StoreUnavailableError(f"snapshot {made.name!r} of {physical!r} arrived from "
                                            f"Qdrant at {self.location} damaged (checksum differs)")
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(f"Qdrant at {self.location} did not hand over snapshot "
                                        f"{made.name!r} of {physical!r}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):  # a leftover on the server, not an error here
                self._client.delete_snapshot(physical, made.name, wait=True)
        return True

    def restore_server_snapshot(self, physical: str, source: Path, checksum: str) -> None:
        """Recover new physical collection `physical` from Qdrant's own snapshot file `source`
        (POST /collections/{c}/snapshots/upload, the snapshot's data taking precedence),
        waiting until it is done."""
        if not self._remote:
            super().restore_server_snapshot(physical, source, checksum)
            return
        try:
            with source.open("rb") as snapshot:
                response = httpx.post(
                    self._rest(physical, "/upload"), headers=self._headers(),
                    params={"wait": "true", "priority": "snapshot", "checksum": checksum},
                    files={"snapshot": (source.name, snapshot, "application/octet-stream")},
                    timeout=httpx.Timeout(self._timeout_s, read=None, write=None))
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(f"Qdrant at {self.location} did not take the snapshot for "
                                        f"{physical!r}: {exc}") from exc
        if response.status_code != 200:
            error = StoreUnavailableError if response.status_code >= 500 else CollectionError
            raise error(f"Qdrant at {self.location} refused the snapshot for {physical!r} "
                        f"({response.status_code}): {response.text[:500]}")

    # Search

    def dense_candidates(self, name: str, vector: np.ndarray, limit: int, *,
                         query_filter: MetadataFilter | None = None,
                         score_threshold: float | None = None,
                         exact: bool = False) -> list[Candidate]:
        """StoreBase.dense_candidates, by Qdrant's grouping of chunks by document id."""
        result = self._call("query_points_groups", self._client.query_points_groups, name,
            query=np.asarray(vector, dtype=np.float32).tolist(), group_by="doc_id", limit=limit,
            group_size=1, query_filter=self._query_filter(name, query_filter),
            score_threshold=score_threshold, with_payload=["doc_id", "chunk"],
            search_params=self._search_params(limit, exact),
        )
        return [Candidate(str(group.hits[0].payload["doc_id"]), int(group.hits[0].payload["chunk"]),
                          group.hits[0].score)
                for group in result.groups if group.hits and group.hits[0].payload]

    def _search_params(self, documents: int, exact: bool) -> qm.SearchParams | None:
        """A dense search's parameters, `documents` deep (hnsw_ef); none for the embedded
        engine, which has no index to tune (and warns when given them)."""
        if not self._remote:
            return None
        ef = None if exact else hnsw_ef(documents, self._search_ef, self._ef_per_document)
        return qm.SearchParams(hnsw_ef=ef, exact=exact, quantization=self._rescoring)

    def _lexical_candidates(self, name: str, query: SparseVector, limit: int,
                            query_filter: MetadataFilter | None,
                            score_threshold: float | None) -> list[Candidate]:
        try:
            result = self._call("query_points", self._client.query_points, name,
                query=qm.SparseVector(indices=list(query.indices), values=list(query.values)),
                using=LEXICAL_VECTOR, limit=max(1, limit),
                query_filter=self._query_filter(name, query_filter),
                score_threshold=score_threshold, with_payload=["doc_id"],
                search_params=_IDF_OVER_DOCUMENTS,
            )
        except (ValueError, UnexpectedResponse):  # no such vector, or no such collection
            if self.describe(name).lexical is None:
                raise no_lexical_vectors(name) from None
            raise
        return [Candidate(str(point.payload["doc_id"]), 0, point.score)
                for point in result.points if point.payload]

    def _read_point_ids(self, name: str) -> str:
        """The point-id scheme `name`'s collection records, read now and kept for searches."""
        self._point_ids[name] = made = self.describe(name).point_ids
        return made

    def fetch_hits(self, name: str, chosen: Sequence[Candidate], with_text: bool = True
                   ) -> list[Hit]:
        """Hits of the `chosen` documents, in order (bienc.store.interface.hits_from)."""
        if not chosen:
            return []
        fields = HIT_FIELDS + (TEXT_FIELDS if with_text else [])
        wanted = hit_chunks(chosen)

        def retrieve(made: str) -> list[qm.Record]:
            return self._call("retrieve", self._client.retrieve, name,  # type: ignore[no-any-return]
                              ids=[point_id(doc_id, chunk, made) for doc_id, chunk in wanted],
                              with_payload=fields, with_vectors=False)

        # A collection keeps its point-id scheme for life, so a search does not ask the server
        # for it each time; when points are missing, the name may stand for another collection
        # now (dropped and made again elsewhere, or switched by a reindex): read it again.
        known = self._point_ids.get(name)
        records = retrieve(known or self._read_point_ids(name))
        if known is not None and len(records) < len(wanted) and self._read_point_ids(name) != known:
            records = retrieve(self._point_ids[name])
        payloads = {(r.payload["doc_id"], r.payload["chunk"]): r.payload
                    for r in records if r.payload}
        return hits_from(chosen, payloads, with_text)


def _chunk_point(record: Any) -> ChunkPoint:
    """A scrolled record (with payload and vectors) as a ChunkPoint."""
    payload = record.payload or {}
    vectors = record.vector if isinstance(record.vector, dict) else {"": record.vector}
    sparse = vectors.get(LEXICAL_VECTOR)
    return ChunkPoint(str(payload["doc_id"]), int(payload["chunk"]),
                      np.asarray(vectors[""], dtype=np.float32), payload, sparse)


def _vector(point: ChunkPoint) -> Any:
    dense = np.asarray(point.vector, dtype=np.float32).tolist()
    if point.sparse is None:
        return dense
    return {"": dense, LEXICAL_VECTOR: qm.SparseVector(indices=list(point.sparse.indices),
                                                      values=list(point.sparse.values))}

