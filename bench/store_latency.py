"""Store latency: the Edge store (bienc.store.edge, HNSW in Rust) against qdrant-client's embedded
engine (bienc.store.interface's local mode, exact search in Python), on synthetic embedding-like vectors.

    python bench/store_latency.py                       # 100,000 chunk points, 384-d
    python bench/store_latency.py --points 5000 --queries 20 --indexing-threshold 2000

Vectors are low-rank (a random 32-d latent times a fixed 32 x dim matrix) plus a little noise,
normalised; each document has --chunks chunks. qdrant-client's local mode only gets the first
--local-max points (it is slow). Prints, per store: upsert points/s (Edge's includes the HNSW
builds its upserts trigger), p50/p99 ms of one document-level top-10 and top-1000 query (with
text), and recall@10 / recall@1000 of the document lists against exact numpy search over the
points that store holds (each document scored by its best chunk).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from bienc.store.edge import EdgeVectorStore
from bienc.store.interface import ChunkPoint
from bienc.store.qdrant import VectorStore
from bienc.store.record import CollectionEncoding

Store = VectorStore | EdgeVectorStore
COLLECTION = "bench"


def embedding_like(rng: np.random.Generator, n: int, basis: np.ndarray) -> np.ndarray:
    x = rng.normal(size=(n, basis.shape[0])).astype(np.float32) @ basis
    x += 0.25 * rng.normal(size=x.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_points(vectors: np.ndarray, chunks: int) -> list[ChunkPoint]:
    points = []
    for i, vector in enumerate(vectors):
        doc, chunk = divmod(i, chunks)
        payload: dict[str, object] = {
            "doc_id": f"doc-{doc}", "chunk": chunk, "chunks": chunks, "title": f"Title {doc}",
            "metadata": {"source": "bench", "group": doc % 10}, "content_hash": f"h{doc}",
            "chunk_text": f"text of chunk {chunk} of document {doc} " * 8,
        }
        if chunk == 0:
            payload["text"] = f"the whole text of document {doc} " * 30
        points.append(ChunkPoint(f"doc-{doc}", chunk, vector, payload))
    return points


def exact_top(vectors: np.ndarray, chunks: int, query: np.ndarray, k: int) -> set[str]:
    doc_scores = (vectors @ query).reshape(-1, chunks).max(axis=1)
    k = min(k, len(doc_scores))
    top = np.argpartition(-doc_scores, k - 1)[:k]
    return {f"doc-{d}" for d in top}


def measure(label: str, store: Store, points: list[ChunkPoint], vectors: np.ndarray, chunks: int,
            queries: np.ndarray, batch: int) -> None:
    store.ensure_collection(COLLECTION, CollectionEncoding(model="bench-model", dimension=vectors.shape[1]))
    started = time.perf_counter()
    for start in range(0, len(points), batch):
        store.upsert(COLLECTION, points[start:start + batch])
    upsert_s = time.perf_counter() - started
    extra = ""
    if isinstance(store, EdgeVectorStore):
        state = store.index_state(COLLECTION)
        extra = (f"  (parts indexed {state['indexed_parts']}, HNSW-indexed "
                 f"{state['indexed_points']}, unindexed {state['unindexed_points']})")
    print(f"\n{label}: {len(points)} points, {len(points) // chunks} documents{extra}")
    print(f"  upsert            {len(points) / upsert_s:10.0f} points/s  ({upsert_s:.1f} s)")
    store.search(COLLECTION, queries[0], 10)  # warm up
    for k in (10, 1000):
        latencies, recalls = [], []
        for query in queries:
            t = time.perf_counter()
            hits = store.search(COLLECTION, query, k, with_text=True)
            latencies.append((time.perf_counter() - t) * 1e3)
            want = exact_top(vectors, chunks, query, k)
            recalls.append(len(want & {h.doc_id for h in hits}) / len(want))
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"  top-{k:<5} query    p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   "
              f"recall@{k} {np.mean(recalls):.4f} (min {min(recalls):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000, help="chunk points in the Edge store")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--chunks", type=int, default=4, help="chunks per document")
    parser.add_argument("--local-max", type=int, default=20_000, help="points in qdrant-client local mode")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256, help="points per upsert")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construct", type=int, default=100)
    parser.add_argument("--search-ef", type=int, default=128)
    parser.add_argument("--indexing-threshold", type=int, default=10_000,
                        help="Edge: un-indexed points that trigger an HNSW build")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    basis = rng.normal(size=(32, args.dim)).astype(np.float32)
    n = args.points - args.points % args.chunks
    vectors = embedding_like(rng, n, basis)
    queries = embedding_like(rng, args.queries, basis)
    points = make_points(vectors, args.chunks)

    folder = Path(tempfile.mkdtemp(prefix="bienc-store-bench-"))
    try:
        edge = EdgeVectorStore(folder / "edge", hnsw_m=args.hnsw_m, hnsw_ef_construct=args.hnsw_ef_construct,
                               search_ef=args.search_ef, indexing_threshold=args.indexing_threshold)
        try:
            measure(f"Edge (m={args.hnsw_m}, ef_construct={args.hnsw_ef_construct}, "
                    f"ef at most {args.search_ef})",
                    edge, points, vectors, args.chunks, queries, args.batch)
        finally:
            edge.close()
        n_local = min(n, args.local_max - args.local_max % args.chunks)
        if n_local > 0:
            local = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
            try:
                measure("qdrant-client local mode (exact)", local, points[:n_local], vectors[:n_local],
                        args.chunks, queries, args.batch)
            finally:
                local.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
