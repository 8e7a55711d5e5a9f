"""Snapshot, restore, export and re-ingest of a SciFact collection, each timed, and whether the
copies answer the test queries as the collection does.

    python bench/snapshot.py                    # ../shared/data/scifact, embedded bienc serve
    python bench/snapshot.py --documents 300

Runs `bienc serve` on the embedded default (its own Redis, Qdrant Edge, the worker in the same
process), then over HTTP on loopback:
  1. ingests the corpus (requests of 1000 documents), to the last job completed;
  2. takes a snapshot (POST /v1/collections/scifact/snapshot; the time includes writing the
     file and sending it) and prints its size;
  3. restores it under another name (POST /v1/snapshots/restore?as=...; the time includes the
     upload and the writes, not the HNSW builds that follow in the background);
  4. exports every document (GET /v1/collections/scifact/documents, pages of 1000) and ingests
     the export into a third collection, to the last job completed;
  5. searches the 300 test queries (top-10, hybrid) in all three and counts the queries whose
     ranked ids agree with the original's.
Prints one table.
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
from serving import serving, wait_job

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
COLLECTION = "scifact"


def ingest(api: httpx.Client, collection: str, docs: list[dict[str, Any]]) -> tuple[float, int]:
    """Seconds to ingest `docs` to the last job completed, and the documents that failed."""
    started = time.perf_counter()
    jobs = [api.post(f"/v1/collections/{collection}/documents",
                     json={"documents": docs[i:i + 1000]}).json()["job_id"]
            for i in range(0, len(docs), 1000)]
    failed = sum(wait_job(api, job)["failed"] for job in jobs)
    return time.perf_counter() - started, failed


def ranked_ids(api: httpx.Client, collection: str, queries: list[str]) -> list[list[str]]:
    answers = []
    for query in queries:
        response = api.post(f"/v1/collections/{collection}/search",
                            json={"query": query, "top_k": 10, "with_text": False})
        response.raise_for_status()
        answers.append([hit["id"] for hit in response.json()["results"][0]])
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=0, help="SciFact documents; 0 = all")
    args = parser.parse_args()
    with (DATA / "corpus.jsonl").open() as lines:
        docs = [{"id": r["_id"], "title": r.get("title") or None, "text": r["text"]}
                for r in map(json.loads, itertools.islice(lines, args.documents or None))]
    queries = [json.loads(line)["text"] for line in (DATA / "queries_test.jsonl").open()]
    work = Path(tempfile.mkdtemp(prefix="bienc-snapshot-bench-"))
    rows: list[tuple[str, str, str]] = []
    try:
        with serving(work / "data", work / "serve.log") as api:
            ingest_s, failed = ingest(api, COLLECTION, docs)
            info = api.get(f"/v1/collections/{COLLECTION}").json()
            print(f"ingested {info['documents']} documents ({info['points']} points) in "
                  f"{ingest_s:.1f} s; failed {failed}", flush=True)
            rows.append(("ingest", f"{ingest_s:.2f}",
                         f"{info['documents']} documents, {info['points']} points"))

            started = time.perf_counter()
            snapshot = api.post(f"/v1/collections/{COLLECTION}/snapshot", timeout=3600)
            snapshot.raise_for_status()
            create_s = time.perf_counter() - started
            size_mb = len(snapshot.content) / 1e6
            print(f"snapshot: {size_mb:.1f} MB in {create_s:.1f} s", flush=True)
            rows.append(("snapshot create", f"{create_s:.2f}",
                         f"{size_mb:.1f} MB ({size_mb * 1e3 / max(1, info['points']):.1f} kB "
                         "a point)"))

            started = time.perf_counter()
            restored = api.post("/v1/snapshots/restore", params={"as": f"{COLLECTION}-restored"},
                                content=snapshot.content, timeout=3600,
                                headers={"content-type": "application/octet-stream"})
            restored.raise_for_status()
            restore_s = time.perf_counter() - started
            print(f"restore: {restore_s:.1f} s -> {restored.json()['physical']}", flush=True)
            rows.append(("snapshot restore", f"{restore_s:.2f}",
                         f"{restored.json()['documents']} documents, {restored.json()['points']} "
                         "points"))

            started = time.perf_counter()
            exported: list[dict[str, Any]] = []
            cursor = None
            while True:
                page = api.get(f"/v1/collections/{COLLECTION}/documents",
                               params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
                page.raise_for_status()
                exported += page.json()["documents"]
                if (cursor := page.json()["next_cursor"]) is None:
                    break
            export_s = time.perf_counter() - started
            export_mb = sum(len(json.dumps(d, ensure_ascii=False).encode()) + 1
                            for d in exported) / 1e6
            print(f"export: {len(exported)} documents, {export_mb:.1f} MB of JSONL in "
                  f"{export_s:.1f} s", flush=True)
            rows.append(("export", f"{export_s:.2f}",
                         f"{len(exported)} documents, {export_mb:.1f} MB of JSONL"))
            reingest_s, failed = ingest(api, f"{COLLECTION}-reingested", exported)
            print(f"re-ingest of the export: {reingest_s:.1f} s; failed {failed}", flush=True)
            rows.append(("re-ingest of the export", f"{reingest_s:.2f}",
                         f"{len(exported) / reingest_s:.1f} docs/s, {failed} failed"))

            original = ranked_ids(api, COLLECTION, queries)
            for copy in ("restored", "reingested"):
                answers = ranked_ids(api, f"{COLLECTION}-{copy}", queries)
                same = sum(a == b for a, b in zip(original, answers, strict=True))
                print(f"{copy}: {same} of {len(queries)} queries ranked alike", flush=True)
                rows.append((f"searches of the {copy} copy", "",
                             f"{same} of {len(queries)} top-10 rankings as the original's"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| step | seconds | what |")
    print("|---|---|---|")
    for step, seconds, what in rows:
        print(f"| {step} | {seconds} | {what} |")


if __name__ == "__main__":
    main()
