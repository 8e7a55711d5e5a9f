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
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import pct, search_loop, searching, serving, wait_job

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "scifact"


def timed_reindex(api: httpx.Client, body: dict[str, Any], queries: list[str]
                  ) -> tuple[float, dict[str, Any], list[float], int]:
    started = time.perf_counter()
    job_id = api.post(f"/v1/collections/{COLLECTION}/reindex", json=body).json()["job_id"]
    with searching(api, COLLECTION, queries) as result:
        status = wait_job(api, job_id)
        elapsed = time.perf_counter() - started
    return elapsed, status, result["latencies"], result["failed"]


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
    rows: list[tuple[str, float | None, float | None, str, object]] = []
    try:
        with serving(work / "data", work / "serve.log") as api:
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
            search_loop(api, COLLECTION, queries[:20], None)  # warm
            idle, failed = search_loop(api, COLLECTION, queries, None, rounds=2)
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
        shutil.rmtree(work, ignore_errors=True)
    print("| run | seconds | docs/s | search top-10 p50 / p99 ms | searches not 200 |")
    print("|---|---|---|---|---|")
    for label, seconds, rate, latency, failures in rows:
        print(f"| {label} | {'' if seconds is None else f'{seconds:.0f}'} | "
              f"{'' if rate is None else f'{rate:.1f}'} | {latency} | {failures} |")


if __name__ == "__main__":
    main()
