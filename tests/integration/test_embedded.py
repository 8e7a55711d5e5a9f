"""The embedded default: no servers configured, one process, real model."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from bienc.queue.broker import embedded_socket_path
from tests.integration.conftest import (
    bienc_env,
    create_other_models_collection,
    run_bienc,
    run_json,
    write_jsonl,
)


def test_demo_ranks_the_right_document_first_for_each_query(tmp_path: Path) -> None:
    result = run_bienc("demo", cwd=tmp_path, env=bienc_env())
    assert result.returncode == 0, result.stderr
    assert "search mode: hybrid" in result.stdout
    assert "by an earlier process" not in result.stderr  # a fresh folder has nothing left over

    def first(query: str) -> str:
        return result.stdout.split(f"query: {query}")[1].strip().splitlines()[0]

    assert "eiffel-tower" in first("Where is the Eiffel Tower located?")
    assert "The Eiffel Tower is in Paris." in first("Where is the Eiffel Tower located?")
    # the lexical leg finds three documents here, mitochondria first (by "energy"): its few
    # close scores must not outweigh the dense leg's clear preference
    assert "photosynthesis" in first("How do plants make energy from light?")
    assert "20 indexed" in result.stdout
    rerun = run_bienc("demo", cwd=tmp_path, env=bienc_env())
    assert "0 indexed, 20 unchanged" in rerun.stdout


def test_long_document_is_found_by_a_phrase_from_its_end(tmp_path: Path,
                                                         long_document: dict[str, Any]) -> None:
    env = bienc_env()
    others = [{"id": f"n{i}", "text": f"Note {i} about tax law and accounting."} for i in range(5)]
    corpus = write_jsonl(tmp_path / "c.jsonl", [long_document, *others])
    assert run_bienc("ingest", str(corpus), "-c", "long", cwd=tmp_path, env=env).returncode == 0
    hits = run_json("search", "hummingbirds navigate by polarised light", "-c", "long", cwd=tmp_path, env=env)
    assert hits[0]["id"] == "long-1"
    assert "polarised light" in hits[0]["snippet"]
    assert hits[0]["text"] == long_document["text"]
    info = run_json("info", "-c", "long", cwd=tmp_path, env=env)["collections"][0]
    assert info["documents"] == 6 and info["points"] > 6
    queries = write_jsonl(tmp_path / "q.jsonl", [
        {"_id": "q1", "text": "hummingbirds navigate by polarised light"},
        {"_id": "q2", "text": "which note is about tax law?"}])
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tlong-1\t1\nq2\tn3\t1\n")
    report = run_json("eval", "-c", "long", "--queries", str(queries), "--qrels", str(qrels),
                      "-k", "5", cwd=tmp_path, env=env)
    assert (report["queries"], report["top_k"], report["recall@10"]) == (2, 5, 1.0)
    assert report["mrr@10"] >= 0.5 + 1 / 5  # q1 first; q2's note among five near-twins
    assert 0 < report["search_ms_p50"] <= report["search_ms_p99"]


def test_a_collection_whose_model_cannot_load_here_is_refused(tmp_path: Path) -> None:
    create_other_models_collection(tmp_path / ".bienc")
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "hello"}])
    result = run_bienc("ingest", str(corpus), "-c", "wide", cwd=tmp_path, env=bienc_env())
    assert result.returncode == 1
    assert "'wide' is encoded with model 'other/model-768'" in result.stderr
    assert "cannot be loaded here" in result.stderr and "Traceback" not in result.stderr
    search = run_bienc("search", "hello", "-c", "wide", cwd=tmp_path, env=bienc_env())
    assert search.returncode == 1 and "'other/model-768'" in search.stderr


def test_unloadable_model_is_one_clear_error(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "hello"}])
    result = run_bienc("ingest", str(corpus), cwd=tmp_path, env=bienc_env(model=str(tmp_path / "nope")))
    assert result.returncode == 1
    assert "cannot load model" in result.stderr and "BIENC_MODEL" in result.stderr
    assert "Traceback" not in result.stderr
    bad = run_bienc("info", cwd=tmp_path, env=bienc_env(chunk_overlap="500"))
    assert bad.returncode == 1 and "BIENC_CHUNK_OVERLAP" in bad.stderr
    # one readable line naming the setting: no traceback, no binary garbage
    assert bad.stderr.startswith("bienc: invalid setting BIENC_CHUNK_OVERLAP"), bad.stderr
    assert all(line.isprintable() for line in bad.stderr.splitlines()), bad.stderr


def test_commands_exit_with_output_whole_and_their_redis_stopped(tmp_path: Path) -> None:
    """`bienc` skips the interpreter's teardown at exit, not the exit handlers: the embedded
    Redis a command started is shut down and what it printed arrives whole."""
    docs = [{"id": f"d{i}", "text": f"Document number {i} about rivers."} for i in range(40)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    ingest = run_bienc("ingest", str(corpus), "-c", "exit", "--json", cwd=tmp_path,
                       env=bienc_env(), timeout=120)
    assert ingest.returncode == 0, ingest.stderr
    ingested = json.loads(ingest.stdout)
    assert (ingested["state"], ingested["indexed"]) == ("completed", 40)
    # a command that loads no model: nothing keeps it from the quick exit. (A Redis left
    # running would hold the command's stderr open, and this call would time out.)
    show = run_bienc("jobs", "show", ingested["job_id"], "--json", cwd=tmp_path,
                     env=bienc_env(), timeout=60)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout) == ingested
    data_dir = tmp_path / ".bienc"
    # each command shut its Redis down (neither left it running nor killed it)
    assert (data_dir / "redis.log").read_text().count("ready to exit") == 2
    client = redis.Redis(unix_socket_path=str(embedded_socket_path(data_dir)), socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


RETRY_SCRIPT = """
import sys, threading, time
from bienc.config.settings import Settings
from bienc.queue.celery_app import INGEST_QUEUE, app
from bienc.runtime import Role, build_runtime

tries = []
second = threading.Event()

@app.task(name="tests.retry_once", bind=True)
def retry_once(self):
    tries.append(self.request.retries)
    if len(tries) == 1:
        raise self.retry(countdown=0.2, max_retries=3)
    second.set()

runtime = build_runtime(Settings(), Role.DEMO)
with runtime.serving():
    runtime.app.send_task("tests.retry_once", queue=INGEST_QUEUE)
    second.wait(20)
print("tries", tries)
"""


def test_a_task_that_retries_runs_again_on_the_in_process_worker(tmp_path: Path) -> None:
    """A batch held by a reindex's switch or a store outage is retried (self.retry): on the
    embedded queue that next try must reach the in-process worker, not a default broker.
    In a process of its own: this one's Celery app has served other tests' brokers."""
    script = tmp_path / "retry.py"
    script.write_text(RETRY_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120,
                            env=bienc_env(data_dir=str(tmp_path / "data")))
    assert result.returncode == 0, result.stderr
    assert "tries [0, 1]" in result.stdout, result.stdout + result.stderr
