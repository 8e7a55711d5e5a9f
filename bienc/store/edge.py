"""Chunk vectors in Qdrant Edge: the same interface as bienc.store.qdrant.VectorStore over Qdrant's own
Rust engine running in-process (``qdrant_edge.EdgeShard``, with HNSW), instead of
qdrant-client's pure-Python local mode (exact search, slow).

Layout. One EdgeShard per physical collection, and the map of names to them::

    root/
      .lock                     held (flock) while a process has the store open
      aliases.json              {"papers": "papers@2", ...}: name -> physical collection
      <physical>/               papers@2 (or, made by an older bienc, papers)
        collection.json         the collection's record (bienc.store.record)
        shard/                  the EdgeShard (segments, WAL, edge_config.json)

A physical collection exists exactly when its collection.json does: it is written (atomically)
before the shard is created and removed before the shard is deleted, so a crash leaves at worst
a folder without it, which the next ensure_collection clears. aliases.json is rewritten whole
(a temporary file renamed over it) under the store's lock, so a name switches from one
physical collection to the next in one step; a name resolves through it first, then to a
physical collection of that very name. Point ids are bienc.store.interface.point_id's uuid5
strings, so a document written again overwrites its points.

Document-level search. Edge has no grouping, so `dense_candidates` over-fetches chunks: it
asks for ``limit * 4`` chunks (payload: `doc_id` and `chunk` only), keeps each document's first
(= best) chunk, and asks again for more (at least twice as many; more when few distinct
documents came per chunk) until `limit` distinct documents are found or fewer chunks than asked
come back (collection, filter or score threshold exhausted). `lexical_candidates` needs none of
that: only chunk 0 has a lexical vector. `fetch_hits` then reads the payloads of the documents a
search keeps, in one `retrieve` of their best chunks plus, for documents whose best chunk is not
chunk 0, their chunk 0 (full text, and the content_hash that must match).
Reading payloads dominates a top-1000 query (~4,000 chunks' ids, then ~1,750 records).

Lexical vectors. A collection created with lexical parameters has a sparse vector
(LEXICAL_VECTOR) with Qdrant's IDF modifier. Edge's collection-wide IDF statistics go on
counting a deleted or overwritten point (measured with qdrant-edge-py 0.9.0, in plain and
optimized segments alike), so every lexical query computes IDF over the live chunk-0 points
(`IdfParams(corpus=...)`): each document counts once, and a deleted one stops counting at once.

Indexing (HNSW) and optimize(). Edge does not optimize in the background: new points land in a
plain (brute-force searched) appendable segment until `optimize()` builds HNSW for segments above
the indexing threshold. `optimize()` blocks, and (qdrant-edge-py 0.9.0, measured) holds the GIL
while it runs, so every thread of the process waits for it. Hence:

* The trigger is on the write path: once `indexing_threshold` points (default 10,000) were
  upserted since the last optimize, that upsert runs `optimize()` (then `flush()`). The indexing
  worker pays for the build, not a user's search, and the build is never repeated for nothing.
  Until then the newest points (fewer than `indexing_threshold`) are searched by brute force,
  ~1 ms at 10k x 384-d. `search` runs the same check, a fallback for a shard loaded with more
  un-optimized points (written by a process that stopped before optimizing); a search could
  then wait for one build.
* Edge's own `indexing_threshold` (KB) is set to the same number of points, so when the trigger
  fires the optimizer has exactly that segment to index.
* 10,000 points a build keeps each stall short: one 10k x 384-d build took 2-5 s on a busy
  2-core machine, one 20k build 15-18 s (the cost grows faster than the points).
  `default_segment_number` is 16 so that each optimize indexes only the new segment; with
  Edge's automatic setting every optimize merged all segments into one and rebuilt HNSW over the
  whole collection, a stall growing with the collection. The price is up to ~16 segments
  (~160k chunks) for a search to visit before merges start; merges then rebuild bigger segments.

Filters. bienc.store.filters' MetadataFilter is translated to Edge's. Filtering on
a payload field without an index reads every candidate's payload (~1.5 us a point: 150 ms a query
at 100k chunks); with an index it is ~0.1 ms. `doc_id` and `chunk` are indexed when a collection
is created; a `metadata.*` key is indexed (keyword, integer or bool, from the filter's value) the
first time a search filters on it, at most 32 keys a collection. Edge 0.9.0 converts a Python bool
in MatchValue to an integer (True matches 1, not true); a numpy bool is passed instead.

Threads and processes. EdgeShard may be called from any thread; one re-entrant lock still guards
each method, for this object's own state (open shards, the optimize counter) and so that a search
sees no half-applied write. One process opens the store: `root/.lock` is taken when the store is
constructed and a second process gets ConfigError, as does Edge's own WAL lock if it trips.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import qdrant_edge as qe

from bienc.config.errors import (
    CollectionError,
    CollectionNotFoundError,
    ConfigError,
    InvalidInputError,
    StoreUnavailableError,
)
from bienc.store.filters import MetadataFilter, Scalar
from bienc.store.interface import (
    HIT_FIELDS,
    LEXICAL_VECTOR,
    TEXT_FIELDS,
    Candidate,
    ChunkPoint,
    CollectionInfo,
    Hit,
    SparseVector,
    hit_chunks,
    hits_from,
    no_lexical_vectors,
    point_id,
    resolved,
)
from bienc.store.record import CollectionEncoding, physical_name, split_physical

log = logging.getLogger(__name__)

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,244}(@[0-9]{1,9})?$")
_ALIASES_FILE = "aliases.json"
_META_FILE = "collection.json"
_SHARD_DIR = "shard"
_OVERFETCH = 4  # chunks asked for per wanted document, before doubling
_SEGMENT_NUMBER = 16
_MAX_AUTO_INDEXES = 32
_FIRST_CHUNKS = qe.Filter(must=[qe.FieldCondition(key="chunk", match=qe.MatchValue(0))])
# IDF over the documents (chunk 0 carries a document's lexical vector), live points only:
# Edge's collection-wide statistics go on counting deleted and overwritten points.
_IDF_OVER_DOCUMENTS = qe.IdfParams(corpus=_FIRST_CHUNKS)


class _Collection:
    """An open shard and what this process knows about it."""

    def __init__(self, shard: qe.EdgeShard, encoding: CollectionEncoding, pending: int,
                 indexed_fields: set[str]):
        self.shard = shard
        self.encoding = encoding
        self.pending = pending  # points written since the last optimize
        self.indexed_fields = indexed_fields
        self.auto_indexes = 0


class EdgeVectorStore:
    """Collections of chunk points in Qdrant Edge shards under `root`; the interface, results
    and errors of bienc.store.qdrant.VectorStore. A missing collection raises CollectionNotFoundError
    from every method that needs it (VectorStore's local mode lets some raise ValueError)."""

    def __init__(self, root: Path, *, hnsw_m: int = 16, hnsw_ef_construct: int = 100,
                 search_ef: int = 128, indexing_threshold: int = 10_000, quantization: bool = False,
                 oversampling: float = 2.0):
        if min(hnsw_m, hnsw_ef_construct, search_ef, indexing_threshold) < 1:
            raise ConfigError("hnsw_m, hnsw_ef_construct, search_ef and indexing_threshold must be >= 1")
        self._root = Path(root)
        self.location = str(self._root)
        self._hnsw_m = hnsw_m
        self._hnsw_ef_construct = hnsw_ef_construct
        self._indexing_threshold = indexing_threshold
        self._quantization = quantization
        rescoring = qe.QuantizationSearchParams(rescore=True, oversampling=oversampling) \
            if quantization else None
        self._search_params = {exact: qe.SearchParams(hnsw_ef=search_ef, exact=exact,
                                                      quantization=rescoring)
                               for exact in (False, True)}
        self._lock = threading.RLock()
        self._open: dict[str, _Collection] = {}
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[bytes] | None = self._take_folder_lock()
        self._aliases: dict[str, str] = self._read_aliases()

    def _take_folder_lock(self) -> IO[bytes]:
        handle = (self._root / ".lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise self._in_use_error() from exc
        return handle

    def _in_use_error(self) -> ConfigError:
        return ConfigError(
            f"the embedded store {self.location} is open in another process (a running "
            "`bienc worker` or `bienc serve`?). Stop it first, or run a Qdrant server and set "
            "BIENC_QDRANT_URL so that processes can share it."
        )

    def close(self) -> None:
        """Flush and close every open shard and release the folder lock."""
        with self._lock:
            for name, collection in self._open.items():
                try:
                    collection.shard.flush()
                    collection.shard.close()
                except Exception:  # close the others and release the folder all the same
                    log.exception("closing Edge collection %r failed", name)
            self._open.clear()
            if self._lock_file is not None:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None

    # Collections: files and shards

    def _folder(self, physical: str) -> Path:
        if not isinstance(physical, str) or not _COLLECTION_NAME.match(physical):
            raise InvalidInputError(
                f"collection name {physical!r} is invalid: use 1-245 letters, digits, '_', '-' or "
                "'.', not starting with '-' or '.'"
            )
        return self._root / physical

    def _exists(self, physical: str) -> bool:
        return (self._folder(physical) / _META_FILE).is_file()

    def _check_open(self) -> None:
        if self._lock_file is None:
            raise StoreUnavailableError(f"the Edge store at {self.location} is closed")

    def _read_aliases(self) -> dict[str, str]:
        try:
            aliases = json.loads((self._root / _ALIASES_FILE).read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(aliases, dict):
            raise CollectionError(f"{self._root / _ALIASES_FILE} is damaged")
        return {str(k): str(v) for k, v in aliases.items()}

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        tmp = self._root / f".{_ALIASES_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(aliases, sort_keys=True))
        os.replace(tmp, self._root / _ALIASES_FILE)
        self._aliases = aliases

    def resolve(self, name: str) -> str | None:
        """The physical collection `name` stands for, or None."""
        with self._lock:
            self._check_open()
            physical = self._aliases.get(name, name)
            return physical if self._exists(physical) else None

    def _physical(self, name: str) -> str:
        return resolved(self, name)

    def switch_alias(self, name: str, physical: str) -> None:
        """Make `name` stand for `physical`, in one step (a rewrite of aliases.json)."""
        with self._lock:
            self._check_open()
            if not self._exists(physical):
                raise CollectionNotFoundError(f"collection {physical!r} does not exist at {self.location}")
            self._write_aliases({**self._aliases, name: physical})

    def _edge_config(self, dimension: int, lexical: bool) -> qe.EdgeConfig:
        threshold_kb = max(1, self._indexing_threshold * dimension * 4 // 1024)
        # Below full_scan_threshold a segment is searched by brute force even when indexed, and
        # a filter matching fewer points is served by payload index plus brute force. Half a
        # segment's worth: an indexed segment is searched through its graph (Qdrant's default
        # of 10 MB would leave a 10k x 64-d segment, 2.5 MB, brute-forced).
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
            sparse_vectors={LEXICAL_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
            if lexical else None,
            hnsw_config=qe.HnswIndexConfig(m=self._hnsw_m, ef_construct=self._hnsw_ef_construct,
                                           full_scan_threshold=max(1, threshold_kb // 2)),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb,
                                               default_segment_number=_SEGMENT_NUMBER),
            quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99,
                                                            always_ram=True)
            if self._quantization else None,
        )

    def _collection(self, name: str) -> _Collection:
        """The open shard `name` resolves to, loading it on first use."""
        physical = self._physical(name)
        collection = self._open.get(physical)
        if collection is not None:
            return collection
        folder = self._folder(physical)
        meta = json.loads((folder / _META_FILE).read_text())
        encoding = CollectionEncoding.from_record(physical, self.location, meta)
        shard_dir = folder / _SHARD_DIR
        config = self._edge_config(encoding.dimension, encoding.lexical is not None)
        shard = self._edge("open the shard", qe.EdgeShard.load, str(shard_dir), config) \
            if shard_dir.exists() else self._create_shard(shard_dir, config)
        info = shard.info()
        collection = _Collection(shard, encoding, max(0, info.points_count - info.indexed_vectors_count),
                                 set(info.payload_schema))
        self._open[physical] = collection
        return collection

    def _create_shard(self, shard_dir: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
        shard: qe.EdgeShard = self._edge("create the shard", qe.EdgeShard.create, str(shard_dir), config)
        for field_name, schema in (("doc_id", qe.PayloadSchemaType.Keyword),
                                   ("chunk", qe.PayloadSchemaType.Integer)):
            shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
        return shard

    def _edge(self, what: str, fn: Any, *args: Any) -> Any:
        """Call Edge, turning its 'WAL is locked' error into the ConfigError of a busy store."""
        try:
            return fn(*args)
        except Exception as exc:
            if "WouldBlock" in str(exc):  # another process holds the shard's WAL
                raise self._in_use_error() from exc
            raise CollectionError(f"cannot {what} at {self.location}: {exc}") from exc

    def ensure_collection(self, name: str, encoding: CollectionEncoding) -> CollectionEncoding:
        """The encoding `name` records, creating it with `encoding` if it does not exist: as
        physical collection NAME@1 and the alias NAME, or, for a physical name (NAME@N, a
        reindex's new collection), as that collection alone."""
        with self._lock:
            self._check_open()
            existing = self.resolve(name)
            if existing is not None:
                return self._collection(existing).encoding
            physical = name if split_physical(name) else physical_name(name, 1)
            folder = self._folder(physical)
            if folder.exists():  # left by a crash before collection.json was written
                stale = self._open.pop(physical, None)
                if stale is not None:
                    stale.shard.close()
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            tmp = folder / f".{_META_FILE}.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(encoding.record()))
            os.replace(tmp, folder / _META_FILE)
            self._collection(physical)  # creates the shard and its payload indexes
            if physical != name:
                self.switch_alias(name, physical)
            return encoding

    def describe(self, name: str) -> CollectionEncoding:
        """What `name` records; CollectionNotFoundError if it does not exist."""
        with self._lock:
            return self._collection(name).encoding

    def list_collections(self) -> list[str]:
        """The names users know: every alias, and every physical collection no alias stands
        for (one made by an older bienc, one kept by `reindex --keep-old`, a reindex's new
        collection before its switch)."""
        with self._lock:
            physical = self.list_physical()
            named = {alias for alias, target in self._aliases.items() if target in physical}
            targets = {self._aliases[alias] for alias in named}
            return sorted(named | {p for p in physical if p not in targets})

    def list_physical(self) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(p.name for p in self._root.iterdir()
                          if _COLLECTION_NAME.match(p.name) and (p / _META_FILE).is_file())

    def info(self, name: str) -> CollectionInfo:
        with self._lock:
            physical = self._physical(name)
            collection = self._collection(physical)
            documents = collection.shard.count(qe.CountRequest(exact=True, filter=_FIRST_CHUNKS))
            points = collection.shard.count(qe.CountRequest(exact=True))
        return CollectionInfo(name=name, physical=physical, encoding=collection.encoding,
                              documents=documents, points=points)

    def delete_collection(self, name: str) -> bool:
        """Drop `name` (its alias, if it is one, and the physical collection); False when it
        did not exist."""
        with self._lock:
            physical = self.resolve(name)
            if physical is None:
                return False
            return self.drop_physical(physical)

    def drop_physical(self, physical: str) -> bool:
        """Drop the physical collection of that very name, and any alias of it; False when
        there was none."""
        with self._lock:
            self._check_open()
            if not self._exists(physical):
                return False
            aliases = {a: t for a, t in self._aliases.items() if t != physical}
            if aliases != self._aliases:
                self._write_aliases(aliases)
            collection = self._open.pop(physical, None)
            if collection is not None:
                collection.shard.close()
            folder = self._folder(physical)
            (folder / _META_FILE).unlink()
            shutil.rmtree(folder)
            return True

    # Points

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Write points and return once they are searchable. Existing ids are overwritten.
        Every `indexing_threshold` points, also builds HNSW (see the module's docstring)."""
        if not points:
            return
        edge_points = [
            qe.Point(id=point_id(p.doc_id, p.chunk_no), vector=_edge_vector(p), payload=p.payload)
            for p in points
        ]
        with self._lock:
            collection = self._collection(name)
            collection.shard.update(qe.UpdateOperation.upsert_points(edge_points))
            collection.pending += len(edge_points)
            self._maybe_optimize(name, collection)

    def _maybe_optimize(self, name: str, collection: _Collection) -> None:
        if collection.pending < self._indexing_threshold:
            return
        started = time.perf_counter()
        changed = collection.shard.optimize()
        collection.shard.flush()
        collection.pending = 0
        log.info("optimized Edge collection %r in %.1f s (changed: %s)", name,
                 time.perf_counter() - started, changed)

    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Payload (all of it, or `fields`) of chunk 0 of each stored document among
        `doc_ids`; absent documents are left out."""
        ids = {point_id(doc_id, 0): doc_id for doc_id in doc_ids}
        if not ids:
            return {}
        with self._lock:
            records = self._collection(name).shard.retrieve(
                list(ids), fields if fields is not None else True, False)
        return {ids[str(r.id)]: r.payload for r in records if r.payload}

    def scroll_documents(self, name: str, after: str | None, limit: int
                         ) -> tuple[list[str], str | None]:
        """Up to `limit` document ids from cursor `after` (None: the first), and the cursor of
        the next page (None: this was the last). The order is the store's, stable while the
        documents are."""
        with self._lock:
            records, following = self._collection(name).shard.scroll(qe.ScrollRequest(
                offset=after, limit=max(1, limit), filter=_FIRST_CHUNKS, with_payload=["doc_id"],
                with_vector=False))
        ids = [str(r.payload["doc_id"]) for r in records if r.payload]
        return ids, str(following) if following is not None else None

    def document_points(self, name: str, doc_ids: Sequence[str]) -> list[ChunkPoint]:
        """Every chunk point of the given documents, with its dense vector and payload (not
        its lexical vector), in no particular order."""
        if not doc_ids:
            return []
        selector = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))])
        points: list[ChunkPoint] = []
        with self._lock:
            shard = self._collection(name).shard
            offset: Any = None
            while True:
                records, offset = shard.scroll(qe.ScrollRequest(
                    offset=offset, limit=1024, filter=selector, with_payload=True, with_vector=[""]))
                for record in records:
                    payload = record.payload or {}
                    vector = record.vector[""] if isinstance(record.vector, dict) else record.vector
                    points.append(ChunkPoint(str(payload["doc_id"]), int(payload["chunk"]),
                                             np.asarray(vector, dtype=np.float32), payload))
                if offset is None:
                    return points

    def delete_chunks_from(self, name: str, first_stale: Mapping[str, int]) -> None:
        """For each document, delete its chunks numbered `first_stale[doc_id]` and above."""
        if not first_stale:
            return
        per_doc: list[qe.ConditionType] = [
            qe.Filter(must=[
                qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id)),
                qe.FieldCondition(key="chunk", range=qe.RangeFloat(gte=float(first))),
            ])
            for doc_id, first in first_stale.items()
        ]
        with self._lock:
            self._collection(name).shard.update(
                qe.UpdateOperation.delete_points_by_filter(qe.Filter(should=per_doc)))

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None:
        """Delete every chunk of the given documents."""
        if not doc_ids:
            return
        selector = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))])
        with self._lock:
            self._collection(name).shard.update(qe.UpdateOperation.delete_points_by_filter(selector))

    def get_document(self, name: str, doc_id: str) -> dict[str, Any] | None:
        """Chunk 0's payload of a document: its full text, title and metadata."""
        with self._lock:
            self._collection(name)
            return self.first_chunks(name, [doc_id]).get(doc_id)

    # Search

    def dense_candidates(self, name: str, vector: np.ndarray, limit: int, *,
                         query_filter: MetadataFilter | None = None,
                         score_threshold: float | None = None,
                         exact: bool = False) -> list[Candidate]:
        """The `limit` best documents by cosine, each with its best chunk, best first. `exact`
        skips the HNSW graph (and quantisation) and scores every point."""
        edge_filter = _edge_filter(query_filter) if query_filter is not None else None
        query = qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist())
        params = self._search_params[exact]
        with self._lock:
            collection = self._collection(name)
            self._maybe_optimize(name, collection)
            if query_filter is not None:
                self._index_filter_fields(collection, query_filter)
            best: dict[str, Candidate] = {}  # document id -> its best chunk, best first
            fetch = max(1, limit) * _OVERFETCH
            while True:
                scored = collection.shard.query(qe.QueryRequest(
                    limit=fetch, query=query, filter=edge_filter, score_threshold=score_threshold,
                    params=params, with_payload=["doc_id", "chunk"], with_vector=False))
                best = {}
                for point in scored:
                    payload = point.payload
                    doc_id = payload.get("doc_id") if payload else None
                    if doc_id is not None and doc_id not in best:  # results come best first
                        best[doc_id] = Candidate(doc_id, int(payload.get("chunk", -1)), point.score)  # type: ignore[union-attr]
                if len(best) >= limit or len(scored) < fetch:
                    break
                # grow by the documents-per-chunk seen so far, at least doubling
                fetch = max(2 * fetch, int(fetch * 1.25 * limit / max(1, len(best))))
        return list(best.values())[:max(0, limit)]

    def lexical_candidates(self, name: str, query: SparseVector, limit: int, *,
                           query_filter: MetadataFilter | None = None,
                           score_threshold: float | None = None) -> list[Candidate]:
        """The `limit` best documents by BM25 (their lexical vectors, IDF over the documents
        held now), best first; none for a query without tokens."""
        if not query.indices:
            return []
        edge_filter = _edge_filter(query_filter) if query_filter is not None else None
        sparse = query if isinstance(query, qe.SparseVector) else \
            qe.SparseVector(list(query.indices), list(query.values))
        with self._lock:
            collection = self._collection(name)
            if collection.encoding.lexical is None:
                raise no_lexical_vectors(name)
            if query_filter is not None:
                self._index_filter_fields(collection, query_filter)
            scored = collection.shard.query(qe.QueryRequest(
                limit=max(1, limit), query=qe.Query.Nearest(sparse, using=LEXICAL_VECTOR),
                filter=edge_filter, score_threshold=score_threshold,
                params=qe.SearchParams(idf=_IDF_OVER_DOCUMENTS), with_payload=["doc_id"],
                with_vector=False))
        return [Candidate(str(point.payload["doc_id"]), 0, point.score)
                for point in scored if point.payload]

    def fetch_hits(self, name: str, chosen: Sequence[Candidate], with_text: bool = True
                   ) -> list[Hit]:
        """Hits of the `chosen` documents, in order (bienc.store.interface.hits_from)."""
        if not chosen:
            return []
        wanted: list[qe.PointId] = [point_id(doc_id, chunk) for doc_id, chunk in hit_chunks(chosen)]
        fields = HIT_FIELDS + (TEXT_FIELDS if with_text else [])
        with self._lock:
            records = self._collection(name).shard.retrieve(wanted, fields, False)
        # by (document, chunk) read from the payloads: cheaper than converting point ids
        payloads = {(p.get("doc_id"), p.get("chunk")): p
                    for p in (r.payload for r in records) if p}  # .payload converts on each read
        return hits_from(chosen, payloads, with_text)  # type: ignore[arg-type]

    def search(self, name: str, vector: np.ndarray, top_k: int, *,
               query_filter: MetadataFilter | None = None, score_threshold: float | None = None,
               with_text: bool = True, exact: bool = False) -> list[Hit]:
        """The `top_k` best documents by cosine of their best chunk, best first (a dense
        search: dense_candidates, then fetch_hits)."""
        chosen = self.dense_candidates(name, vector, top_k, query_filter=query_filter,
                                       score_threshold=score_threshold, exact=exact)
        return self.fetch_hits(name, chosen, with_text)

    def _index_filter_fields(self, collection: _Collection, query_filter: MetadataFilter) -> None:
        """Index each `metadata.*` field the filter matches on, the first time it is seen."""
        for match in query_filter.matches:
            key, schema = match.payload_key, _schema_of(match.values)
            if key in collection.indexed_fields or collection.auto_indexes >= _MAX_AUTO_INDEXES:
                continue
            collection.indexed_fields.add(key)  # tried once, whatever the outcome
            collection.auto_indexes += 1
            try:
                collection.shard.update(qe.UpdateOperation.create_field_index(key, schema))
            except Exception as exc:  # filtering still works, only slower
                log.warning("could not index payload field %r: %s", key, exc)


def _edge_vector(point: ChunkPoint) -> Any:
    dense = np.asarray(point.vector, dtype=np.float32).tolist()
    if point.sparse is None:
        return dense
    sparse = point.sparse if isinstance(point.sparse, qe.SparseVector) else \
        qe.SparseVector(list(point.sparse.indices), list(point.sparse.values))
    return {"": dense, LEXICAL_VECTOR: sparse}


# Filters: bienc.store.filters -> qdrant_edge


def _edge_value(value: Scalar) -> Any:
    # Edge 0.9.0 reads a Python bool in MatchValue as an integer; a numpy bool stays a bool.
    return np.bool_(value) if isinstance(value, bool) else value


def _edge_filter(query_filter: MetadataFilter) -> qe.Filter:
    """One condition per key, any-of for a list (bienc.store.filters says what is allowed)."""
    conditions: list[qe.ConditionType] = [
        qe.FieldCondition(key=m.payload_key, match=qe.MatchValue(_edge_value(m.values[0])))
        if len(m.values) == 1 else
        qe.FieldCondition(key=m.payload_key, match=qe.MatchAny(list(m.values)))  # type: ignore[arg-type]
        for m in query_filter.matches
    ]
    return qe.Filter(must=conditions)


def _schema_of(values: tuple[Scalar, ...]) -> qe.PayloadSchemaType:
    """The payload index type for a field the filter matches with `values` (one type: a
    validated filter never mixes them)."""
    if isinstance(values[0], bool):
        return qe.PayloadSchemaType.Bool
    if isinstance(values[0], int):
        return qe.PayloadSchemaType.Integer
    return qe.PayloadSchemaType.Keyword
