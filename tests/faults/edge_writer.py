"""A writer of the embedded (Qdrant Edge) store for the fault tests: run in a subprocess that
a crash point kills, imported by the tests to write what is left and check what is there.

    python -m tests.faults.edge_writer ROOT [--disk-limit BYTES]

Writes BATCHES to the store at ROOT as a worker's indexing does (upsert, then delete the
document's chunks from its chunk count on), recording each batch in ROOT/../ledger.jsonl before
("begin") and after ("done") it: a batch done was acknowledged, a batch begun and not done
was in flight when the process died (the queue delivers it again). Then waits for the builder
to index and merge everything. The documents are small and synthetic: each version of each
document has its own chunk count (1 to 3) and vectors, so that an old chunk left behind, a
lost document or a duplicate shows.

--once BATCH [--fsize BYTES] [--min-free-mb MB] [--fill FILE]: write that one batch instead
(BATCH "big": big_batch()), as a worker does (bienc.workers.indexing: a batch the store
refuses is written document by document, and the documents it refuses then fail), with files
limited to BYTES (RLIMIT_FSIZE: a disk full for this process), the store's disk reserve at
MB, and, once the store is open, FILE written until the disk has 4 MiB left; print how it
ended, as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from bienc.store.edge import EdgeVectorStore
from bienc.store.interface import ChunkPoint
from bienc.store.record import Chunking, CollectionEncoding

COLLECTION = "c"
DIMENSION = 16
THRESHOLD = 100  # points a part is sealed at: builds start after a few batches
DOCS = 120
BATCH = 20
ENCODING = CollectionEncoding(model="synthetic", dimension=DIMENSION, chunking=Chunking(True, 64, 8),
                              lexical={"kind": "bm25", "k": 1.2, "b": 0.75, "avg_len": 8.0})


@dataclass(frozen=True)
class Batch:
    number: int
    version: int
    doc_ids: tuple[str, ...]
    text_bytes: int = 0  # the size of each document's text (0: a few words)


def batches() -> list[Batch]:
    """Version 1 of every document, then version 2 of every document (in other batches)."""
    ids = [f"d{i:03d}" for i in range(DOCS)]
    found = []
    for version in (1, 2):
        for start in range(0, DOCS, BATCH):
            found.append(Batch(len(found), version, tuple(ids[start:start + BATCH])))
    return found


def chunks_of(doc_id: str, version: int) -> int:
    return 1 + zlib.crc32(f"{doc_id}/{version}".encode()) % 3


def content_hash(doc_id: str, version: int) -> str:
    return f"{doc_id}-v{version}"


def vector(doc_id: str, version: int, chunk: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}/{version}/{chunk}".encode()))
    v = rng.normal(size=DIMENSION).astype(np.float32)
    return v / np.linalg.norm(v)


def document_points(doc_id: str, version: int, text_bytes: int = 0) -> list[ChunkPoint]:
    n = chunks_of(doc_id, version)
    words = [f"w{zlib.crc32(f'{doc_id}/{version}/{k}'.encode()) % 500}" for k in range(6)]
    text = " ".join(words) if not text_bytes else (" ".join(words) + " ") * (text_bytes // 30)
    points = []
    for chunk in range(n):
        payload: dict[str, Any] = {"doc_id": doc_id, "chunk": chunk, "chunks": n, "title": doc_id,
                                   "metadata": {"version": version},
                                   "content_hash": content_hash(doc_id, version)}
        if chunk == 0:
            payload["text"] = text
        sparse = qe.SparseVector(sorted({int(w[1:]) for w in words}),
                                 [1.0] * len({int(w[1:]) for w in words})) if chunk == 0 else None
        points.append(ChunkPoint(doc_id, chunk, vector(doc_id, version, chunk), payload, sparse))
    return points


def write_batch(store: EdgeVectorStore, batch: Batch) -> None:
    """As bienc.workers.indexing does: the points, then every chunk from the count on."""
    points = [p for d in batch.doc_ids for p in document_points(d, batch.version, batch.text_bytes)]
    store.upsert(COLLECTION, points)
    store.delete_chunks_from(COLLECTION, {d: chunks_of(d, batch.version) for d in batch.doc_ids})


def open_store(root: Path, **options: Any) -> EdgeVectorStore:
    store = EdgeVectorStore(root, indexing_threshold=THRESHOLD, **options)
    store.ensure_collection(COLLECTION, ENCODING)
    return store


def ledger(root: Path) -> Path:
    return root.parent / "ledger.jsonl"


def _record(root: Path, batch: Batch, state: str) -> None:
    with ledger(root).open("a") as handle:
        handle.write(json.dumps({"batch": batch.number, "state": state}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_ledger(root: Path) -> tuple[set[int], set[int]]:
    """The batches done, and those begun but not done (in flight at the crash)."""
    begun, done = set(), set()
    if ledger(root).is_file():
        for line in ledger(root).read_text().splitlines():
            entry = json.loads(line)
            (done if entry["state"] == "done" else begun).add(entry["batch"])
    return done, begun - done


def run(root: Path, todo: list[Batch]) -> Iterator[Batch]:
    store = open_store(root)
    try:
        for batch in todo:
            _record(root, batch, "begin")
            write_batch(store, batch)
            _record(root, batch, "done")
            yield batch
        store.wait_indexed(COLLECTION, timeout_s=120)
    finally:
        store.close()


def write_once(root: Path, batch: Batch, fsize: int | None, min_free_mb: float | None,
               fill: Path | None) -> dict[str, Any]:
    """Write `batch` as a worker does, files limited to `fsize` bytes; how it ended."""
    from bienc.workers.indexing import _upsert_isolating_failures

    store = open_store(root, **({} if min_free_mb is None else {"min_free_mb": min_free_mb}))
    if fill is not None:
        with fill.open("wb") as handle:
            handle.write(b"\0" * (shutil.disk_usage(fill.parent).free - (4 << 20)))
    if fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    points = [p for d in batch.doc_ids for p in document_points(d, batch.version, batch.text_bytes)]
    try:
        failures = _upsert_isolating_failures(store, COLLECTION, points)
        outcome = {"raised": None, "failures": failures}
    except Exception as exc:
        outcome = {"raised": type(exc).__name__, "message": str(exc)}
    try:
        store.close()
    except Exception as exc:  # the limit may fail the last flush too: the WAL has the rest
        outcome["close"] = f"{type(exc).__name__}: {exc}"
    return outcome


def big_batch() -> Batch:
    """Version 3 of the first documents, each with a 1 MB text: more than Edge's first file of
    payloads (32 MB) holds, so the write must grow a file."""
    return Batch(99, 3, tuple(f"d{i:03d}" for i in range(40)), text_bytes=1 << 20)


def main() -> None:
    root = Path(sys.argv[1])
    options = dict(zip(sys.argv[2::2], sys.argv[3::2], strict=True))
    if "--once" in options:
        batch = big_batch() if options["--once"] == "big" else batches()[int(options["--once"])]
        fsize = int(options["--fsize"]) if "--fsize" in options else None
        reserve = float(options["--min-free-mb"]) if "--min-free-mb" in options else None
        fill = Path(options["--fill"]) if "--fill" in options else None
        print(json.dumps(write_once(root, batch, fsize, reserve, fill)))
        return
    done, _ = read_ledger(root)
    for _ in run(root, [b for b in batches() if b.number not in done]):
        pass


if __name__ == "__main__":
    main()
