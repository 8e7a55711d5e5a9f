"""What the benchmarks that go through `bienc serve` share: start it on a data folder, wait
for jobs, search in a loop over HTTP on loopback."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(data_dir: Path, log_file: Path, **settings: str) -> Iterator[httpx.Client]:
    """`bienc serve` on the embedded default over `data_dir` (its own Redis, Qdrant Edge, the
    worker in the same process), with `settings` as BIENC_* variables; yields a client once
    it is ready and stops it on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_")}
    env.update(BIENC_DATA_DIR=str(data_dir), **settings,
               **{k: v for k, v in os.environ.items() if k == "BIENC_MODEL_CACHE_DIR"})
    port = free_port()
    with log_file.open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "bienc.cli", "serve", "--port", str(port)],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as api:
                deadline = time.monotonic() + 600
                while True:
                    try:
                        if api.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"bienc serve did not start; see {log_file}")
                    time.sleep(0.5)
                yield api
        finally:
            server.terminate()
            server.wait(timeout=120)


def wait_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if status["queued"] == 0 and status["state"] not in ("running", "queued", "retrying"):
            return status
        time.sleep(0.2)


def search_loop(api: httpx.Client, collection: str, queries: list[str],
                stop: threading.Event | None, rounds: int = 1, **body: Any
                ) -> tuple[list[float], int]:
    """Search back to back (top-10, `body` added to each request): `rounds` times through the
    queries, or until `stop`. Returns the latencies (ms) and how many answers were not 200."""
    latencies, failed = [], 0
    for query in itertools.cycle(queries) if stop is not None else queries * rounds:
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        response = api.post(f"/v1/collections/{collection}/search",
                            json={"query": query, "top_k": 10, **body})
        latencies.append((time.perf_counter() - started) * 1e3)
        failed += response.status_code != 200
    return latencies, failed


@contextmanager
def searching(api: httpx.Client, collection: str, queries: list[str], **body: Any
              ) -> Iterator[dict[str, Any]]:
    """Search back to back from another thread (and its own connection) while inside; the
    yielded dict then holds "latencies" (ms) and "failed"."""
    stop = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as own:
            result["latencies"], result["failed"] = search_loop(own, collection, queries, stop,
                                                                **body)

    searcher = threading.Thread(target=run)
    searcher.start()
    try:
        yield result
    finally:
        stop.set()
        searcher.join()


def pct(values: list[float]) -> str:
    if not values:
        return "- / -"
    p50, p99 = np.percentile(values, [50, 99])
    return f"{p50:.1f} / {p99:.1f}"
