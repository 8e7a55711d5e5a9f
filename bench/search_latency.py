"""Search latency and ANN recall at 100,000 points (or --points), through bienc's own search
path, in each search mode.

    python bench/search_latency.py                      # SciFact chunks + filler to 100k points
    python bench/search_latency.py --points 1000000     # a million chunks
    python bench/search_latency.py --points 20000 --documents 1000 --quantization int8

The collection holds every SciFact document's chunks (bienc's default chunking and encoder)
and lexical vectors, plus filler documents of four chunks each: their vectors are drawn from a
Gaussian with the mean and covariance of the real chunk vectors (so they crowd the same region
of the space as real text does), their lexical vector is that of a SciFact document drawn at
random (so the words are of the same domain), to --points in all. The store is the one
bienc's settings choose (the embedded default: Qdrant Edge, HNSW), built through the Store
interface with the BIENC_HNSW_* / BIENC_QUANTIZATION settings.

Prints the build time and the process's peak memory, then for each mode and top-10, top-100
and top-1000 (a reranker's depth): p50/p99 ms of one query through
bienc.search.searcher.search (query encoding included, with document text, as the API
answers it, after the warm-up and heap settling `bienc serve` does at start; queries timed
back to back), the encode share, and recall@K of the document lists against the same search
with exact dense search (exact=True) on the same collection. Ends with one JSON line (dense
mode, and hybrid's top-10 p50).
Encoded SciFact chunks are cached in bench/out so a rerun skips the encoding.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bienc.config.settings import Settings
from bienc.encoding.encoder import Encoder, load_encoder
from bienc.encoding.lexical import LexicalParams, document_text, lexical_encoder, lexical_params
from bienc.ingest.documents import Document
from bienc.ingest.readers import read_path
from bienc.resources import settle_heap
from bienc.search.evaluation import load_queries
from bienc.search.fusion import DEPTH as FUSION_DEPTH
from bienc.search.fusion import fuse
from bienc.search.searcher import SearchRequest, search
from bienc.store.factory import open_store
from bienc.store.interface import ChunkPoint, Store
from bienc.store.record import Chunking
from bienc.workers.indexing import build_points, chunk_documents, encoding_of, index_hash

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "latency"
FILLER_CHUNKS = 4  # chunks per filler document (SciFact's documents have 4.0 on average)
KS = (10, 100, 1000)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of the largest child it waited for)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def encoded_chunks(encoder: Encoder, docs: list[Document], params: Chunking
                   ) -> tuple[list[Any], np.ndarray]:
    chunked = chunk_documents(docs, encoder, params)
    key = hashlib.sha256(f"{encoder.identity}|{encoder.encoding}|{params.fingerprint()}|"
                         f"{len(docs)}".encode()).hexdigest()[:16]
    cache = ROOT / "bench" / "out" / f"scifact-chunks-{key}.npy"
    if cache.exists():
        return chunked, np.load(cache)
    started = time.perf_counter()
    vectors = encoder.encode_documents([c.text for chunks in chunked for c in chunks])
    print(f"encoded {len(vectors)} chunks of {len(docs)} documents in "
          f"{time.perf_counter() - started:.0f} s ({encoder.encoding})", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return chunked, vectors


def build(store: Store, encoder: Encoder, settings: Settings, docs: list[Document],
          points_wanted: int) -> tuple[int, int]:
    """Write the collection; returns (real chunks, filler chunks)."""
    params = Chunking(settings.chunking, settings.chunk_tokens, settings.chunk_overlap)
    lexical = lexical_params(settings)
    chunked, vectors = encoded_chunks(encoder, docs, params)
    store.ensure_collection(COLLECTION, encoding_of(encoder, params, lexical))
    sparse = lexical_encoder(lexical).embed_documents(
        [document_text(d.title, d.text) for d in docs]) if lexical else [None] * len(docs)
    batch: list[ChunkPoint] = []
    offset = 0
    for doc, chunks, terms in zip(docs, chunked, sparse, strict=True):
        batch.extend(build_points(doc, chunks, vectors[offset:offset + len(chunks)],
                                  index_hash(doc, params, lexical), sparse=terms))
        offset += len(chunks)
        if len(batch) >= 512:
            store.upsert(COLLECTION, batch)
            batch = []
    store.upsert(COLLECTION, batch)
    filler = max(0, points_wanted - len(vectors))
    rng = np.random.default_rng(0)
    mean, cov = vectors.mean(axis=0), np.cov(vectors, rowvar=False)
    for start in range(0, filler, 5000):
        n = min(5000, filler - start)
        fake = rng.multivariate_normal(mean, cov, size=n).astype(np.float32)
        fake /= np.linalg.norm(fake, axis=1, keepdims=True)
        picks = rng.integers(0, len(docs), size=n)
        points = []
        for i, v in enumerate(fake):
            number, chunk = divmod(start + i, FILLER_CHUNKS)
            payload = {"doc_id": f"filler-{number}", "chunk": chunk, "chunks": FILLER_CHUNKS,
                       "title": "", "metadata": {}, "content_hash": "f",
                       "chunk_text": f"filler chunk {chunk}"}
            if chunk == 0:
                payload["text"] = "filler " * 100
            points.append(ChunkPoint(f"filler-{number}", chunk, v, payload,
                                     sparse[picks[i]] if chunk == 0 else None))
        store.upsert(COLLECTION, points)
    return len(vectors), filler


def exact_ranking(store: Store, encoder: Encoder, query: str, mode: str, k: int) -> set[str]:
    """The documents the same search finds with exact dense search."""
    if mode == "dense":
        return {c.doc_id for c in store.dense_candidates(
            COLLECTION, encoder.encode_queries([query])[0], k, exact=True)}
    recorded = store.describe(COLLECTION)
    assert recorded.lexical is not None
    terms = lexical_encoder(LexicalParams.from_record(recorded.lexical)).embed_query(query)
    depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
    lexical = sorted(store.lexical_candidates(COLLECTION, terms, depth + depth // 10 + 10),
                     key=lambda c: (-c.score, c.doc_id))[:depth]
    if mode == "lexical":
        return {c.doc_id for c in lexical}
    dense = store.dense_candidates(COLLECTION, encoder.encode_queries([query])[0], depth, exact=True)
    return {c.doc_id for c in fuse({"dense": dense, "lexical": lexical}, "dbsf")[:k]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--documents", type=int, default=0, help="SciFact documents; 0 = all")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--modes", default="dense,lexical,hybrid",
                        help="comma-separated search modes to time (hybrid fuses with dbsf)")
    parser.add_argument("--hnsw-ef", type=int, help="override BIENC_HNSW_EF")
    parser.add_argument("--quantization", choices=["none", "int8"], help="override BIENC_QUANTIZATION")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    overrides: dict[str, object] = {}
    if args.hnsw_ef:
        overrides["hnsw_ef"] = args.hnsw_ef
    if args.quantization:
        overrides["quantization"] = args.quantization
    folder = Path(tempfile.mkdtemp(prefix="bienc-latency-"))
    settings = Settings(data_dir=folder, **overrides)  # type: ignore[arg-type]
    encoder = load_encoder(settings)
    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.documents or None) if isinstance(d, Document)]
    summary: dict[str, Any] = {}

    store = open_store(settings)
    try:
        started = time.perf_counter()
        real, filler = build(store, encoder, settings, docs, args.points)
        written_s = time.perf_counter() - started
        if hasattr(store, "wait_indexed"):  # Edge: index builds run in builder processes
            store.wait_indexed(COLLECTION, timeout_s=7200)
            print(f"index: {store.index_state(COLLECTION)}", flush=True)
        build_s = time.perf_counter() - started
        info = store.info(COLLECTION)
        print(f"store {store.location} ({type(store).__name__}, hnsw m={settings.hnsw_m} "
              f"ef_construct={settings.hnsw_ef_construct} ef={settings.hnsw_ef}, quantization "
              f"{settings.quantization}): {info.points} points ({real} SciFact chunks of "
              f"{len(docs)} documents + {filler} filler chunks), {info.documents} documents, "
              f"written in {written_s:.0f} s, indexed {build_s:.0f} s from the start; peak RSS "
              f"{peak_rss_mb():.0f} MB (builder processes: {peak_rss_mb(children=True):.0f} MB); "
              f"encoder {encoder.encoding}", flush=True)
        summary.update(points=info.points, build_s=round(build_s, 1))

        queries = list(load_queries(DATA / "queries_test.jsonl").values())[:args.queries]
        encoder.warm_up()  # as `bienc serve` does at start
        settle_heap()
        search(store, encoder, COLLECTION, SearchRequest(queries[:5], top_k=10))
        print("| mode | top-K | p50 ms | p99 ms | of which encode p50 ms "
              "| recall@K vs exact dense (mean / min) |")
        print("|---|---|---|---|---|---|")
        for mode in modes:
            for k in KS:
                latencies, encodes, results = [], [], []
                for query in queries:  # timed back to back, as a server answers them
                    timings: dict[str, float] = {}
                    started = time.perf_counter()
                    results.append(search(store, encoder, COLLECTION, SearchRequest(
                        [query], top_k=k, mode=mode), timings=timings).hits[0])  # type: ignore[arg-type]
                    latencies.append((time.perf_counter() - started) * 1e3)
                    encodes.append(timings["encode"] * 1e3)
                recalls = []
                for query, hits in zip(queries, results, strict=True):  # then exact, untimed
                    want = exact_ranking(store, encoder, query, mode, k)
                    recalls.append(len(want & {h.doc_id for h in hits}) / max(1, len(want)))
                p50, p99 = (float(x) for x in np.percentile(latencies, [50, 99]))
                print(f"| {mode} | {k} | {p50:.1f} | {p99:.1f} | {np.percentile(encodes, 50):.1f} | "
                      f"{np.mean(recalls):.4f} / {min(recalls):.2f} |", flush=True)
                prefix = "" if mode == "dense" else f"{mode}_"
                if k in (10, 1000):
                    summary[f"{prefix}top{k}_p50_ms"] = round(p50, 2)
                if k == 10:
                    summary[f"{prefix}top10_p99_ms"] = round(p99, 2)
                    summary[f"{prefix}recall10"] = round(float(np.mean(recalls)), 4)
        summary["peak_rss_mb"] = round(peak_rss_mb())
        summary["builder_peak_rss_mb"] = round(peak_rss_mb(children=True))
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
