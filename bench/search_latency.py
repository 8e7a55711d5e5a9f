"""Search latency and ANN recall at 100,000 points (or --points), through bienc's own search
path, in each search mode.

    python bench/search_latency.py                      # SciFact chunks + filler to 100k points
    python bench/search_latency.py --points 1000000     # a million chunks
    python bench/search_latency.py --points 100000,1000000 --modes dense,hybrid --queries 100
                                                        # both, the second a ratio of the first
    python bench/search_latency.py --points 20000 --documents 1000 --quantization int8
    python bench/search_latency.py --points 100000,1000000 --memory-limit 8G
                                                        # inside 8 GB, page cache included
    python bench/search_latency.py --during-ingest      # and search beside an ingest
    python bench/search_latency.py --ef-sweep 128,256,512,1024,2048

The collection holds every SciFact document's chunks (bienc's default chunking and encoder)
and lexical vectors, plus filler documents of four chunks each: their vectors are drawn from a
Gaussian with the mean and covariance of the real chunk vectors (so they crowd the same region
of the space as real text does), their lexical vector is that of a SciFact document drawn at
random (so the words are of the same domain), to --points in all. The store is the one
bienc's settings choose (the embedded default: Qdrant Edge, HNSW), built through the Store
interface with the BIENC_HNSW_* / BIENC_QUANTIZATION settings.

Prints the build time, the peak memory (bench/memory.py: resident, and anonymous: the part
the kernel cannot drop; with --memory-limit, the cgroup's) and the store's size on disk, then for each
mode and top-10, top-100 and top-1000 (a reranker's depth): p50/p99 ms of one query through
bienc.search.searcher.search (query encoding included, with document text, as the API
answers it, after the warm-up and heap settling `bienc serve` does at start and one untimed
top-10 pass over the queries, as a server that has answered for a while; queries timed
back to back, the modes taking turns query by query so that they are measured side by
side), the p50 of each stage (encoding the query; ranking: the store's candidates,
fused; fetching the hits' payloads) and recall@K of the document lists against the same
search with exact dense search (exact=True) on the same collection. Beside them, each
query's floor, the work no search in that mode can avoid: dense, encoding the query and the
engine's own top-10 query at the `ef` a top-10 search uses (no grouping into documents, no
payloads); lexical, the query's terms and the engine's own BM25 top-10; hybrid, both. Each
mode's top-10 p50 is given as a ratio of its floor's.

--ef-sweep first times the store's ranking alone (no encoding, no payloads) with each HNSW
candidate list (`ef`) given at every depth, top-10, top-30 and top-100, with recall against
exact search (on SciFact's chunks and on the filler apart).

--during-ingest then starts `bienc serve` on the same folder (the embedded default: the worker
in the same process) and times dense top-10 searches over HTTP on loopback, back to back: first
with nothing else running, then while that process ingests --ingest-documents SciFact documents
again under new ids (re-encoded: about three sealed parts' worth at the default chunking), to
the ingest's last batch.

With several --points, the collection grows to each size in turn (the same SciFact chunks,
more filler) and is measured at each, in one run: the ratios between the largest and the
smallest are measured side by side. --keep leaves the store's folder behind; --open measures
such a folder after the sizes built, so that a change to the search path is measured at a
million points, against a fresh 100,000 in the same run, without building the million again:

    python bench/search_latency.py --points 1000000 --keep       # prints its folder
    python bench/search_latency.py --points 100000 --open FOLDER --modes dense,hybrid

Each size ends with one JSON line (dense mode; hybrid_* for hybrid); --during-ingest adds one
(during_ingest_*), several --points one of the ratios, largest against smallest (*_p50_ms_ratio).
Encoded SciFact chunks are cached in bench/out so a rerun skips the encoding.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bienc.config.settings import LARGE_PART_POINTS, Settings
from bienc.encoding.encoder import Encoder, load_encoder
from bienc.encoding.lexical import LexicalParams, document_text, lexical_encoder, lexical_params
from bienc.ingest.documents import Document
from bienc.ingest.readers import read_path
from bienc.resources import settle_heap
from bienc.search.fusion import fuse, leg_depth
from bienc.search.measures import load_queries
from bienc.search.searcher import SearchRequest, search
from bienc.store.edge import EdgeVectorStore
from bienc.store.edge_search import IDF_OVER_DOCUMENTS, edge_sparse
from bienc.store.factory import open_store
from bienc.store.interface import LEXICAL_VECTOR, ChunkPoint, Store, hnsw_ef
from bienc.store.record import Chunking
from bienc.workers.indexing import build_points, encoding_of, index_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoded import encoded_chunks
from memory import AnonSampler, cap_memory, cap_report, parse_size, peak_rss_mb
from serving import pct, search_loop, searching, serving, wait_job

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "latency"
FILLER_CHUNKS = 4  # chunks per filler document (SciFact's documents have 4.0 on average)
KS = (10, 100, 1000)


def write_scifact(store: Store, encoder: Encoder, settings: Settings, docs: list[Document]
                  ) -> tuple[np.ndarray, list[Any]]:
    """Write every SciFact chunk; returns their vectors and the documents' lexical vectors."""
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
    return vectors, list(sparse)


class Filler:
    """Filler documents of FILLER_CHUNKS chunks, their vectors drawn from a Gaussian with the
    real chunks' mean and covariance, their lexical vectors those of random SciFact documents;
    written `add` at a time, numbered on from the last (the same chunks for the same seed)."""

    def __init__(self, vectors: np.ndarray, sparse: list[Any]) -> None:
        self.mean, self.cov = vectors.mean(axis=0), np.cov(vectors, rowvar=False)
        self.sparse = sparse
        self.rng = np.random.default_rng(0)
        self.written = 0

    def add(self, store: Store, count: int) -> None:
        for start in range(self.written, self.written + count, 5000):
            n = min(5000, self.written + count - start)
            fake = self.rng.multivariate_normal(self.mean, self.cov, size=n).astype(np.float32)
            fake /= np.linalg.norm(fake, axis=1, keepdims=True)
            picks = self.rng.integers(0, len(self.sparse), size=n)
            points = []
            for i, v in enumerate(fake):
                number, chunk = divmod(start + i, FILLER_CHUNKS)
                payload = {"doc_id": f"filler-{number}", "chunk": chunk, "chunks": FILLER_CHUNKS,
                           "title": "", "metadata": {}, "content_hash": "f",
                           "chunk_text": f"filler chunk {chunk}"}
                if chunk == 0:
                    payload["text"] = "filler " * 100
                points.append(ChunkPoint(f"filler-{number}", chunk, v, payload,
                                         self.sparse[picks[i]] if chunk == 0 else None))
            store.upsert(COLLECTION, points)
        self.written += max(0, count)


def exact_ranking(store: Store, encoder: Encoder, query: str, mode: str, k: int) -> set[str]:
    """The documents the same search finds with exact dense search."""
    if mode == "dense":
        return {c.doc_id for c in store.dense_candidates(
            COLLECTION, encoder.encode_queries([query])[0], k, exact=True)}
    recorded = store.describe(COLLECTION)
    assert recorded.lexical is not None
    terms = lexical_encoder(LexicalParams.from_record(recorded.lexical)).embed_query(query)
    depth = leg_depth(k) if mode == "hybrid" else k
    lexical = sorted(store.lexical_candidates(COLLECTION, terms, depth + depth // 10 + 10),
                     key=lambda c: (-c.score, c.doc_id))[:depth]
    if mode == "lexical":
        return {c.doc_id for c in lexical}
    dense = store.dense_candidates(COLLECTION, encoder.encode_queries([query])[0], depth, exact=True)
    return {c.doc_id for c in fuse({"dense": dense, "lexical": lexical}, "dbsf")[:k]}


def floor(store: Store, encoder: Encoder, query: str) -> tuple[float, float, float]:
    """ms of the costs no search can avoid, for one query: encoding it; the engine's own
    top-10 query at the `ef` a top-10 search uses (one HNSW query per part, no grouping of
    chunks into documents, no payloads); and, for a lexical or hybrid search, its terms and
    the engine's own top-10 BM25 query of the lexical part (no payloads; 0 without one)."""
    import qdrant_edge as qe

    assert isinstance(store, EdgeVectorStore)
    collection = store._collection(COLLECTION)
    started = time.perf_counter()
    vector = encoder.encode_queries([query])[0]
    encoded = time.perf_counter()
    nearest = qe.Query.Nearest(vector.tolist())

    def top10(params: qe.SearchParams) -> qe.QueryRequest:
        return qe.QueryRequest(limit=10, query=nearest, params=params, with_payload=False,
                               with_vector=False)

    collection.parts.query(lambda points: top10(store.search_params(leg_depth(10), points=points)),
                           top10(store.search_params(leg_depth(10), exact=True)))
    ranked = time.perf_counter()
    recorded = collection.encoding.lexical
    if recorded is not None:
        terms = lexical_encoder(LexicalParams.from_record(recorded)).embed_query(query)
        collection.parts.query_lexical(qe.QueryRequest(
            limit=10, query=qe.Query.Nearest(edge_sparse(terms), using=LEXICAL_VECTOR),
            params=qe.SearchParams(idf=IDF_OVER_DOCUMENTS),  # as the lexical leg asks
            with_payload=False, with_vector=False))
    lexical_ms = (time.perf_counter() - ranked) * 1e3 if recorded is not None else 0.0
    return (encoded - started) * 1e3, (ranked - encoded) * 1e3, lexical_ms


Timed = tuple[list[float], list[list[float]], list[tuple[str, ...]]]  # ms, stage ms, documents found


def timed_searches(store: Store, encoder: Encoder, queries: list[str], modes: list[str]
                   ) -> tuple[dict[tuple[str, int], Timed], list[tuple[float, float, float]]]:
    """Every query searched in each mode at each depth (and, at top-10, its floor), timed
    back to back as a server answers them. The modes take turns query by query, in an order
    that rotates, so that each meets the same state of the machine and of the caches: the
    ratios between them are measured side by side."""
    timed: dict[tuple[str, int], Timed] = {(m, k): ([], [], []) for m in modes for k in KS}
    floors: list[tuple[float, float, float]] = []
    with_floor = isinstance(store, EdgeVectorStore)
    for k in KS:
        turns = [*modes, *(["floor"] if k == 10 and with_floor else [])]
        for i, query in enumerate(queries):
            for mode in turns[i % len(turns):] + turns[:i % len(turns)]:
                if mode == "floor":
                    floors.append(floor(store, encoder, query))
                    continue
                latencies, stages, results = timed[(mode, k)]
                timings: dict[str, float] = {}
                started = time.perf_counter()
                hits = search(store, encoder, COLLECTION, SearchRequest(
                    [query], top_k=k, mode=mode), timings=timings).hits[0]  # type: ignore[arg-type]
                latencies.append((time.perf_counter() - started) * 1e3)
                # the ids alone kept (strings, untracked by the garbage collector): a server
                # keeps no hits, and 600,000 of them would make each full collection slower
                results.append(tuple(h.doc_id for h in hits))
                stages.append([timings[stage] * 1e3 for stage in ("encode", "rank", "fetch")])
    return timed, floors


def ef_sweep(settings: Settings, encoder: Encoder, queries: list[str], efs: list[int]) -> None:
    """Dense candidates (the store's ranking alone: no encoding, no payloads) and their
    recall against exact search with each `ef` in `efs`, top-10, top-30 and top-100
    documents (also apart on SciFact's chunks and on the filler)."""
    vectors = encoder.encode_queries(queries)
    print("| ef | top-K | rank p50 ms | rank p99 ms | recall@K (mean / min) "
          "| on SciFact chunks | on filler |")
    print("|---|---|---|---|---|---|---|")
    exact: dict[int, list[set[str]]] = {}
    for ef in efs:
        # every depth walks the graph with `ef` candidates (hnsw_ef: `ef` at most, and as
        # many per document)
        store = open_store(settings.model_copy(update={"hnsw_ef": ef, "hnsw_ef_per_document": ef}))
        try:
            for k in (10, 30, 100):
                if k not in exact:
                    exact[k] = [{c.doc_id for c in store.dense_candidates(COLLECTION, v, k, exact=True)}
                                for v in vectors]
                times, recalls = [], []
                found = {"real": [0, 0], "filler": [0, 0]}
                for vector, want in zip(vectors, exact[k], strict=True):
                    started = time.perf_counter()
                    got = {c.doc_id for c in store.dense_candidates(COLLECTION, vector, k)}
                    times.append((time.perf_counter() - started) * 1e3)
                    recalls.append(len(got & want) / max(1, len(want)))
                    for doc_id in want:
                        tally = found["filler" if doc_id.startswith("filler-") else "real"]
                        tally[0] += doc_id in got
                        tally[1] += 1
                p50, p99 = np.percentile(times, [50, 99])
                real, filler = (f"{hit / of:.4f}" if of else "-" for hit, of in found.values())
                print(f"| {ef} | {k} | {p50:.1f} | {p99:.1f} | {np.mean(recalls):.4f} / "
                      f"{min(recalls):.2f} | {real} | {filler} |", flush=True)
        finally:
            store.close()


def during_ingest(folder: Path, overrides: dict[str, object], queries: list[str],
                  docs: list[Document]) -> dict[str, Any]:
    """Search latency over HTTP through `bienc serve` on `folder`, idle and while the same
    process ingests `docs` (under new ids)."""
    env = {f"BIENC_{key.upper()}": str(value) for key, value in overrides.items()}
    with serving(folder, folder.parent / f"{folder.name}-serve.log", **env) as api:
        search_loop(api, COLLECTION, queries[:20], None, mode="dense")  # warm
        idle, _ = search_loop(api, COLLECTION, queries, None, mode="dense")
        started = time.perf_counter()
        with searching(api, COLLECTION, queries, mode="dense") as during:
            jobs = [api.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": [
                {"id": f"again-{d.id}", "title": d.title, "text": d.text} for d in docs[i:i + 1000]
            ]}).json()["job_id"] for i in range(0, len(docs), 1000)]
            statuses = [wait_job(api, job) for job in jobs]
        ingest_s = time.perf_counter() - started
        info = api.get(f"/v1/collections/{COLLECTION}").json()
    latencies = during["latencies"]
    print(f"during ingest (bienc serve, HTTP, dense top-10): idle p50/p99 {pct(idle)} ms; "
          f"ingesting {len(docs)} documents ({sum(s['indexed'] for s in statuses)} indexed, "
          f"{sum(s['failed'] for s in statuses)} failed) in {ingest_s:.0f} s, to {info['points']} "
          f"points: {len(latencies)} searches, p50/p99 {pct(latencies)} ms, max "
          f"{max(latencies):.0f} ms, {during['failed']} not 200", flush=True)
    p50, p99 = (float(x) for x in np.percentile(latencies, [50, 99]))
    return {"idle_http_p99_ms": round(float(np.percentile(idle, 99)), 2),
            "during_ingest_p50_ms": round(p50, 2), "during_ingest_p99_ms": round(p99, 2),
            "during_ingest_max_ms": round(max(latencies), 1),
            "during_ingest_docs_per_s": round(len(docs) / ingest_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="100000",
                        help="points in the collection; several, comma-separated: the collection "
                             "grows to each in turn and is measured at each")
    parser.add_argument("--documents", type=int, default=0, help="SciFact documents; 0 = all")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--modes", default="dense,lexical,hybrid",
                        help="comma-separated search modes to time (hybrid fuses with dbsf)")
    parser.add_argument("--hnsw-ef", type=int, help="override BIENC_HNSW_EF")
    parser.add_argument("--quantization", choices=["none", "int8"], help="override BIENC_QUANTIZATION")
    parser.add_argument("--ef-sweep", default="",
                        help="comma-separated BIENC_HNSW_EF values to time the ranking at, first")
    parser.add_argument("--during-ingest", action="store_true",
                        help="also time searches through bienc serve while it ingests")
    parser.add_argument("--ingest-documents", type=int, default=3000,
                        help="SciFact documents the --during-ingest ingest sends")
    parser.add_argument("--keep", action="store_true",
                        help="keep the store's folder (its path is printed) for a later --open")
    parser.add_argument("--open", metavar="DIR", type=Path,
                        help="after the sizes built, measure the store a --keep run left in DIR "
                             "too (a million points without building them again)")
    parser.add_argument("--memory-limit", metavar="SIZE",
                        help="run in a memory cgroup of SIZE (e.g. 8G), the builder processes "
                             "too (Linux, as root): the run ends inside it or is killed")
    args = parser.parse_args()
    capped = cap_memory(parse_size(args.memory_limit)) if args.memory_limit else None
    anon = AnonSampler()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    overrides: dict[str, object] = {}
    if args.hnsw_ef:
        overrides["hnsw_ef"] = args.hnsw_ef
    if args.quantization:
        overrides["quantization"] = args.quantization
    folder = Path(tempfile.mkdtemp(prefix="bienc-latency-"))
    # every query encoded: the cache of recent queries would answer the repeated ones
    settings = Settings(data_dir=folder, query_cache=0, **overrides)  # type: ignore[arg-type]
    encoder = load_encoder(settings)
    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.documents or None) if isinstance(d, Document)]
    sizes = sorted(int(x) for x in args.points.split(",") if x.strip())

    queries = list(load_queries(DATA / "queries_test.jsonl").values())[:args.queries]
    store = open_store(settings)
    summaries: list[dict[str, Any]] = []
    try:
        started = time.perf_counter()
        vectors, sparse = write_scifact(store, encoder, settings, docs)
        filler = Filler(vectors, sparse)
        for points in sizes:
            filler.add(store, points - len(vectors) - filler.written)
            written_s = time.perf_counter() - started
            if isinstance(store, EdgeVectorStore):  # index builds run in builder processes
                store.wait_indexed(COLLECTION, timeout_s=7200)
                print(f"index: {store.index_state(COLLECTION)}", flush=True)
            build_s = time.perf_counter() - started
            info = store.info(COLLECTION)
            print(f"store {store.location} ({type(store).__name__}, hnsw m={settings.hnsw_m} "
                  f"(parts of {LARGE_PART_POINTS} points or more: {settings.hnsw_m_large}) "
                  f"ef_construct={settings.hnsw_ef_construct} ef={settings.hnsw_ef}, quantization "
                  f"{settings.quantization}): {info.points} points ({len(vectors)} SciFact chunks "
                  f"of {len(docs)} documents + {filler.written} filler chunks), {info.documents} "
                  f"documents, written {written_s:.0f} s and indexed {build_s:.0f} s from the "
                  f"start; peak RSS {peak_rss_mb():.0f} MB (builder processes: "
                  f"{peak_rss_mb(children=True):.0f} MB; RSS counts the store's mapped files, "
                  f"which the kernel can drop); peak anonymous memory, this process and its "
                  f"builders together, {anon.peak_mb:.0f} MB; encoder {encoder.encoding}", flush=True)
            if capped is not None:
                report = cap_report(capped)
                print(f"memory cgroup of {args.memory_limit}: peak {report['peak_bytes'] / 2**20:.0f} "
                      f"MB (page cache included), OOM kills {report['oom_kills']}", flush=True)
            disk_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
            print(f"store folder: {disk_mb:.0f} MB on disk", flush=True)
            summary: dict[str, Any] = {"points": info.points, "build_s": round(build_s, 1),
                                       "disk_mb": round(disk_mb)}
            if args.ef_sweep:
                store.close()  # one store open at a time on the folder
                ef_sweep(settings, encoder, queries, [int(x) for x in args.ef_sweep.split(",")])
                store = open_store(settings)
            measure(store, encoder, settings, queries, modes, summary)
            summary["peak_anon_mb"] = round(anon.peak_mb)
            if capped is not None:
                summary["cgroup_peak_mb"] = round(cap_report(capped)["peak_bytes"] / 2**20)
            print(json.dumps(summary), flush=True)
            summaries.append(summary)
        store.close()
        if args.open:
            store = open_store(settings.model_copy(update={"data_dir": args.open}))
            kept = store.info(COLLECTION)
            print(f"kept store {store.location}: {kept.points} points, index {kept.index}",
                  flush=True)
            summary = {"points": kept.points, "kept": str(args.open)}
            measure(store, encoder, settings, queries, modes, summary)
            print(json.dumps(summary), flush=True)
            summaries.append(summary)
            store.close()
        if args.during_ingest:
            summary = {"points": sizes[-1], **during_ingest(
                folder, overrides, queries, docs[:args.ingest_documents])}
            print(json.dumps(summary), flush=True)
    finally:
        store.close()
        if args.keep:
            print(f"kept: --open {folder}", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if len(summaries) > 1:  # the largest size against the smallest, measured in this run
        first, last = summaries[0], summaries[-1]
        print(json.dumps({"points": [first["points"], last["points"]], **{
            f"{key}_ratio": round(last[key] / first[key], 2)
            for key in first if key.endswith("_p50_ms") and first[key] and key in last}}))


def measure(store: Store, encoder: Encoder, settings: Settings, queries: list[str],
            modes: list[str], summary: dict[str, Any]) -> None:
    """Time the searches (timed_searches), score their recall against exact search, print
    the table and add the figures to `summary`."""
    encoder.warm_up()  # as `bienc serve` does at start
    settle_heap()
    for mode in modes:  # untimed: the store's pages that these searches read are mapped, as
        for query in queries:  # in a server that has answered for a while
            search(store, encoder, COLLECTION, SearchRequest([query], top_k=10, mode=mode))  # type: ignore[arg-type]
    timed, floors = timed_searches(store, encoder, queries, modes)
    encode, engine, lexical = (float(x) for x in np.percentile(floors, 50, axis=0)) \
        if floors else (0.0, 0.0, 0.0)
    floors_ms = {"dense": encode + engine, "lexical": lexical, "hybrid": encode + engine + lexical}
    # the list each graph walks (a part's own size sets it: hnsw_ef)
    graphs = sorted((p.points for p in store._collection(COLLECTION).parts.parts.values()
                     if p.state == "indexed"), reverse=True) \
        if isinstance(store, EdgeVectorStore) else [0]
    efs = ", ".join(f"{hnsw_ef(leg_depth(10), settings.hnsw_ef, settings.hnsw_ef_per_document, n)}"
                    + (f" in a graph of {n} points" if n else "") for n in graphs)
    print(f"floor: encode {encode:.1f} ms + the engine's own top-10 at ef {efs} "
          f"{engine:.1f} ms = {encode + engine:.1f} "
          f"ms (p50s); lexical: the query's terms and the engine's own BM25 top-10 {lexical:.1f} "
          f"ms; hybrid: all three, {encode + engine + lexical:.1f} ms", flush=True)
    summary["floor_ms"] = round(floors_ms["dense"], 2)
    summary["hybrid_floor_ms"] = round(floors_ms["hybrid"], 2)
    print("| mode | top-K | p50 ms | p99 ms | of which p50 ms: encode / rank / fetch "
          "| recall@K vs exact dense (mean / min) |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        for k in KS:
            latencies, stages, results = timed[(mode, k)]
            recalls, found = [], {"real": [0, 0], "filler": [0, 0]}
            for query, found_ids in zip(queries, results, strict=True):  # then exact, untimed
                want = exact_ranking(store, encoder, query, mode, k)
                got = set(found_ids)
                recalls.append(len(want & got) / max(1, len(want)))
                for doc_id in want:  # recall on SciFact's chunks and on the filler apart
                    tally = found["filler" if doc_id.startswith("filler-") else "real"]
                    tally[0] += doc_id in got
                    tally[1] += 1
            p50, p99 = (float(x) for x in np.percentile(latencies, [50, 99]))
            split = " / ".join(f"{x:.1f}" for x in np.percentile(stages, 50, axis=0))
            print(f"| {mode} | {k} | {p50:.1f} | {p99:.1f} | {split} | "
                  f"{np.mean(recalls):.4f} / {min(recalls):.2f} |", flush=True)
            prefix = "" if mode == "dense" else f"{mode}_"
            if k in (10, 1000):
                summary[f"{prefix}top{k}_p50_ms"] = round(p50, 2)
            if k == 10:
                summary[f"{prefix}top10_p99_ms"] = round(p99, 2)
                summary[f"{prefix}recall10"] = round(float(np.mean(recalls)), 4)
                for kind, (hit, of) in found.items():
                    summary[f"{prefix}recall10_{kind}"] = round(hit / of, 4) if of else None
                if floor_ms := floors_ms.get(mode, 0.0):
                    summary[f"{prefix}floor_ratio"] = round(p50 / floor_ms, 2)
                    print(f"  top-10 p50 / floor: x{p50 / floor_ms:.2f}; recall@10 on SciFact "
                          f"chunks {summary[f'{prefix}recall10_real']}, on filler "
                          f"{summary[f'{prefix}recall10_filler']}", flush=True)
    summary["peak_rss_mb"] = round(peak_rss_mb())
    summary["builder_peak_rss_mb"] = round(peak_rss_mb(children=True))

if __name__ == "__main__":
    main()
