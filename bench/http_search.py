"""Search capacity over HTTP: `bienc serve` (embedded) on full SciFact, each search
configuration timed with 1 client and with 4, side by side in one run.

    python bench/http_search.py                       # ingests SciFact once into bench/out
    python bench/http_search.py --rounds 3 --top-k 10

The corpus is ingested once into --data-dir (kept: a rerun skips it). Each configuration
then gets its own `bienc serve` on that folder, with its BIENC_* settings; configurations
are visited in turn, --rounds times, so that a neighbour's load falls on all of them alike.
In each visit: the 300 test queries once with one client, back to back (p50 / p99 ms,
requests/s), then with 4 clients at once, each with its own connection, each through the
queries in its own order (requests/s). The cache of recent queries is off
(BIENC_QUERY_CACHE=0): every search encodes its query.

The configurations:
  - `old dense (ef 128)`: dense search as the default was before hybrid, HNSW `ef`
    128 (BIENC_HNSW_EF=128), the reference that hybrid's capacity is measured against.
    Its depth differs a little: a dense top-10 now asks the store for its tier's 30
    documents where that default asked for 10 (measured on full SciFact, `ef` 128: 0.76
    against 0.56 ms p50 for the store's ranking), which this reference pays too;
  - `dense`, `lexical`, `hybrid`: each mode with the default settings.

--beside-ingest N then times searches beside an ingest in the same process, on a copy of the
folder: N SciFact documents ingested under new ids alone (documents/s), searches alone, then
N more documents under other new ids while the searches go on. The searches come at a steady
--search-rate per second from one client (hybrid top-10), as users' searches do, rather than
back to back (which would take a core from the ingest by itself); p50 / p99 are compared with
the same searches alone, and the ingest's documents/s with the ingest alone.

Prints a table of the medians over rounds and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import serving, wait_job

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "scifact"
CONFIGS: dict[str, tuple[dict[str, str], str]] = {
    "old dense (ef 128)": ({"BIENC_HNSW_EF": "128"}, "dense"),
    "dense": ({}, "dense"),
    "lexical": ({}, "lexical"),
    "hybrid": ({}, "hybrid"),
}


def ingest(data_dir: Path) -> None:
    with serving(data_dir, data_dir.parent / "ingest.log") as api:
        if api.get(f"/v1/collections/{COLLECTION}").status_code == 200:
            return
        with (DATA / "corpus.jsonl").open() as lines:
            docs = [{"id": r["_id"], "title": r.get("title") or None, "text": r["text"]}
                    for r in map(json.loads, lines)]
        started = time.perf_counter()
        jobs = [api.post(f"/v1/collections/{COLLECTION}/documents",
                         json={"documents": docs[i:i + 1000]}).json()["job_id"]
                for i in range(0, len(docs), 1000)]
        for job in jobs:
            wait_job(api, job)
        print(f"ingested {len(docs)} documents in {time.perf_counter() - started:.0f} s", flush=True)


def one_client(api: httpx.Client, queries: list[str], body: dict[str, Any]) -> list[float]:
    latencies = []
    for query in queries:
        started = time.perf_counter()
        response = api.post(f"/v1/collections/{COLLECTION}/search", json={"query": query, **body})
        latencies.append((time.perf_counter() - started) * 1e3)
        if response.status_code != 200:
            raise SystemExit(f"search answered {response.status_code}: {response.text[:300]}")
    return latencies


def clients(base_url: str, queries: list[str], body: dict[str, Any], count: int) -> float:
    """Requests/s of `count` clients, each through all the queries in its own order."""
    orders = [random.Random(i).sample(queries, len(queries)) for i in range(count)]
    done = [0] * count

    def run(i: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as own:
            done[i] = len(one_client(own, orders[i], body))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def paced(api: httpx.Client, queries: list[str], body: dict[str, Any], rate: float,
          stop: threading.Event | None = None) -> list[float]:
    """Latencies (ms) of searches sent `rate` per second (each on its own schedule: a slow one
    delays the next, which then goes at once), through the queries once or until `stop`."""
    latencies: list[float] = []
    due = time.perf_counter()
    for query in queries * (1000 if stop is not None else 1):
        if stop is not None and stop.is_set():
            break
        time.sleep(max(0.0, due - time.perf_counter()))
        latencies.extend(one_client(api, [query], body))
        due += 1 / rate
    return latencies


def beside_ingest(data_dir: Path, documents: int, rate: float) -> dict[str, float]:
    with (DATA / "corpus.jsonl").open() as lines:
        docs = [{"title": r.get("title") or None, "text": r["text"], "_id": r["_id"]}
                for r in map(json.loads, lines)][:documents]
    queries = [json.loads(line)["text"] for line in (DATA / "queries_test.jsonl").open()]
    body = {"top_k": 10}
    work = Path(tempfile.mkdtemp(prefix="bienc-beside-"))
    try:
        shutil.copytree(data_dir / "data", work / "data")

        def ingest_as(api: httpx.Client, prefix: str) -> float:
            started = time.perf_counter()
            jobs = [api.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": [
                {"id": f"{prefix}{d['_id']}", "title": d["title"], "text": d["text"]}
                for d in docs[i:i + 500]]}).json()["job_id"] for i in range(0, len(docs), 500)]
            for job in jobs:
                wait_job(api, job)
            return len(docs) / (time.perf_counter() - started)

        with serving(work / "data", work / "serve.log", BIENC_QUERY_CACHE="0") as api:
            one_client(api, [f"{q} (warm-up)" for q in queries[:30]], body)
            alone_rate = ingest_as(api, "alone-")
            idle = paced(api, queries, body, rate)
            stop = threading.Event()
            during: list[float] = []

            def search_beside() -> None:
                with httpx.Client(base_url=str(api.base_url), timeout=60) as own:
                    during.extend(paced(own, queries, body, rate, stop))

            searcher = threading.Thread(target=search_beside)
            searcher.start()
            try:
                beside_rate = ingest_as(api, "beside-")
            finally:
                stop.set()
                searcher.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    idle_p50, idle_p99 = np.percentile(idle, [50, 99])
    p50, p99 = np.percentile(during, [50, 99])
    print(f"\nbeside an ingest ({documents} documents, hybrid top-10 at {rate:g}/s): searches alone "
          f"p50 {idle_p50:.1f} / p99 {idle_p99:.1f} ms; while ingesting p50 {p50:.1f} / p99 "
          f"{p99:.1f} ms ({len(during)} searches, p99 x{p99 / idle_p99:.2f}); ingest "
          f"{alone_rate:.1f} docs/s alone, {beside_rate:.1f} beside the searches "
          f"(x{beside_rate / alone_rate:.2f})", flush=True)
    return {"idle_p50_ms": round(float(idle_p50), 2), "idle_p99_ms": round(float(idle_p99), 2),
            "during_p50_ms": round(float(p50), 2), "during_p99_ms": round(float(p99), 2),
            "p99_ratio": round(float(p99 / idle_p99), 2),
            "ingest_docs_per_s_alone": round(alone_rate, 2),
            "ingest_docs_per_s_beside": round(beside_rate, 2),
            "ingest_ratio": round(beside_rate / alone_rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "out" / "http-search")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--beside-ingest", type=int, default=0, metavar="N",
                        help="then time searches beside an ingest of N documents")
    parser.add_argument("--search-rate", type=float, default=10.0,
                        help="searches per second beside the ingest")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated names from: " + "; ".join(CONFIGS))
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    args.data_dir.mkdir(parents=True, exist_ok=True)
    ingest(args.data_dir / "data")
    queries = [json.loads(line)["text"] for line in (DATA / "queries_test.jsonl").open()]
    warm = [f"{q} (warm-up)" for q in queries[:30]]
    figures: dict[str, dict[str, list[float]]] = {n: {"p50": [], "p99": [], "one": [], "four": []}
                                                  for n in names}
    for round_ in range(args.rounds):
        for name in names:
            settings, mode = CONFIGS[name]
            body = {"mode": mode, "top_k": args.top_k}
            with serving(args.data_dir / "data", args.data_dir / "serve.log",
                         **{"BIENC_QUERY_CACHE": "0", **settings}) as api:
                one_client(api, warm, body)
                latencies = one_client(api, queries, body)
                four = clients(str(api.base_url), queries, body, 4)
            p50, p99 = np.percentile(latencies, [50, 99])
            row = figures[name]
            row["p50"].append(float(p50))
            row["p99"].append(float(p99))
            row["one"].append(len(latencies) / (sum(latencies) / 1e3))
            row["four"].append(four)
            print(f"round {round_ + 1} {name}: 1 client p50 {p50:.1f} ms p99 {p99:.1f} ms, "
                  f"{row['one'][-1]:.1f} req/s; 4 clients {four:.1f} req/s", flush=True)
    median = {n: {k: statistics.median(v) for k, v in row.items()} for n, row in figures.items()}
    print(f"\n| search (top-{args.top_k}, SciFact, embedded serve) | 1 client | 4 clients |")
    print("|---|---|---|")
    for name, mid in median.items():
        print(f"| {name} | {mid['one']:.1f} req/s, p50 {mid['p50']:.1f} ms, p99 {mid['p99']:.1f} ms "
              f"| {mid['four']:.1f} req/s |")
    reference = "old dense (ef 128)"
    if reference in median and "hybrid" in median:
        print(f"hybrid / {reference}: 4 clients x{median['hybrid']['four'] / median[reference]['four']:.2f}, "
              f"1 client x{median['hybrid']['one'] / median[reference]['one']:.2f}")
    summary: dict[str, Any] = {"top_k": args.top_k, "rounds": args.rounds,
                               **{n: {k: round(v, 2) for k, v in row.items()}
                                  for n, row in median.items()}}
    if args.beside_ingest:
        summary["beside_ingest"] = beside_ingest(args.data_dir, args.beside_ingest, args.search_rate)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
