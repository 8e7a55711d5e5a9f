"""Soak: concurrent ingest and search over HTTP for a few minutes while the service is
restarted again and again, alternately gracefully (SIGTERM) and by a crash (SIGKILL).

Runs `bienc serve` on the embedded default (in-process worker, embedded Redis with its
append-only file, embedded Qdrant) in a temporary folder, on 127.0.0.1 only. Every request
loop is bounded by the deadline. At the end it waits for all accepted jobs and prints
documents accepted / indexed / lost (must be 0) / duplicated, and the search error count
(requests that failed while the service was down count there, by design).

    python bench/soak.py --minutes 3 --restart-every 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from http_load import BIENC, _free_port

SUBJECTS = ["river", "comet", "violin", "glacier", "orchid", "falcon", "harbour", "canyon"]


class Service:
    def __init__(self, work: Path, port: int):
        self.work, self.port = work, port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_")}
        # a crashed process's in-flight batch comes back after this; retries wait at most 5 s
        self.env.update({"BIENC_VISIBILITY_TIMEOUT_S": "20", "BIENC_RETRY_BACKOFF_MAX_S": "5",
                         "BIENC_INGEST_BATCH_SIZE": "25"})
        self.process: subprocess.Popen[bytes] | None = None
        self.log = (work / "serve.log").open("ab")

    def start(self, timeout_s: float = 300) -> None:
        self.process = subprocess.Popen([*BIENC, "serve", "--port", str(self.port)], cwd=self.work,
                                        env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise SystemExit("bienc serve did not become ready")

    def stop(self, crash: bool) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        self.process.wait(timeout=120)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop(crash=False)
        # the embedded Redis outlives a crashed bienc (the next one adopts it): stop it here
        socket_path = self.work / ".bienc" / "redis.sock"
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis(unix_socket_path=str(socket_path)).shutdown(nosave=True)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--restart-every", type=float, default=40.0, help="seconds")
    parser.add_argument("--batch", type=int, default=40, help="documents per ingest request")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bienc-soak-"))
    service = Service(work, _free_port())
    counts = {"accepted": 0, "ingest_refused": 0, "search_ok": 0, "search_errors": 0,
              "graceful_restarts": 0, "crash_restarts": 0}
    accepted_jobs: list[str] = []
    stop = threading.Event()

    def ingest_loop() -> None:
        n = 0
        with httpx.Client(base_url=service.url, timeout=30) as client:
            while not stop.is_set():
                docs = [{"id": f"d{n + i}", "text": f"Record {n + i}: a {SUBJECTS[(n + i) % 8]} "
                         f"seen on day {(n + i) // 8}."} for i in range(args.batch)]
                try:
                    response = client.post("/v1/collections/soak/documents", json={"documents": docs})
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 202:
                    accepted_jobs.append(response.json()["job_id"])
                    counts["accepted"] += len(docs)
                    n += len(docs)
                else:
                    counts["ingest_refused"] += 1  # not accepted: the client keeps it and retries
                    time.sleep(0.5)
                time.sleep(0.2)

    def search_loop() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    ok = client.post("/v1/collections/soak/search",
                                     json={"query": "a comet seen", "top_k": 10}).status_code
                except httpx.TransportError:
                    ok = 0
                counts["search_ok" if ok in (200, 404) else "search_errors"] += 1
                time.sleep(0.1)

    started = time.monotonic()
    try:
        service.start()
        threads = [threading.Thread(target=ingest_loop), threading.Thread(target=search_loop)]
        for thread in threads:
            thread.start()
        deadline = started + args.minutes * 60
        crash = False
        while time.monotonic() + args.restart_every < deadline:
            time.sleep(args.restart_every)
            service.stop(crash=crash)
            counts["crash_restarts" if crash else "graceful_restarts"] += 1
            service.start()
            crash = not crash
        time.sleep(max(0.0, deadline - time.monotonic()))
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        soak_s = time.monotonic() - started
        with httpx.Client(base_url=service.url, timeout=60) as client:
            settle = time.monotonic() + 900
            pending = list(accepted_jobs)
            while pending and time.monotonic() < settle:
                pending = [j for j in pending if client.get(f"/v1/jobs/{j}").json()["queued"] > 0]
                time.sleep(1)
            info = client.get("/v1/collections/soak").json()
            failed = sum(client.get(f"/v1/jobs/{j}").json()["failed"] for j in accepted_jobs)
    finally:
        stop.set()
        service.close()
    print(f"soak {soak_s:.0f} s, {counts['graceful_restarts']} graceful + "
          f"{counts['crash_restarts']} crash restarts of `bienc serve`")
    print(f"documents accepted {counts['accepted']}, indexed {info['documents']}, "
          f"lost {counts['accepted'] - info['documents']}, "
          f"duplicated {info['points'] - info['documents']}, failed {failed}, "
          f"jobs still queued {len(pending)}")
    print(f"ingest requests refused while down {counts['ingest_refused']}; searches ok "
          f"{counts['search_ok']}, errors {counts['search_errors']}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
