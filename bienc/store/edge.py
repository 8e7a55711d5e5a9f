"""Chunk vectors in Qdrant Edge: the Store interface (bienc.store.interface) over Qdrant's own
Rust engine running in-process (``qdrant_edge.EdgeShard``, with HNSW), instead of
qdrant-client's pure-Python local mode (exact search, slow). This module is the store's front:
it holds the lock and answers the interface; the rooms behind it are

    bienc.store.edge_aliases      aliases.json: names -> physical collections
    bienc.store.edge_collections  the physical collections' folders, created, opened, removed
    bienc.store.edge_indexer      the builder thread, which runs bienc.store.builder processes
    bienc.store.edge_search       document-level search: adaptive over-fetch, lexical, hits
    bienc.store.edge_filters      filters in Edge's terms, payload indexes declared or made on
                                  first use

Layout. Each physical collection is a folder of Edge shards, its parts (bienc.store.parts)::

    root/
      .lock                     held (flock) while a process has the store open
      aliases.json              {"papers": "papers@2", ...}: name -> physical collection
      <physical>/               papers@2 (or, made by an older bienc, papers)
        collection.json         the collection's record (bienc.store.record)
        parts.json, parts/      its parts: the active one, sealed and indexed ones, lexical

A name resolves through aliases.json first, then to a physical collection of that very name.
Point ids are bienc.store.interface.point_id's, made as the collection records, so a document
written again overwrites its points.

Lexical vectors. A collection created with lexical parameters has a sparse vector
(LEXICAL_VECTOR) with Qdrant's IDF modifier, in a part of its own; every lexical query computes
IDF over the live chunk-0 points (bienc.store.interface.IDF_CORPUS says why).

Indexing (HNSW). This process never builds an index (bienc.store.edge_indexer says why): writes
go to a collection's active part, searched by brute force (~1 ms at 10k x 384-d); at
`indexing_threshold` points (10,000) it is sealed, and a builder process (one at a time per
store, started from a thread here) indexes a copy of it and merges indexed parts into bigger
ones, each into one HNSW segment. Swapping a built part in loads it here (~1.5 us a point, the
GIL held). `wait_indexed` waits for the builder to finish what it has (benchmarks and tests
use it).

Threads and processes. EdgeShard may be called from any thread. The store's re-entrant lock
guards its own state (aliases, open collections); a collection's parts have their own locks,
and a search takes none for longer than a snapshot of the parts, so that no search waits for a
write, a copy or a swap (bienc.store.parts). One process opens the store: `root/.lock` is taken
when the store is constructed and a second process gets ConfigError, as does Edge's own WAL
lock if it trips.

Failures. An I/O error of Edge's (disk full, EIO, a file too large: "os error N") or of the
store's own files raises StoreUnavailableError, as an unreachable server does: the batch is
tried again later, never failed as if the document were at fault. A write is refused the same
way while the disk has less than `min_free_mb` free, and so is opening a collection (Edge
writes its WAL on load), since Edge writes through memory maps and a full disk under one kills
the process (SIGBUS) in the middle of a write. Dropping a
collection stops its build first (Indexer.release), then removes its files.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import qdrant_edge as qe

from bienc.config.errors import (
    CollectionError,
    CollectionNotFoundError,
    ConfigError,
    StoreUnavailableError,
)
from bienc.config.settings import HNSW_EF_PER_DOCUMENT, LARGE_PART_POINTS
from bienc.store import edge_search
from bienc.store.base import StoreBase, in_use_error
from bienc.store.durable import is_io_error
from bienc.store.edge_aliases import AliasFile
from bienc.store.edge_collections import Collections, OpenCollection
from bienc.store.edge_filters import FIRST_CHUNKS_FILTER, documents_filter, metadata_filter
from bienc.store.edge_indexer import Indexer
from bienc.store.filters import IndexType, MetadataFilter
from bienc.store.interface import (
    EF_REFERENCE_POINTS,
    FIRST_CHUNKS,
    LEXICAL_VECTOR,
    Candidate,
    ChunkPoint,
    CollectionInfo,
    Hit,
    SparseVector,
    hnsw_ef,
    no_lexical_vectors,
    point_id,
)
from bienc.store.parts import RETRY_BASE_S
from bienc.store.record import CollectionEncoding, physical_name, split_physical

log = logging.getLogger(__name__)
# Writes are refused below this much free disk (MiB): Edge writes through memory maps, and a
# full disk under one kills the process (SIGBUS) mid-write; a WAL segment alone is 32 MiB.
MIN_FREE_MB = 128.0


class EdgeVectorStore(StoreBase):
    """Collections of chunk points in Qdrant Edge shards under `root`; the interface, results
    and errors of bienc.store.qdrant.VectorStore. A missing collection raises CollectionNotFoundError
    from every method that needs it (VectorStore's local mode lets some raise ValueError)."""

    def __init__(self, root: Path, *, hnsw_m: int = 16, hnsw_m_large: int = 32,
                 large_part: int = LARGE_PART_POINTS, hnsw_ef_construct: int = 100,
                 search_ef: int = 512, ef_per_document: int = HNSW_EF_PER_DOCUMENT,
                 indexing_threshold: int = 10_000, quantization: bool = False,
                 oversampling: float = 2.0, indexed_fields: Mapping[str, IndexType] | None = None,
                 build_retry_s: float = RETRY_BASE_S, min_free_mb: float = MIN_FREE_MB,
                 ef_reference: int = EF_REFERENCE_POINTS):
        if min(hnsw_m, hnsw_m_large, hnsw_ef_construct, search_ef, ef_per_document,
               indexing_threshold, ef_reference) < 1:
            raise ConfigError("hnsw_m, hnsw_m_large, hnsw_ef_construct, search_ef, "
                              "ef_per_document, indexing_threshold and ef_reference must be >= 1")
        self._root = Path(root)
        self.location = str(self._root)
        self._hnsw_m = hnsw_m
        self._hnsw_ef_construct = hnsw_ef_construct
        self._indexing_threshold = indexing_threshold
        self._quantization = quantization
        self._min_free = min_free_mb * 2**20
        self._rescoring = qe.QuantizationSearchParams(rescore=True, oversampling=oversampling) \
            if quantization else None
        self._search_ef = search_ef
        self._ef_per_document = ef_per_document
        self._ef_reference = ef_reference  # a bigger part walks a longer list (hnsw_ef)
        self._exact_params = qe.SearchParams(exact=True, quantization=self._rescoring)
        self._lock = threading.RLock()
        self._collections = Collections(self._root, self.location, indexing_threshold,
                                        self._dense_settings, indexed_fields or {}, build_retry_s)
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[bytes] | None = self._take_folder_lock()
        self._aliases = AliasFile(self._root)
        # a part's graph has more links from `large_part` points on (builder.graph_links)
        self._indexer = Indexer(self._open_collections, self._dense_settings,
                                {"hnsw_m_large": hnsw_m_large, "large_part": large_part})

    def _take_folder_lock(self) -> IO[bytes]:
        handle = (self._root / ".lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise in_use_error(self.location) from exc
        return handle

    def close(self) -> None:
        """Stop the builder (a job in progress is dropped: it runs again at the next start),
        flush and close every open collection and release the folder lock."""
        self._indexer.stop()
        with self._lock:
            for name, collection in self._collections.open.items():
                try:
                    collection.parts.close()
                except Exception:  # close the others and release the folder all the same
                    log.exception("closing Edge collection %r failed", name)
            self._collections.open.clear()
            if self._lock_file is not None:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None

    # Collections and names

    def _check_open(self) -> None:
        if self._lock_file is None:
            raise StoreUnavailableError(f"the Edge store at {self.location} is closed")

    def _check_room(self) -> None:
        """StoreUnavailableError while the disk is nearly full (module docstring)."""
        free = shutil.disk_usage(self._root).free
        if free < self._min_free:
            raise StoreUnavailableError(
                f"the Edge store at {self.location} has {free / 2**20:.0f} MiB of disk free, less "
                f"than the {self._min_free / 2**20:.0f} MiB it keeps for writing safely: free some "
                "space there (the write is tried again later)")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write: refused while the disk is nearly full; I/O errors raised as the store's
        unavailability (retried), not as the data's fault."""
        self._check_room()
        try:
            yield
        except (StoreUnavailableError, CollectionError):
            raise
        except Exception as exc:
            if is_io_error(exc):
                raise StoreUnavailableError(
                    f"the Edge store at {self.location} could not write: {exc}. Free disk space or "
                    "fix the disk (the write is tried again later)") from exc
            raise

    def resolve(self, name: str) -> str | None:
        """The physical collection `name` stands for, or None."""
        with self._lock:
            self._check_open()
            physical = self._aliases.names.get(name, name)
            return physical if self._collections.exists(physical) else None

    def switch_alias(self, name: str, physical: str) -> None:
        """Make `name` stand for `physical`, in one step (a rewrite of aliases.json)."""
        with self._lock:
            self._check_open()
            if not self._collections.exists(physical):
                raise CollectionNotFoundError(f"collection {physical!r} does not exist at {self.location}")
            self._aliases.write({**self._aliases.names, name: physical})

    def _dense_settings(self, encoding: CollectionEncoding) -> dict[str, Any]:
        """bienc.store.builder.dense_config's arguments for a collection (also the builder's)."""
        threshold_kb = max(1, self._indexing_threshold * encoding.dimension * 4 // 1024)
        # Below full_scan_threshold a segment is searched by brute force even when indexed, and
        # a filter matching fewer points is served by payload index plus brute force: half a
        # part's worth, so that an indexed part is searched through its graph.
        return {"dimension": encoding.dimension, "hnsw_m": self._hnsw_m,
                "hnsw_ef_construct": self._hnsw_ef_construct, "full_scan_kb": threshold_kb // 2,
                "quantization": self._quantization}

    def _collection(self, name: str) -> OpenCollection:
        """The open collection `name` resolves to, loading its parts on first use (which
        writes: Edge opens its WAL, so not on a nearly full disk)."""
        physical = self._physical(name)
        if physical not in self._collections.open:
            self._check_room()
        collection, opened = self._collections.get(physical)
        if opened:
            self._indexer.wake()  # it may hold sealed parts, or be idle with work to merge
        return collection

    def _open_collections(self) -> list[tuple[str, OpenCollection]]:
        with self._lock:
            return list(self._collections.open.items())

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
            with self._writing():
                self._collections.create(physical, encoding)
                self._collection(physical)  # creates the parts and their payload indexes
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
            aliases = self._aliases.names
            named = {alias for alias, target in aliases.items() if target in physical}
            targets = {aliases[alias] for alias in named}
            return sorted(named | {p for p in physical if p not in targets})

    def list_physical(self) -> list[str]:
        with self._lock:
            self._check_open()
            return self._collections.list_physical()

    def info(self, name: str) -> CollectionInfo:
        with self._lock:
            physical = self._physical(name)
            collection = self._collection(physical)
        documents = collection.parts.count(qe.CountRequest(exact=True, filter=FIRST_CHUNKS_FILTER))
        points = collection.parts.count(qe.CountRequest(exact=True))
        return CollectionInfo(name=name, physical=physical, encoding=collection.encoding,
                              documents=documents, points=points,
                              index={**collection.parts.state(), **collection.parts.build.to_dict()})

    def index_builds(self) -> dict[str, dict[str, Any]]:
        """The build status (bienc.store.parts.BuildStatus.to_dict) of each open collection."""
        return {physical: collection.parts.build.to_dict()
                for physical, collection in self._open_collections()}

    def drop_physical(self, physical: str) -> bool:
        """Drop the physical collection of that very name, and any alias of it; False when
        there was none."""
        with self._lock:
            self._check_open()
            if not self._collections.exists(physical):
                return False
            opened = self._collections.open.get(physical)
            if opened is not None:
                self._indexer.release(opened.parts)  # no builder writes in what is removed
            aliases = {a: t for a, t in self._aliases.names.items() if t != physical}
            if aliases != self._aliases.names:
                self._aliases.write(aliases)
            self._collections.remove(physical)
            return True

    # Points

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Write points and return once they are searchable. Existing ids are overwritten."""
        if not points:
            return
        with self._lock:
            collection = self._collection(name)
        ids = collection.encoding.point_ids
        dense = [qe.Point(id=point_id(p.doc_id, p.chunk_no, ids),
                          vector=np.asarray(p.vector, dtype=np.float32).tolist(), payload=p.payload)
                 for p in points]
        lexical = [qe.Point(id=dense[i].id, vector={LEXICAL_VECTOR: edge_search.edge_sparse(p.sparse)},
                            payload=_lexical_payload(p.payload))
                   for i, p in enumerate(points) if p.sparse is not None]
        if lexical and collection.encoding.lexical is None:
            raise no_lexical_vectors(name)
        with self._writing():
            sealed = collection.parts.upsert(dense, lexical)
        if sealed:
            self._indexer.wake()

    def wait_indexed(self, name: str, timeout_s: float = 600.0) -> None:
        """Return once the builder has done what it would do were the collection idle: its
        points indexed (but for fewer than parts.IDLE_SEAL new ones) and its parts merged."""
        with self._lock:
            self._collection(name)
            physical = self._physical(name)
        self._indexer.wake(settle=physical)
        deadline = time.monotonic() + timeout_s
        while self._indexer.busy.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"collection {name!r} is still being indexed after {timeout_s:.0f} s")
            time.sleep(0.05)

    def index_state(self, name: str) -> dict[str, int]:
        """How much of a collection is in HNSW indexes (bienc.store.parts.Parts.state)."""
        with self._lock:
            return self._collection(name).parts.state()

    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Payload (all of it, or `fields`) of chunk 0 of each stored document among
        `doc_ids`; absent documents are left out."""
        doc_ids = list(doc_ids)
        if not doc_ids:
            return {}
        with self._lock:
            collection = self._collection(name)
        parts, made = collection.parts, collection.encoding.point_ids
        ids = {point_id(doc_id, 0, made): doc_id for doc_id in doc_ids}
        records = parts.retrieve(list(ids), fields if fields is not None else True)
        return {ids[str(r.id)]: r.payload for r in records if r.payload}

    def _documents_filter(self, collection: OpenCollection, query_filter: MetadataFilter | None
                          ) -> qe.Filter:
        """The chunk 0 of each document `query_filter` matches (of every one, without)."""
        if query_filter is None:
            return FIRST_CHUNKS_FILTER
        collection.fields.cover(collection.parts, query_filter)
        return metadata_filter(query_filter, FIRST_CHUNKS)

    def document_ids(self, name: str, query_filter: MetadataFilter | None = None) -> list[str]:
        """Every document's id (those `query_filter` matches), in the store's order."""
        with self._lock:
            collection = self._collection(name)
        selector = self._documents_filter(collection, query_filter)
        return [str(r.payload["doc_id"]) for r in collection.parts.scroll(
            lambda offset: qe.ScrollRequest(offset=offset, limit=1000, filter=selector,
                                            with_payload=["doc_id"], with_vector=False))
                if r.payload]

    def count_documents(self, name: str, query_filter: MetadataFilter | None = None) -> int:
        """How many documents `query_filter` matches (all of them, without one)."""
        with self._lock:
            collection = self._collection(name)
        selector = self._documents_filter(collection, query_filter)
        return collection.parts.count(qe.CountRequest(exact=True, filter=selector))

    def document_points(self, name: str, doc_ids: Sequence[str]) -> list[ChunkPoint]:
        """Every chunk point of the given documents, with its dense vector and payload (not
        its lexical vector), in no particular order."""
        if not doc_ids:
            return []
        selector = documents_filter(doc_ids)
        with self._lock:
            parts = self._collection(name).parts
        points: list[ChunkPoint] = []
        for record in parts.scroll(lambda offset: qe.ScrollRequest(
                offset=offset, limit=1024, filter=selector, with_payload=True, with_vector=True)):
            payload = record.payload or {}
            vector = record.vector[""] if isinstance(record.vector, dict) else record.vector
            points.append(ChunkPoint(str(payload["doc_id"]), int(payload["chunk"]),
                                     np.asarray(vector, dtype=np.float32), payload))
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
            parts = self._collection(name).parts
        with self._writing():  # chunk 0 is never stale: the lexical part is left alone
            parts.update_all(qe.UpdateOperation.delete_points_by_filter(qe.Filter(should=per_doc)),
                             lexical=False)

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None:
        """Delete every chunk of the given documents (and their lexical vectors)."""
        if not doc_ids:
            return
        selector = documents_filter(doc_ids)
        with self._lock:
            parts = self._collection(name).parts
        with self._writing():
            parts.update_all(qe.UpdateOperation.delete_points_by_filter(selector))

    def set_versions(self, name: str, versions: Mapping[str, int]) -> None:
        """Set `version` in the payload of every chunk of each document (a document whose
        content is unchanged, written again as a newer version); nothing else changes."""
        if not versions:
            return
        with self._lock:
            parts = self._collection(name).parts
        for doc_id, version in versions.items():  # the lexical part keeps no version
            parts.update_all(qe.UpdateOperation.set_payload_by_filter(
                documents_filter([doc_id]), {"version": version}), lexical=False)

    # Whole collections

    def read_points(self, name: str, sink: Callable[[Sequence[ChunkPoint]], None]) -> None:
        """Every point of `name` (dense vector, payload and, for chunk 0 of a collection with
        lexical vectors, its lexical vector), handed to `sink` a page at a time, in no
        particular order; as of one moment: the collection's writes wait until it returns."""
        with self._lock:
            parts = self._collection(name).parts

        def page(records: list[Any], lexical: list[Any]) -> None:
            sparse = {str(r.id): r.vector.get(LEXICAL_VECTOR) for r in lexical
                      if isinstance(r.vector, dict)}
            points = []
            for record in records:
                payload = record.payload or {}
                vector = record.vector[""] if isinstance(record.vector, dict) else record.vector
                points.append(ChunkPoint(str(payload["doc_id"]), int(payload["chunk"]),
                                         np.asarray(vector, dtype=np.float32), payload,
                                         sparse.get(str(record.id))))
            sink(points)

        parts.read_all(1024, page)

    def documents_page(self, name: str, after: str | None, limit: int
                       ) -> tuple[list[dict[str, Any]], str | None]:
        """Chunk 0's payload of up to `limit` documents in the order of their point ids,
        from point id `after` on (None: the first); and the point id the next page starts
        at (None: this was the last)."""
        with self._lock:
            parts = self._collection(name).parts
        records = parts.page(qe.ScrollRequest(offset=after, limit=limit + 1,
                                              filter=FIRST_CHUNKS_FILTER, with_payload=True,
                                              with_vector=False))
        after_page = str(records[limit].id) if len(records) > limit else None
        return [r.payload for r in records[:limit] if r.payload], after_page

    # Search (bienc.store.edge_search)

    def dense_candidates(self, name: str, vector: np.ndarray, limit: int, *,
                         query_filter: MetadataFilter | None = None,
                         score_threshold: float | None = None,
                         exact: bool = False) -> list[Candidate]:
        with self._lock:
            collection = self._collection(name)
        return edge_search.dense_candidates(
            collection, vector, limit, lambda points: self.search_params(limit, exact, points),
            self._exact_params, query_filter=query_filter, score_threshold=score_threshold)

    def search_params(self, documents: int, exact: bool = False, points: int = 0
                      ) -> qe.SearchParams:
        """Edge's parameters of a dense search `documents` deep in a part's graph of `points`
        points (hnsw_ef)."""
        if exact:
            return self._exact_params
        return qe.SearchParams(hnsw_ef=hnsw_ef(documents, self._search_ef, self._ef_per_document,
                                               points, self._ef_reference),
                               quantization=self._rescoring)

    def _lexical_candidates(self, name: str, query: SparseVector, limit: int,
                            query_filter: MetadataFilter | None,
                            score_threshold: float | None) -> list[Candidate]:
        with self._lock:
            collection = self._collection(name)
        if collection.encoding.lexical is None or collection.parts.lexical_part is None:
            raise no_lexical_vectors(name)
        return edge_search.lexical_candidates(collection, query, limit, query_filter=query_filter,
                                              score_threshold=score_threshold)

    def fetch_hits(self, name: str, chosen: Sequence[Candidate], with_text: bool = True
                   ) -> list[Hit]:
        """Hits of the `chosen` documents, in order (bienc.store.interface.hits_from)."""
        if not chosen:
            return []
        with self._lock:
            collection = self._collection(name)
        return edge_search.fetch_hits(collection, chosen, with_text)


def _lexical_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the lexical part keeps of a chunk 0: enough to find and filter the document."""
    return {"doc_id": payload["doc_id"], "chunk": 0, "metadata": payload.get("metadata") or {}}
