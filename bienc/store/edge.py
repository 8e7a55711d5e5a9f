"""Chunk vectors in Qdrant Edge: the same interface as bienc.store.qdrant.VectorStore over Qdrant's own
Rust engine running in-process (``qdrant_edge.EdgeShard``, with HNSW), instead of
qdrant-client's pure-Python local mode (exact search, slow).

Layout. Each physical collection is a folder of Edge shards, its parts (bienc.store.parts),
and the store keeps the map of names to physical collections::

    root/
      .lock                     held (flock) while a process has the store open
      aliases.json              {"papers": "papers@2", ...}: name -> physical collection
      <physical>/               papers@2 (or, made by an older bienc, papers)
        collection.json         the collection's record (bienc.store.record)
        parts.json, parts/      its parts: the active one, sealed and indexed ones, lexical

A physical collection exists exactly when its collection.json does: it is written (atomically)
before the parts are created and removed before they are deleted, so a crash leaves at worst
a folder without it, which the next ensure_collection clears. aliases.json is rewritten whole
(a temporary file renamed over it) under the store's lock, so a name switches from one
physical collection to the next in one step; a name resolves through it first, then to a
physical collection of that very name. Point ids are bienc.store.interface.point_id's uuid5
strings, so a document written again overwrites its points.

Document-level search. Edge has no grouping, so `dense_candidates` over-fetches chunks: it
asks for ``limit * r`` chunks (payload: `doc_id` and `chunk` only), keeps each document's first
(= best) chunk, and asks again for more (at least twice as many; more when few distinct
documents came per chunk) until `limit` distinct documents are found or fewer chunks than asked
come back (collection, filter or score threshold exhausted). `r` is 1.25 times a running
estimate of the chunks that searches of about that size (by powers of two) needed per document
in this collection (4 before the first): a deep search needs fewer chunks per document than a
shallow one, as a document's chunks tend to rank together. `lexical_candidates` needs none of
that: only chunk 0 has a lexical vector. `fetch_hits` then reads the payloads of the documents a
search keeps, in one `retrieve` of their best chunks plus, for documents whose best chunk is not
chunk 0, their chunk 0 (full text, and the content_hash that must match).
Reading payloads dominates a top-1000 query (~4,000 chunks' ids, then ~1,750 records).

Lexical vectors. A collection created with lexical parameters has a sparse vector
(LEXICAL_VECTOR) with Qdrant's IDF modifier. Edge's collection-wide IDF statistics go on
counting a deleted or overwritten point (measured with qdrant-edge-py 0.9.0, in plain and
optimized segments alike), so every lexical query computes IDF over the live chunk-0 points
(`IdfParams(corpus=...)`): each document counts once, and a deleted one stops counting at once.

Indexing (HNSW). Edge builds HNSW in `optimize()`, holding Python's GIL for the whole build
(qdrant-edge-py 0.9.0: a 10k-point build stalled every thread of the process for 2-5 s), so
this process never calls it: writes go to a collection's active part, searched by brute force
(~1 ms at 10k x 384-d); at `indexing_threshold` points (10,000) it is sealed, and a builder
process (bienc.store.builder, one at a time per store, started from a thread here) indexes a
copy of it and merges indexed parts into bigger ones (bienc.store.parts.plan_job), each
into one HNSW segment. Swapping a built part in loads it here (~1.5 us a point, the GIL held).
`wait_indexed` waits for the builder to finish what it has (benchmarks and tests use it).

Filters. bienc.store.filters' MetadataFilter is translated to Edge's. Filtering on
a payload field without an index reads every candidate's payload (~1.5 us a point: 150 ms a query
at 100k chunks); with an index it is ~0.1 ms. `doc_id` and `chunk` are indexed when a collection
is created; a `metadata.*` key is indexed (keyword, integer or bool, from the filter's value) the
first time a search filters on it, at most 32 keys a collection. Edge 0.9.0 converts a Python bool
in MatchValue to an integer (True matches 1, not true); a numpy bool is passed instead.

Threads and processes. EdgeShard may be called from any thread. The store's re-entrant lock
guards its own state (aliases, open collections); a collection's parts have their own locks,
and a search takes none for longer than a snapshot of the parts, so that no search waits for a
write, a copy or a swap (bienc.store.parts). One process opens the store: `root/.lock` is taken
when the store is constructed and a second process gets ConfigError, as does Edge's own WAL
lock if it trips.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
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
from bienc.store.builder import dense_config
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
from bienc.store.parts import PARTS_DIR, Parts
from bienc.store.record import CollectionEncoding, physical_name, split_physical

log = logging.getLogger(__name__)

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,244}(@[0-9]{1,9})?$")
_ALIASES_FILE = "aliases.json"
_META_FILE = "collection.json"
_OVERFETCH = 4  # chunks asked for per wanted document, before the collection's estimate
_ESTIMATE_MARGIN = 1.25  # the estimate is exceeded by this much, so that one fetch does
_ESTIMATE_WEIGHT = 0.1  # of each search in the running estimate
_MAX_OVERFETCH = 64  # chunks asked for per wanted document at first, at most
_MAX_AUTO_INDEXES = 32
_BUILDER_IDLE_S = 5.0  # how often an idle builder thread looks for work anyway
_FIRST_CHUNKS = qe.Filter(must=[qe.FieldCondition(key="chunk", match=qe.MatchValue(0))])
# IDF over the documents (chunk 0 carries a document's lexical vector), live points only:
# Edge's collection-wide statistics go on counting deleted and overwritten points.
_IDF_OVER_DOCUMENTS = qe.IdfParams(corpus=_FIRST_CHUNKS)


class _Collection:
    """An open collection's parts and what this process knows about it."""

    def __init__(self, parts: Parts, encoding: CollectionEncoding, indexed_fields: set[str]):
        self.parts = parts
        self.encoding = encoding
        self.indexed_fields = indexed_fields
        self.auto_indexes = 0
        # chunks a search needed per distinct document, by the size of the request (a
        # running estimate: the first fetch of the next search of about that size)
        self.chunks_per_document: dict[int, float] = {}


class _Builder:
    """Runs the store's index jobs in builder processes, one at a time, from a thread; swaps
    each result in when it is done. `busy` is clear while it has nothing to do."""

    def __init__(self, store: EdgeVectorStore):
        self._store = store
        self._wake = threading.Event()
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.busy = threading.Event()
        self._settle: set[str] = set()  # physical collections to take as idle now
        self._lock = threading.Lock()  # so that no wake is missed between a pass and `busy`

    def wake(self, settle: str | None = None) -> None:
        """Look for work now (`settle`: and take that physical collection as idle)."""
        with self._lock:
            if settle is not None:
                self._settle.add(settle)
            self.busy.set()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bienc-builder", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # its work is lost, not the index: the parts stay as they were
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stopping:
            try:
                worked = self._one_job()
            except Exception:  # the parts stay as they were; try again later
                log.exception("an index job failed")
                worked = False
                time.sleep(_BUILDER_IDLE_S)
            if worked:
                continue
            with self._lock:
                if self._wake.is_set():  # woken during the pass: another pass first
                    self._wake.clear()
                    continue
                self.busy.clear()
            self._wake.wait(_BUILDER_IDLE_S)

    def _one_job(self) -> bool:
        for physical, collection in self._store._open_collections():
            parts = collection.parts
            settle = physical in self._settle
            job = parts.next_job(parts.folder / PARTS_DIR, now=settle)
            if job is None:
                if settle:
                    self._settle.discard(physical)
                continue
            self.busy.set()
            started = time.perf_counter()
            spec = {"kind": job.kind, "copies": [str(c) for c in job.copies],
                    "target": str(job.folder), "config": self._store._dense_settings(collection.encoding)}
            self._process = subprocess.Popen([sys.executable, "-m", "bienc.store.builder",
                                              json.dumps(spec)], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, errors = self._process.communicate()
            code, self._process = self._process.returncode, None
            if code != 0 or self._stopping:
                parts.abandon(job)
                if not self._stopping:
                    log.error("indexing %s of %s failed (exit %s): %s", job.sources, physical,
                              code, errors.decode(errors="replace")[-2000:])
                return not self._stopping
            parts.install(job)
            log.info("%s %s of %s into %s in %.1f s", job.kind, job.sources, physical, job.target,
                     time.perf_counter() - started)
            return True
        return False


class EdgeVectorStore:
    """Collections of chunk points in Qdrant Edge shards under `root`; the interface, results
    and errors of bienc.store.qdrant.VectorStore. A missing collection raises CollectionNotFoundError
    from every method that needs it (VectorStore's local mode lets some raise ValueError)."""

    def __init__(self, root: Path, *, hnsw_m: int = 16, hnsw_ef_construct: int = 100,
                 search_ef: int = 512, indexing_threshold: int = 10_000, quantization: bool = False,
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
        self._builder = _Builder(self)

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
        """Stop the builder (a job in progress is dropped: it runs again at the next start),
        flush and close every open collection and release the folder lock."""
        self._builder.stop()
        with self._lock:
            for name, collection in self._open.items():
                try:
                    collection.parts.close()
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

    def _dense_settings(self, encoding: CollectionEncoding) -> dict[str, Any]:
        """bienc.store.builder.dense_config's arguments for a collection (also the builder's)."""
        threshold_kb = max(1, self._indexing_threshold * encoding.dimension * 4 // 1024)
        # Below full_scan_threshold a segment is searched by brute force even when indexed, and
        # a filter matching fewer points is served by payload index plus brute force: half a
        # part's worth, so that an indexed part is searched through its graph.
        return {"dimension": encoding.dimension, "hnsw_m": self._hnsw_m,
                "hnsw_ef_construct": self._hnsw_ef_construct, "full_scan_kb": threshold_kb // 2,
                "quantization": self._quantization}

    def _collection(self, name: str) -> _Collection:
        """The open collection `name` resolves to, loading its parts on first use."""
        physical = self._physical(name)
        collection = self._open.get(physical)
        if collection is not None:
            return collection
        folder = self._folder(physical)
        meta = json.loads((folder / _META_FILE).read_text())
        encoding = CollectionEncoding.from_record(physical, self.location, meta)
        settings = self._dense_settings(encoding)
        lexical = qe.EdgeConfig(sparse_vectors={
            LEXICAL_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}) \
            if encoding.lexical is not None else None
        parts = self._edge("open the collection", Parts, folder,
                           lambda: dense_config(**settings, indexing=False), lexical,
                           self._indexing_threshold, _create_field_indexes)
        indexed = set(parts.parts[parts.active].shard.info().payload_schema)
        collection = _Collection(parts, encoding, indexed)
        self._open[physical] = collection
        self._builder.wake()  # it may hold sealed parts, or be idle with work to merge
        return collection

    def _open_collections(self) -> list[tuple[str, _Collection]]:
        with self._lock:
            return list(self._open.items())

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
                    stale.parts.close()
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            tmp = folder / f".{_META_FILE}.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(encoding.record()))
            os.replace(tmp, folder / _META_FILE)
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
        documents = collection.parts.count(qe.CountRequest(exact=True, filter=_FIRST_CHUNKS))
        points = collection.parts.count(qe.CountRequest(exact=True))
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
                collection.parts.close()
            folder = self._folder(physical)
            (folder / _META_FILE).unlink()
            shutil.rmtree(folder)
            return True

    # Points

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        """Write points and return once they are searchable. Existing ids are overwritten."""
        if not points:
            return
        dense = [qe.Point(id=point_id(p.doc_id, p.chunk_no),
                          vector=np.asarray(p.vector, dtype=np.float32).tolist(), payload=p.payload)
                 for p in points]
        lexical = [qe.Point(id=dense[i].id, vector={LEXICAL_VECTOR: _edge_sparse(p.sparse)},
                            payload=_lexical_payload(p.payload))
                   for i, p in enumerate(points) if p.sparse is not None]
        with self._lock:
            collection = self._collection(name)
        if lexical and collection.encoding.lexical is None:
            raise no_lexical_vectors(name)
        if collection.parts.upsert(dense, lexical):
            self._builder.wake()

    def wait_indexed(self, name: str, timeout_s: float = 600.0) -> None:
        """Return once the builder has done what it would do were the collection idle: its
        points indexed (but for fewer than parts.IDLE_SEAL new ones) and its parts merged."""
        with self._lock:
            self._collection(name)
            physical = self._physical(name)
        self._builder.wake(settle=physical)
        deadline = time.monotonic() + timeout_s
        while self._builder.busy.is_set():
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
        ids = {point_id(doc_id, 0): doc_id for doc_id in doc_ids}
        if not ids:
            return {}
        with self._lock:
            parts = self._collection(name).parts
        records = parts.retrieve(list(ids), fields if fields is not None else True)
        return {ids[str(r.id)]: r.payload for r in records if r.payload}

    def document_ids(self, name: str) -> list[str]:
        """Every document's id, in the store's order."""
        with self._lock:
            parts = self._collection(name).parts
        return [str(r.payload["doc_id"]) for r in parts.scroll(lambda offset: qe.ScrollRequest(
            offset=offset, limit=1000, filter=_FIRST_CHUNKS, with_payload=["doc_id"],
            with_vector=False)) if r.payload]

    def document_points(self, name: str, doc_ids: Sequence[str]) -> list[ChunkPoint]:
        """Every chunk point of the given documents, with its dense vector and payload (not
        its lexical vector), in no particular order."""
        if not doc_ids:
            return []
        selector = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))])
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
        # chunk 0 is never stale: the lexical part is left alone
        parts.update_all(qe.UpdateOperation.delete_points_by_filter(qe.Filter(should=per_doc)),
                         lexical=False)

    def delete_documents(self, name: str, doc_ids: Sequence[str]) -> None:
        """Delete every chunk of the given documents (and their lexical vectors)."""
        if not doc_ids:
            return
        selector = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(doc_ids)))])
        with self._lock:
            parts = self._collection(name).parts
        parts.update_all(qe.UpdateOperation.delete_points_by_filter(selector))

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
        if query_filter is not None:
            self._index_filter_fields(collection, query_filter)
        best: dict[str, Candidate] = {}  # document id -> its best chunk, best first
        size = max(1, limit).bit_length()  # requests of about the same size share an estimate
        estimate = collection.chunks_per_document.get(size, _OVERFETCH)
        fetch = max(limit, 1, math.ceil(limit * min(_MAX_OVERFETCH, estimate * _ESTIMATE_MARGIN)))
        needed = 0  # chunks up to the limit-th distinct document
        while True:
            scored = collection.parts.query(*(qe.QueryRequest(
                limit=fetch, query=query, filter=edge_filter, score_threshold=score_threshold,
                params=p, with_payload=["doc_id", "chunk"], with_vector=False)
                for p in (params, self._search_params[True])))
            best = {}
            for number, point in enumerate(scored):
                payload = point.payload
                doc_id = payload.get("doc_id") if payload else None
                if doc_id is not None and doc_id not in best:  # results come best first
                    best[doc_id] = Candidate(doc_id, int(payload.get("chunk", -1)), point.score)  # type: ignore[union-attr]
                    if len(best) == limit:
                        needed = number + 1
            if len(best) >= limit or len(scored) < fetch:
                if needed and query_filter is None and score_threshold is None:
                    collection.chunks_per_document[size] = (1 - _ESTIMATE_WEIGHT) * estimate + \
                        _ESTIMATE_WEIGHT * needed / max(1, limit)
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
        sparse = _edge_sparse(query)
        with self._lock:
            collection = self._collection(name)
        if collection.encoding.lexical is None or collection.parts.lexical is None:
            raise no_lexical_vectors(name)
        if query_filter is not None:
            self._index_filter_fields(collection, query_filter)
        scored = collection.parts.lexical.query(qe.QueryRequest(
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
            parts = self._collection(name).parts
        records = parts.retrieve(wanted, fields)
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
                collection.parts.update_all(qe.UpdateOperation.create_field_index(key, schema))
            except Exception as exc:  # filtering still works, only slower
                log.warning("could not index payload field %r: %s", key, exc)


def _create_field_indexes(shard: qe.EdgeShard) -> None:
    """The payload indexes every new part starts with (search filters add more to all)."""
    for field_name, schema in (("doc_id", qe.PayloadSchemaType.Keyword),
                               ("chunk", qe.PayloadSchemaType.Integer)):
        shard.update(qe.UpdateOperation.create_field_index(field_name, schema))


def _edge_sparse(vector: SparseVector) -> qe.SparseVector:
    return vector if isinstance(vector, qe.SparseVector) else \
        qe.SparseVector(list(vector.indices), list(vector.values))


def _lexical_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the lexical part keeps of a chunk 0: enough to find and filter the document."""
    return {"doc_id": payload["doc_id"], "chunk": 0, "metadata": payload.get("metadata") or {}}


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
