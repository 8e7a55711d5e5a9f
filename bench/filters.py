"""Filtered search latency with and without payload indexes, at 100,000 points (or --points),
on the embedded store (Qdrant Edge, HNSW).

    python bench/filters.py                    # 100,000 points
    python bench/filters.py --points 5000      # a quick check

Two stores in temporary folders get the same points: one-chunk documents with 384-d vectors
drawn like text embeddings (low rank plus noise, normalised) and metadata of every kind a
filter meets: `lang` (one of 10 strings), `year` (an integer, 2000-2023), `price` (a decimal)
and `seen` (an ISO-8601 date-time over 2024). The indexed store declares every field
(BIENC_INDEXED_FIELDS: lang:keyword, year:integer, price:float, seen:datetime); the other
declares none and has its keys marked unindexed, so that no search makes an automatic index
(bienc.store.edge_filters) and every filter reads the candidates' payloads. Both are built
through the Store interface, then left to the builder until their parts are indexed.

For each filter (an equality at 10%, ranges of numbers and of dates at about 4% and 1%, a
`not`, and a combination at about 0.4%), prints p50 and p99 ms of a top-10 dense search
(dense_candidates: the store's ranking, no query encoding, no payloads fetched) and of
count_documents (what a delete's dry run costs), on each store, and how many of the top 10
the two stores share. Searches are timed back to back after one warm-up; a count, 20 times
after one. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bienc.store.edge import EdgeVectorStore
from bienc.store.filters import MetadataFilter, parse_filter
from bienc.store.interface import ChunkPoint
from bienc.store.record import Chunking, CollectionEncoding

DIMENSION = 384
DECLARED: dict[str, Any] = {"lang": "keyword", "year": "integer", "price": "float",
                            "seen": "datetime"}
FILTERS: dict[str, dict[str, Any]] = {
    "lang equals (10%)": {"lang": "l3"},
    "year range (~4%)": {"year": {"gte": 2010, "lt": 2011}},
    "price range (~1%)": {"price": {"gte": 10.0, "lt": 11.0}},
    "seen date range (~1%)": {"seen": {"gte": "2024-03-01", "lt": "2024-03-05"}},
    "not lang (90%)": {"not": {"lang": "l3"}},
    "lang + year + date (~0.4%)": {"lang": "l1", "year": {"gte": 2005, "lt": 2015},
                                   "seen": {"gte": "2024-06-01", "lt": "2024-07-01"}},
}
ENCODING = CollectionEncoding(model="bench", dimension=DIMENSION, encoding="",
                              chunking=Chunking(True, 128, 16))


def vectors(rng: np.random.Generator, n: int, basis: np.ndarray) -> np.ndarray:
    x = rng.normal(size=(n, basis.shape[0])).astype(np.float32) @ basis
    x += 0.25 * rng.normal(size=x.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def points(rng: np.random.Generator, count: int, basis: np.ndarray) -> list[ChunkPoint]:
    made = vectors(rng, count, basis)
    seconds = rng.integers(0, 366 * 86400, size=count)
    out = []
    for i in range(count):
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1704067200 + int(seconds[i])))
        meta = {"lang": f"l{int(rng.integers(10))}", "year": 2000 + int(rng.integers(24)),
                "price": round(float(rng.uniform(0, 100)), 2), "seen": seen}
        out.append(ChunkPoint(f"d{i}", 0, made[i], {
            "doc_id": f"d{i}", "chunk": 0, "chunks": 1, "metadata": meta, "content_hash": "h",
            "title": None, "text": f"document {i}"}))
    return out


def build(folder: Path, declared: dict[str, Any], data: list[ChunkPoint]) -> EdgeVectorStore:
    store = EdgeVectorStore(folder, indexed_fields=declared)
    store.ensure_collection("c", ENCODING)
    for start in range(0, len(data), 1000):
        store.upsert("c", data[start:start + 1000])
    store.wait_indexed("c", timeout_s=3600)
    return store


def timed(call: Any, repeat: int) -> tuple[float, float, Any]:
    result = call()  # warm-up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99)), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50, help="query vectors per filter")
    parser.add_argument("--seed", type=int, default=29)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    basis = rng.normal(size=(32, DIMENSION)).astype(np.float32)
    data = points(rng, args.points, basis)
    queries = vectors(rng, args.queries, basis)
    work = Path(tempfile.mkdtemp(prefix="bienc-bench-filters-"))
    figures: dict[str, Any] = {"points": args.points, "queries": args.queries}
    try:
        started = time.perf_counter()
        indexed = build(work / "indexed", DECLARED, data)
        plain = build(work / "plain", {}, data)
        print(f"built two stores of {args.points} points in {time.perf_counter() - started:.0f} s; "
              f"parts indexed: {indexed.index_state('c')}", file=sys.stderr)
        plain._collection("c").fields.unindexed.update(DECLARED)  # no automatic index either
        print(f"{'filter':28} {'matches':>8}  {'search p50/p99 ms':>19} {'(no index)':>15}  "
              f"{'count p50/p99 ms':>17} {'(no index)':>15}  top-10 shared")
        for label, raw in FILTERS.items():
            query_filter: MetadataFilter | None = parse_filter(raw)
            row: dict[str, Any] = {}
            tops: dict[str, list[list[str]]] = {}
            for name, store in (("indexed", indexed), ("plain", plain)):
                store.dense_candidates("c", queries[0], 10, query_filter=query_filter)  # warm-up
                found, samples = [], []
                for query in queries:
                    began = time.perf_counter()
                    top = store.dense_candidates("c", query, 10, query_filter=query_filter)
                    samples.append((time.perf_counter() - began) * 1000)
                    found.append([c.doc_id for c in top])
                tops[name] = found
                row[f"{name}_search_p50_ms"] = round(float(np.percentile(samples, 50)), 3)
                row[f"{name}_search_p99_ms"] = round(float(np.percentile(samples, 99)), 3)
                c50, c99, matched = timed(lambda s=store, f=query_filter: s.count_documents("c", f), 20)
                row[f"{name}_count_p50_ms"], row[f"{name}_count_p99_ms"] = round(c50, 3), round(c99, 3)
                row["matches"] = matched
            shared = np.mean([len(set(a) & set(b)) / max(1, len(a))
                              for a, b in zip(tops["indexed"], tops["plain"], strict=True)])
            row["top10_shared"] = round(float(shared), 3)
            figures[label] = row
            print(f"{label:28} {row['matches']:>8}  "
                  f"{row['indexed_search_p50_ms']:>9.2f}/{row['indexed_search_p99_ms']:<9.2f} "
                  f"{row['plain_search_p50_ms']:>7.2f}/{row['plain_search_p99_ms']:<7.2f}  "
                  f"{row['indexed_count_p50_ms']:>8.2f}/{row['indexed_count_p99_ms']:<8.2f} "
                  f"{row['plain_count_p50_ms']:>7.2f}/{row['plain_count_p99_ms']:<7.2f}  "
                  f"{row['top10_shared']:.3f}")
        indexed.close()
        plain.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
