"""The queue killed at its named points (BIENC_CRASH_AT, bienc/config/crash.py), with real
processes: `bienc worker` over the test Redis, and `bienc ingest` on the embedded queue.

Points: queue.claimed (a batch taken from the queue, not yet handed to its task: where a plain
BRPOP fetch loses it) and queue.restore (a dead worker's batch being put back by the sweep,
under the sweep's lock, which the killed worker then holds until it expires)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from bienc.queue.celery_app import INGEST_QUEUE
from bienc.queue.transport import DOORBELL_KEY
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import (
    BIENC,
    bienc_env,
    run_bienc,
    run_json,
    stop_embedded_redis,
    worker_process,
    write_jsonl,
)
from tests.integration.test_reliability import _embedded_jobs, _indexed, _short_docs, _submit, _wait_job

KILLED = -signal.SIGKILL
UNACKED, SWEEP_LOCK = "unacked", "unacked_mutex"  # kombu's keys


def _worker_killed_at(point: str, cwd: Path, env: dict[str, str], timeout_s: float = 180) -> None:
    worker = subprocess.Popen([*BIENC, "worker"], cwd=cwd, env={**env, "BIENC_CRASH_AT": point},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert worker.wait(timeout=timeout_s) == KILLED, f"the worker did not reach {point}"
    finally:
        if worker.poll() is None:
            worker.kill()


def test_workers_killed_taking_a_batch_and_putting_it_back_lose_and_duplicate_nothing(
        tmp_path: Path, redis_db: redis.Redis) -> None:
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"),
                    visibility_timeout_s="5", retry_backoff_max_s="2", ingest_batch_size="20")
    corpus = write_jsonl(tmp_path / "c.jsonl", _short_docs(100))
    job_id = _submit(corpus, "k", tmp_path, env)  # 5 batches, no worker yet

    _worker_killed_at("queue.claimed", tmp_path, env)  # took the first batch, died
    assert redis_db.hlen(UNACKED) == 1 and redis_db.llen(INGEST_QUEUE) == 4

    # the next worker's sweep finds that batch after the visibility timeout and dies putting
    # it back, with the sweep's lock taken
    _worker_killed_at("queue.restore", tmp_path, env)
    assert redis_db.exists(SWEEP_LOCK) and redis_db.hlen(UNACKED) >= 1

    with worker_process(tmp_path, env):  # back within seconds, not the lock's kombu default 300
        status = _wait_job(job_id, tmp_path, env, timeout_s=120)
    assert (status["indexed"], status["failed"]) == (100, 0)
    info = run_json("info", "-c", "k", cwd=tmp_path, env=env)["collections"][0]
    assert info["documents"] == info["points"] == 100  # every document, once
    assert redis_db.hlen(UNACKED) == 0


def test_an_embedded_ingest_killed_taking_a_batch_is_finished_by_the_next(tmp_path: Path) -> None:
    """Killed as it takes its second batch (by then every batch is queued: its first took the
    model's load), `bienc ingest` leaves that batch taken and unacknowledged; the next process
    on the folder puts it back at once and finishes the killed job with its own."""
    env = bienc_env(ingest_batch_size="20")
    data_dir = tmp_path / ".bienc"
    first = write_jsonl(tmp_path / "first.jsonl", _short_docs(60))
    second = write_jsonl(tmp_path / "second.jsonl", [{"id": "late", "text": "A late note on tides."}])
    try:
        killed = run_bienc("ingest", str(first), "-c", "k", cwd=tmp_path,
                           env={**env, "BIENC_CRASH_AT": "queue.claimed#2"})
        assert killed.returncode == KILLED, killed.stderr
        [first_job] = _embedded_jobs(data_dir)
        assert _indexed(data_dir, first_job) == 20

        result = run_bienc("ingest", str(second), "-c", "k", "--json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert "queued again 1 batches that a stopped process left unfinished" in result.stderr
        finished = run_json("jobs", "show", first_job, cwd=tmp_path, env=env)
        assert (finished["state"], finished["indexed"]) == ("completed", 60)
        assert run_json("info", "-c", "k", cwd=tmp_path, env=env)["collections"][0]["documents"] == 61
    finally:
        stop_embedded_redis(data_dir)


def test_a_backlog_is_taken_without_waiting_for_tokens(tmp_path: Path, redis_db: redis.Redis) -> None:
    """A worker that took a batch takes the next at once while the queue holds more, even with
    every doorbell token gone (a waiting worker claims anyway once a second)."""
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"), ingest_batch_size="2")
    job_id = _submit(write_jsonl(tmp_path / "c.jsonl", _short_docs(60)), "b", tmp_path, env)
    redis_db.delete(DOORBELL_KEY)  # 30 batches queued, no token left
    with worker_process(tmp_path, env):
        _wait_job(job_id, tmp_path, env, until="indexed", at_least=2, timeout_s=120)
        started = time.monotonic()
        status = _wait_job(job_id, tmp_path, env, timeout_s=120)
        rest_s = time.monotonic() - started
    assert (status["indexed"], status["failed"]) == (60, 0)
    # the 29 batches after the first, each waiting out the one-second wait, would take 29 s
    assert rest_s < 15, rest_s
