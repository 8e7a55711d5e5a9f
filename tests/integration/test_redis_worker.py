"""Ingest through real Redis and a real `bienc worker` process, then query the same store.

This is the documented topology for a machine without a Qdrant server: the worker owns the
embedded store while it runs; search, info and eval open it once the worker has stopped.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import bienc_env, run_bienc, run_json, worker_process, write_jsonl

SHORT = [
    {"id": f"doc-{i}", "text": text, "metadata": {"group": "a" if i % 2 else "b"}}
    for i, text in enumerate([
        "Paris is the capital of France.",
        "The Eiffel Tower is in Paris.",
        "Berlin is the capital of Germany.",
        "Python is a programming language.",
        "Penguins live in the southern hemisphere.",
        "The mitochondria is the powerhouse of the cell.",
    ])
]


def test_ingest_through_redis_and_a_worker(tmp_path: Path, redis_db: redis.Redis,
                                           long_document: dict[str, Any]) -> None:
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"))
    corpus = write_jsonl(tmp_path / "corpus.jsonl",
                         [*SHORT[:3], "{broken json", *SHORT[3:], long_document])
    with worker_process(tmp_path, env):
        first = run_bienc("ingest", str(corpus), "-c", "t", "--wait", "--json", cwd=tmp_path, env=env)
        assert first.returncode == 3, first.stderr  # finished, with a rejected record
        assert "line 4" in first.stderr and "invalid JSON" in first.stderr
        job_id = json.loads(first.stdout)["job_id"]
        status = run_json("jobs", "show", job_id, cwd=tmp_path, env=env)
        assert (status["state"], status["indexed"], status["failed"], status["queued"]) == (
            "completed_with_errors", 7, 1, 0)
        assert "invalid JSON" in status["failures"]["line 4"]

        again = run_json("ingest", str(corpus), "-c", "t", "--wait", cwd=tmp_path, env=env)
        assert (again["indexed"], again["skipped"]) == (0, 7)  # unchanged: nothing re-encoded

        shorter = dict(long_document, text="Now a short note about hummingbirds.")
        update = write_jsonl(tmp_path / "update.jsonl", [shorter, SHORT[0]])
        changed = run_json("ingest", str(update), "-c", "t", "--wait", cwd=tmp_path, env=env)
        assert (changed["indexed"], changed["skipped"], changed["failed"]) == (1, 1, 0)

    info = run_json("info", "-c", "t", cwd=tmp_path, env=env)["collections"][0]
    assert info["documents"] == 7
    assert info["points"] == 7  # the shrunk document left no orphan chunk behind

    hits = run_json("search", "Where is the Eiffel Tower?", "-c", "t", "-k", "3", cwd=tmp_path, env=env)
    assert hits[0]["id"] == "doc-1"
    assert hits[0]["metadata"] == {"group": "a"}
    assert len(hits) == 3 and hits[0]["score"] > hits[1]["score"]
    filtered = run_json("search", "Where is the Eiffel Tower?", "-c", "t", "--filter", '{"group": "b"}',
                        cwd=tmp_path, env=env)
    assert filtered and all(h["metadata"]["group"] == "b" for h in filtered)

    # the queue is drained: nothing waiting, nothing delivered and left unacknowledged
    assert redis_db.llen("bienc.ingest") == 0 and redis_db.hlen("unacked") == 0


def test_a_producer_queues_without_loading_any_model(tmp_path: Path, redis_db: redis.Redis) -> None:
    """A producer beside a worker fleet (here: one that can open the store, as with a Qdrant
    server) queues for an existing collection and for a new one without loading a model,
    which would keep the workers waiting for seconds: every collection is written with its own
    model, which the workers load (and refuse on the job, if they cannot)."""
    from bienc.config.settings import Settings
    from bienc.config.topology import Role, decide
    from bienc.ingest.documents import Document
    from bienc.resources import Resources
    from bienc.runtime import Runtime
    from bienc.store.factory import open_store
    from tests.integration.conftest import create_other_models_collection

    create_other_models_collection(tmp_path)
    settings = Settings(_env_file=None, broker_url=TEST_REDIS_URL, data_dir=tmp_path)  # type: ignore[call-arg]
    resources = Resources(settings, store=open_store(settings))
    runtime = Runtime(resources, decide(settings, Role.SUBMIT))
    try:
        assert runtime.ingest([Document("a", "Some text.")], "wide").accepted == 1
        assert runtime.ingest([Document("a", "Some text.")], "fresh").accepted == 1  # the worker creates it
        assert redis_db.llen("bienc.ingest") == 2
        assert not resources.has_encoder
    finally:
        resources.close()


def test_queueing_to_a_shared_broker_loads_no_encoder_library(tmp_path: Path,
                                                              redis_db: redis.Redis) -> None:
    """`bienc ingest` only validates and queues when workers encode: it must not load numpy,
    torch or the task code, whose imports would delay the workers' first batch."""
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"))
    corpus = write_jsonl(tmp_path / "corpus.jsonl", SHORT)
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "bienc.cli", "ingest",
                             str(corpus), "-c", "q"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[1].rstrip(":")
    status = run_json("jobs", "show", job_id, cwd=tmp_path, env=env)
    assert (status["state"], status["queued"]) == ("queued", len(SHORT))
    [message] = redis_db.lrange("bienc.ingest", 0, -1)  # one batch, for the workers' task
    assert json.loads(message)["headers"]["task"] == "bienc.index_batch"
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "celery" in imported  # the listing is real: the producer does load Celery
    assert not imported & {"numpy", "torch", "sentence_transformers", "openvino",
                           "bienc.workers.tasks", "bienc.workers.indexing", "bienc.encoding.encoder"}
