"""HTTP load: ingest N documents through the API, then fire search requests at it.

Targets a running `bienc serve` on this machine (--url, loopback only), or starts one itself on
the embedded default in a temporary folder. Documents are SciFact's (../shared/data/scifact)
when present, else synthetic. Prints ingest docs/s, then search requests/s and p50/p99 latency.

    python bench/http_load.py                          # 5000 documents, 500 searches, 4 threads
    python bench/http_load.py --documents 200 --searches 50
    python bench/http_load.py --url http://127.0.0.1:8000 --api-key KEY
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
BIENC = [sys.executable, "-m", "bienc.cli"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORDS = ["protein", "cell", "gene", "tumor", "immune", "brain", "heart", "blood", "drug", "trial",
         "patient", "risk", "dose", "virus", "bacteria", "receptor", "enzyme", "signal", "pathway",
         "mutation", "therapy", "cancer", "insulin", "neuron", "membrane", "vaccine", "infection",
         "oxygen", "muscle", "liver", "kidney", "lung", "bone", "diet", "sleep", "stress"]


def load_documents(data: Path, count: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """`count` documents and some queries: SciFact's when present, else synthetic."""
    corpus = data / "corpus.jsonl"
    if corpus.exists():
        documents: list[dict[str, Any]] = []
        with corpus.open() as lines:
            for line in lines:
                if len(documents) >= count:
                    break
                record = json.loads(line)
                documents.append({"id": str(record["_id"]), "title": record.get("title") or None,
                                  "text": record.get("text") or record.get("title") or "-"})
        queries_file = data / "queries_test.jsonl"
        queries = ([json.loads(line)["text"] for line in queries_file.open()]
                   if queries_file.exists() else [d["text"][:80] for d in documents])
        return documents, queries
    rng = random.Random(seed)
    documents = [{"id": f"syn-{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))}
                 for i in range(count)]
    queries = [" ".join(rng.choices(WORDS, k=rng.randint(2, 6))) for _ in range(200)]
    return documents, queries


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def self_started_server(api_key: str | None) -> Iterator[str]:
    """`bienc serve` on the embedded default, in a temporary folder removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="bienc-http-load-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_")}
    if api_key:
        env["BIENC_API_KEY"] = api_key
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen([*BIENC, "serve", "--port", str(port)], cwd=work, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"bienc serve exited:\n{(work / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("bienc serve was not ready in 300 s")
            time.sleep(0.25)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def ingest(client: httpx.Client, collection: str, documents: list[dict[str, Any]],
           batch: int) -> dict[str, float]:
    started = time.perf_counter()
    jobs = []
    for start in range(0, len(documents), batch):
        response = client.post(f"/v1/collections/{collection}/documents",
                               json={"documents": documents[start:start + batch]})
        if response.status_code != 202:
            raise SystemExit(f"ingest failed {response.status_code}: {response.text[:500]}")
        jobs.append(response.json()["job_id"])
    accepted_s = time.perf_counter() - started
    indexed = failed = 0
    for job_id in jobs:
        while True:
            status = client.get(f"/v1/jobs/{job_id}").json()
            if status["queued"] == 0:
                indexed += status["indexed"] + status["skipped"]
                failed += status["failed"]
                break
            time.sleep(0.5)
    elapsed = time.perf_counter() - started
    return {"documents": len(documents), "indexed": indexed, "failed": failed,
            "accept_s": accepted_s, "ingest_s": elapsed, "docs/s": indexed / elapsed}


def search_load(url: str, headers: dict[str, str], collection: str, queries: list[str],
                requests: int, concurrency: int, top_k: int) -> dict[str, float]:
    local = threading.local()

    def one(i: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, headers=headers, timeout=60)
        started = time.perf_counter()
        response = local.client.post(f"/v1/collections/{collection}/search",
                                     json={"query": queries[i % len(queries)], "top_k": top_k,
                                           "with_text": False})
        return time.perf_counter() - started, response.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    latencies = sorted(seconds * 1000 for seconds, _ in outcomes)
    errors = sum(1 for _, code in outcomes if code != 200)
    return {"requests": requests, "errors": errors, "concurrency": concurrency,
            "requests/s": requests / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", help="a running `bienc serve` on this machine; default: start one")
    parser.add_argument("--api-key", default=os.environ.get("BIENC_API_KEY"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500, help="documents per ingest request")
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--collection", default="http-load")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("--url must be on this machine (127.0.0.1, localhost or ::1)")
    if not (0 < args.concurrency <= 16 and 0 < args.searches <= 100_000):
        raise SystemExit("keep it small: --concurrency 1-16, --searches 1-100000")
    documents, queries = load_documents(args.data, args.documents, args.seed)
    source = "SciFact" if (args.data / "corpus.jsonl").exists() else "synthetic"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    server = self_started_server(args.api_key) if not args.url else _given(args.url)
    with server as url, httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        print(f"{len(documents)} {source} documents -> {url} collection {args.collection!r}",
              file=sys.stderr, flush=True)
        ingested = ingest(client, args.collection, documents, args.batch)
        print(f"searching: {args.searches} requests, {args.concurrency} threads", file=sys.stderr,
              flush=True)
        searched = search_load(url, headers, args.collection, queries, args.searches,
                               args.concurrency, args.top_k)
    report = {"source": source, **ingested, **{f"search_{k}": v for k, v in searched.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value:.2f}" if isinstance(value, float) else f"{key:>22}: {value}")


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    main()
