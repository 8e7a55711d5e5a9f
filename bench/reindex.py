"""A reindex of full SciFact against a fresh ingest of the same, and search latency while it runs.

    python bench/reindex.py                     # ../shared/data/scifact, embedded bienc serve
    python bench/reindex.py --documents 1000

Runs `bienc serve` on the embedded default (its own Redis, Qdrant Edge, the worker in the same
process, as a laptop runs it), then over HTTP on loopback:
  1. ingests the corpus (requests of 1000 documents) and times it to the last job completed;
  2. times top-10 searches of the 300 test queries, back to back, with nothing else running;
  3. reindexes the collection with other chunks (re-encoding every document) and times it to
     the switch, searching back to back all the while (every answer must be 200);
  4. reindexes it again dropping, then adding, its lexical vectors (the dense vectors are
     copied, nothing is encoded) and times those.
Prints one table. Search latency includes HTTP and JSON (text included, as the API answers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "scifact"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if status["queued"] == 0 and status["state"] not in ("running", "queued", "retrying"):
            return status
        time.sleep(0.2)


def search_loop(api: httpx.Client, queries: list[str], stop: threading.Event | None,
                rounds: int = 1) -> tuple[list[float], int]:
    """Search back to back: once through the queries, or until `stop`. Returns the latencies
    (ms) and how many answers were not 200."""
    latencies, failed = [], 0
    for query in itertools.cycle(queries) if stop is not None else queries * rounds:
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        response = api.post(f"/v1/collections/{COLLECTION}/search", json={"query": query, "top_k": 10})
        latencies.append((time.perf_counter() - started) * 1e3)
        failed += response.status_code != 200
    return latencies, failed


def timed_reindex(api: httpx.Client, body: dict[str, Any], queries: list[str]
                  ) -> tuple[float, dict[str, Any], list[float], int]:
    stop = threading.Event()
    result: dict[str, Any] = {}

    def search() -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as own:
            result["latencies"], result["failed"] = search_loop(own, queries, stop)

    searcher = threading.Thread(target=search)
    started = time.perf_counter()
    job_id = api.post(f"/v1/collections/{COLLECTION}/reindex", json=body).json()["job_id"]
    searcher.start()
    status = wait_job(api, job_id)
    elapsed = time.perf_counter() - started
    stop.set()
    searcher.join()
    return elapsed, status, result["latencies"], result["failed"]


def pct(values: list[float]) -> str:
    if not values:
        return "- / -"
    p50, p99 = np.percentile(values, [50, 99])
    return f"{p50:.1f} / {p99:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=0, help="SciFact documents; 0 = all")
    parser.add_argument("--chunk-tokens", type=int, default=96, help="the reindex's new chunk size")
    args = parser.parse_args()
    with (DATA / "corpus.jsonl").open() as lines:
        docs = [{"id": r["_id"], "title": r.get("title") or None, "text": r["text"]}
                for r in map(json.loads, itertools.islice(lines, args.documents or None))]
    queries = [json.loads(line)["text"] for line in (DATA / "queries_test.jsonl").open()]
    work = Path(tempfile.mkdtemp(prefix="bienc-reindex-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_")}
    env.update(BIENC_DATA_DIR=str(work / "data"),
               **{k: v for k, v in os.environ.items() if k == "BIENC_MODEL_CACHE_DIR"})
    port = free_port()
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "bienc.cli", "serve", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as api:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if api.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bienc serve did not start; see {work / 'serve.log'}")
                time.sleep(0.5)
            started = time.perf_counter()
            jobs = [api.post(f"/v1/collections/{COLLECTION}/documents",
                             json={"documents": docs[i:i + 1000]}).json()["job_id"]
                    for i in range(0, len(docs), 1000)]
            statuses = [wait_job(api, job) for job in jobs]
            ingest_s = time.perf_counter() - started
            info = api.get(f"/v1/collections/{COLLECTION}").json()
            print(f"ingested {info['documents']} documents ({info['points']} points, chunks "
                  f"{info['chunking']['tokens']}/{info['chunking']['overlap']}) in {ingest_s:.0f} s; "
                  f"failed {sum(s['failed'] for s in statuses)}", flush=True)
            rows.append(("fresh ingest", ingest_s, len(docs) / ingest_s, "", ""))
            search_loop(api, queries[:20], None)  # warm
            idle, failed = search_loop(api, queries, None, rounds=2)
            rows.append(("no reindex (search only)", None, None, pct(idle), failed))
            print(f"idle search p50/p99 {pct(idle)} ms", flush=True)

            for label, body in ((f"reindex, chunks -> {args.chunk_tokens} (re-encodes)",
                                 {"chunk_tokens": args.chunk_tokens}),
                                ("reindex, lexical vectors dropped (vectors copied)", {"lexical": False}),
                                ("reindex, lexical vectors added (vectors copied)", {"lexical": True})):
                elapsed, status, during, failed = timed_reindex(api, body, queries)
                info = api.get(f"/v1/collections/{COLLECTION}").json()
                print(f"{label}: {status['state']} in {elapsed:.0f} s -> {info['physical']}, "
                      f"{info['points']} points; search p50/p99 {pct(during)} ms, "
                      f"{len(during)} searches, {failed} failed", flush=True)
                rows.append((label, elapsed, status["indexed"] / elapsed, pct(during), failed))
    finally:
        server.terminate()
        server.wait(timeout=120)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print("| run | seconds | docs/s | search top-10 p50 / p99 ms | searches not 200 |")
    print("|---|---|---|---|---|")
    for label, seconds, rate, latency, failed in rows:
        print(f"| {label} | {'' if seconds is None else f'{seconds:.0f}'} | "
              f"{'' if rate is None else f'{rate:.1f}'} | {latency} | {failed} |")


if __name__ == "__main__":
    main()
