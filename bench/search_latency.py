"""Search latency and ANN recall at 100,000 points, through bienc's own search path.

    python bench/search_latency.py                      # SciFact chunks + filler to 100k points
    python bench/search_latency.py --points 20000 --documents 1000 --quantization int8

The collection holds every SciFact document's chunks (bienc's default chunking and encoder),
plus filler points drawn from a Gaussian with the mean and covariance of those real chunk
vectors (so they crowd the same region of the space as real text does), to --points in all.
The store is the one bienc's settings choose (the embedded default: Qdrant Edge, HNSW), built
through the Store interface with the BIENC_HNSW_* / BIENC_QUANTIZATION settings.

Prints, for top-10, top-100 and top-1000 (a reranker's depth): p50/p99 ms of one query through
bienc.search.searcher.search (query encoding included, with document text, as the API answers it,
after the warm-up and heap settling `bienc serve` does at start; queries timed back to back),
the encode share, and recall@K of the document lists against exact search on the same
collection (exact=True).
Encoded SciFact chunks are cached in bench/out so a rerun skips the encoding.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bienc.config.settings import Settings
from bienc.encoding.encoder import load_encoder
from bienc.ingest.documents import Document
from bienc.ingest.readers import read_path
from bienc.resources import settle_heap
from bienc.search.evaluation import load_queries
from bienc.search.searcher import SearchRequest, search
from bienc.store.factory import open_store
from bienc.store.interface import ChunkPoint
from bienc.workers.indexing import ChunkingParams, build_points, chunk_documents, index_hash

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "latency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--documents", type=int, default=0, help="SciFact documents; 0 = all")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--hnsw-ef", type=int, help="override BIENC_HNSW_EF")
    parser.add_argument("--quantization", choices=["none", "int8"], help="override BIENC_QUANTIZATION")
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    if args.hnsw_ef:
        overrides["hnsw_ef"] = args.hnsw_ef
    if args.quantization:
        overrides["quantization"] = args.quantization
    folder = Path(tempfile.mkdtemp(prefix="bienc-latency-"))
    settings = Settings(data_dir=folder, **overrides)  # type: ignore[arg-type]
    encoder = load_encoder(settings)
    params = ChunkingParams(settings.chunk_tokens, settings.chunk_overlap, settings.chunking)

    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.documents or None) if isinstance(d, Document)]
    chunked = chunk_documents(docs, encoder, params)
    texts = [c.text for chunks in chunked for c in chunks]
    key = hashlib.sha256(f"{encoder.identity}|{encoder.encoding}|{params.fingerprint()}|"
                         f"{len(docs)}".encode()).hexdigest()[:16]
    cache = ROOT / "bench" / "out" / f"scifact-chunks-{key}.npy"
    if cache.exists():
        vectors = np.load(cache)
    else:
        started = time.perf_counter()
        vectors = encoder.encode_documents(texts)
        print(f"encoded {len(texts)} chunks of {len(docs)} documents in "
              f"{time.perf_counter() - started:.0f} s ({encoder.encoding})", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)

    store = open_store(settings)
    try:
        store.ensure_collection(COLLECTION, encoder.dimension, encoder.identity, encoder.encoding)
        started = time.perf_counter()
        points: list[ChunkPoint] = []
        offset = 0
        for doc, chunks in zip(docs, chunked, strict=True):
            doc_vectors = vectors[offset:offset + len(chunks)]
            offset += len(chunks)
            points.extend(build_points(doc, chunks, doc_vectors, index_hash(doc, params)))
        for start in range(0, len(points), 512):
            store.upsert(COLLECTION, points[start:start + 512])
        filler = max(0, args.points - len(points))
        rng = np.random.default_rng(0)
        mean, cov = vectors.mean(axis=0), np.cov(vectors, rowvar=False)
        for start in range(0, filler, 5000):
            n = min(5000, filler - start)
            fake = rng.multivariate_normal(mean, cov, size=n).astype(np.float32)
            fake /= np.linalg.norm(fake, axis=1, keepdims=True)
            store.upsert(COLLECTION, [
                ChunkPoint(f"filler-{start + i}", 0, v, {
                    "doc_id": f"filler-{start + i}", "chunk": 0, "chunks": 1, "title": "",
                    "metadata": {}, "content_hash": "f", "text": "filler " * 100})
                for i, v in enumerate(fake)])
        load_s = time.perf_counter() - started
        info = store.info(COLLECTION)
        print(f"store {store.location} ({type(store).__name__}, hnsw m={settings.hnsw_m} "
              f"ef_construct={settings.hnsw_ef_construct} ef={settings.hnsw_ef}, quantization "
              f"{settings.quantization}): {info.points} points ({len(points)} SciFact chunks of "
              f"{info.documents - filler} documents + {filler} filler), written and indexed in "
              f"{load_s:.0f} s; encoder {encoder.encoding}", flush=True)

        queries = list(load_queries(DATA / "queries_test.jsonl").values())[:args.queries]
        encoder.warm_up()  # as `bienc serve` does at start
        del points
        settle_heap()
        search(store, encoder, COLLECTION, SearchRequest(queries[:5], top_k=10))
        print("| top-K | p50 ms | p99 ms | of which encode p50 ms | recall@K vs exact (mean / min) |")
        print("|---|---|---|---|---|")
        for k in (10, 100, 1000):
            latencies, encodes, recalls, results = [], [], [], []
            for query in queries:  # timed back to back, as a server answers them
                timings: dict[str, float] = {}
                started = time.perf_counter()
                results.append(search(store, encoder, COLLECTION, SearchRequest([query], top_k=k),
                                      timings=timings)[0])
                latencies.append((time.perf_counter() - started) * 1e3)
                encodes.append(timings["encode"] * 1e3)
            for query, hits in zip(queries, results, strict=True):  # then exact search, untimed
                vector = encoder.encode_queries([query])[0]
                exact = store.search(COLLECTION, vector, k, with_text=False, exact=True)
                want = {h.doc_id for h in exact}
                recalls.append(len(want & {h.doc_id for h in hits}) / max(1, len(want)))
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"| {k} | {p50:.1f} | {p99:.1f} | {np.percentile(encodes, 50):.1f} | "
                  f"{np.mean(recalls):.4f} / {min(recalls):.2f} |", flush=True)
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
