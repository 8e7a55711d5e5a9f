"""`bienc reindex` with real processes: search and ingest through the API while a collection is
rebuilt with other chunks, a worker killed mid-reindex, cancel, a second reindex refused, and
a model whose weights changed under the same name."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import BIENC, bienc_env, run_bienc, run_json, write_jsonl
from tests.integration.test_api import Server, _wait_for_job, serve

TOPICS = ["tides", "glaciers", "orchids", "comets", "violins", "harbours", "falcons", "canyons"]
NEEDLE = {"id": "needle", "title": "Quokka census",
          "text": "The quokka census on Rottnest Island counted twelve thousand animals in spring. "
                  + " ".join(f"Survey line {i} crossed the salt lakes near the lighthouse."
                             for i in range(12))}
NEEDLE_QUERY = "How many quokkas live on Rottnest Island?"


def _documents(n: int, prefix: str = "d") -> list[dict[str, Any]]:
    """Documents of about 200 tokens: two 128-token chunks each, four or five of 64."""
    docs = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        body = " ".join(f"Note {j} of report {i} describes the {topic} seen near station {j + i}."
                        for j in range(14))
        docs.append({"id": f"{prefix}{i}", "title": f"Report {i} on {topic}", "text": body,
                     "metadata": {"topic": topic}})
    return docs


def _job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # small batches: a reindex of a few hundred documents is many tasks, so that the ingests
    # and deletes of the test land in the middle of it
    with serve(tmp_path, bienc_env(ingest_batch_size="25")) as running:
        yield running


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def test_search_and_ingest_keep_working_through_a_reindex(api: httpx.Client) -> None:
    live = [*_documents(240), NEEDLE]
    _wait_for_job(api, api.post("/v1/collections/live/documents", json={"documents": live}).json()["job_id"])
    before = api.get("/v1/collections/live").json()
    assert (before["physical"], before["chunking"]["tokens"], before["documents"]) == ("live@1", 128, 241)

    started = api.post("/v1/collections/live/reindex", json={"chunk_tokens": 64, "chunk_overlap": 8})
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    second = api.post("/v1/collections/live/reindex", json={"chunk_tokens": 96})
    assert second.status_code == 409 and job_id in second.json()["detail"]

    added = _documents(20, prefix="new")
    ingest_job = api.post("/v1/collections/live/documents", json={"documents": added}).json()["job_id"]
    deleted = api.delete("/v1/collections/live/documents/d7")
    assert deleted.status_code == 200, deleted.text
    changed = {**live[3], "text": live[3]["text"] + " A late correction mentions kangaroos."}
    change_job = api.post("/v1/collections/live/documents", json={"documents": [changed]}).json()["job_id"]

    searches = failures = 0
    seen_states = set()
    deadline = time.monotonic() + 600
    while True:
        status = _job(api, job_id)
        response = api.post("/v1/collections/live/search", json={"query": NEEDLE_QUERY, "top_k": 5})
        searches += 1
        if response.status_code != 200 or response.json()["results"][0][0]["id"] != "needle":
            failures += 1
        info = api.get("/v1/collections/live").json()
        seen_states.add(info.get("reindex", {}).get("state"))
        if status["queued"] == 0 and status["state"] != "running":
            break
        assert time.monotonic() < deadline, status
    assert status["state"] == "completed", status
    assert failures == 0 and searches > 5, (failures, searches)
    assert "copying" in seen_states  # the loop ran while the copy did
    _wait_for_job(api, ingest_job)
    _wait_for_job(api, change_job)

    after = api.get("/v1/collections/live").json()
    assert after["physical"] == "live@2" and after["chunking"] == {"enabled": True, "tokens": 64,
                                                                   "overlap": 8}
    assert after["documents"] == 241 + 20 - 1  # the ingest and the delete of the meantime
    assert after["points"] > before["points"]  # smaller chunks, more of them
    assert "reindex" not in after
    assert api.get("/v1/collections/live/documents/d7").status_code == 404
    assert api.get("/v1/collections/live/documents/new19").status_code == 200
    assert "kangaroos" in api.get("/v1/collections/live/documents/d3").json()["text"]
    names = {c["name"]: c["physical"] for c in api.get("/v1/collections").json()["collections"]}
    assert names == {"live": "live@2"}  # the old physical collection is gone
    hits = api.post("/v1/collections/live/search", json={"query": "late correction kangaroos",
                                                          "top_k": 1}).json()["results"][0]
    assert hits[0]["id"] == "d3"


def test_a_cancelled_reindex_leaves_the_live_collection_as_it_was(api: httpx.Client) -> None:
    _wait_for_job(api, api.post("/v1/collections/c/documents",
                                json={"documents": _documents(150)}).json()["job_id"])
    before = api.get("/v1/collections/c").json()
    job_id = api.post("/v1/collections/c/reindex", json={"chunk_tokens": 64}).json()["job_id"]
    cancelled = api.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    deadline = time.monotonic() + 120
    while (status := _job(api, job_id))["state"] != "cancelled":
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["queued"] == 0 or status["state"] == "cancelled"
    after = api.get("/v1/collections/c").json()
    assert {k: after[k] for k in ("physical", "chunking", "documents", "points")} == \
        {k: before[k] for k in ("physical", "chunking", "documents", "points")}
    collections = api.get("/v1/collections").json()["collections"]
    assert [c["name"] for c in collections] == ["c"]
    deadline = time.monotonic() + 60
    while api.get("/v1/collections/c@2").status_code != 404:  # the partial one is dropped
        assert time.monotonic() < deadline
        time.sleep(0.2)
    again = api.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "not a running reindex" in again.json()["detail"]
    failing = api.post("/v1/collections/c/reindex", json={"model": "/no/such/model"}).json()["job_id"]
    deadline = time.monotonic() + 120
    while (status := _job(api, failing))["state"] not in ("failed", "completed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["state"] == "failed" and "/no/such/model" in status["last_error"]
    assert api.get("/v1/collections/c").json()["physical"] == before["physical"]
    assert [c["name"] for c in api.get("/v1/collections").json()["collections"]] == ["c"]
    assert api.post("/v1/collections/missing/reindex", json={}).status_code == 404
    bad = api.post("/v1/collections/c/reindex", json={"chunk_tokens": 32, "chunk_overlap": 40})
    assert bad.status_code == 422 and "chunk_overlap" in bad.json()["detail"]


def test_a_dense_collection_gains_lexical_vectors_without_encoding_again(tmp_path: Path) -> None:
    env = bienc_env(lexical="false")
    corpus = write_jsonl(tmp_path / "docs.jsonl", [*_documents(60), NEEDLE])
    assert run_bienc("ingest", str(corpus), "-c", "words", cwd=tmp_path, env=env).returncode == 0
    refused = run_bienc("search", "quokka", "-c", "words", "--mode", "hybrid", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "bienc reindex words --lexical" in refused.stderr
    before = run_json("info", "-c", "words", cwd=tmp_path, env=env)["collections"][0]

    # BIENC_BACKEND=torch here would load another model to encode: the copy must not need one
    reindexed = run_bienc("-v", "reindex", "words", "--lexical", cwd=tmp_path,
                          env={**env, "BIENC_MODEL": str(tmp_path / "no-such-model")})
    assert reindexed.returncode == 0, reindexed.stderr
    after = run_json("info", "-c", "words", cwd=tmp_path, env=env)["collections"][0]
    assert after["lexical"]["kind"] == "bm25" and before["lexical"] is None
    assert (after["documents"], after["points"], after["weights"]) == \
        (before["documents"], before["points"], before["weights"])
    hits = run_json("search", "Rottnest quokka census", "-c", "words", "--mode", "lexical",
                    cwd=tmp_path, env=env)
    assert hits[0]["id"] == "needle"
    dense = run_json("search", NEEDLE_QUERY, "-c", "words", "--mode", "dense", cwd=tmp_path, env=env)
    assert dense[0]["id"] == "needle"


def test_a_worker_killed_mid_reindex_leaves_the_old_collection_and_the_next_finishes(
        tmp_path: Path, redis_db: Any) -> None:
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"),
                    visibility_timeout_s="5", retry_backoff_max_s="2", ingest_batch_size="20")
    corpus = write_jsonl(tmp_path / "docs.jsonl", [*_documents(200), NEEDLE])
    log = (tmp_path / "worker-1.log").open("w")
    first = subprocess.Popen([*BIENC, "worker", "--loglevel", "INFO"], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        ingest = run_bienc("ingest", str(corpus), "-c", "k", "--wait", cwd=tmp_path, env=env)
        assert ingest.returncode == 0, ingest.stderr
        started = run_bienc("reindex", "k", "--chunk-tokens", "64", cwd=tmp_path, env=env)
        assert started.returncode == 0, started.stderr
        job_id = started.stdout.split()[1].rstrip(":")
        deadline = time.monotonic() + 300
        while run_json("jobs", "show", job_id, cwd=tmp_path, env=env)["indexed"] < 40:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    status = run_json("jobs", "show", job_id, cwd=tmp_path, env=env)
    assert status["queued"] > 0 and status["state"] == "running", status

    # the old collection still answers (the killed worker's store lock died with it)
    hits = run_json("search", NEEDLE_QUERY, "-c", "k", cwd=tmp_path, env=env)
    assert hits[0]["id"] == "needle"
    old = run_json("info", "-c", "k", cwd=tmp_path, env=env)["collections"][0]
    assert old["physical"] == "k@1" and old["reindex"]["job_id"] == job_id

    log = (tmp_path / "worker-2.log").open("w")
    second = subprocess.Popen([*BIENC, "worker", "--loglevel", "INFO"], cwd=tmp_path, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while (status := run_json("jobs", "show", job_id, cwd=tmp_path, env=env))["state"] != "completed":
            assert status["state"] in ("running", "retrying"), status
            assert time.monotonic() < deadline and second.poll() is None, status
            time.sleep(0.5)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
        log.close()
    assert (status["indexed"], status["failed"]) == (201, 0)
    new = run_json("info", "-c", "k", cwd=tmp_path, env=env)["collections"]
    assert [(c["name"], c["physical"], c["documents"], c["chunking"]["tokens"]) for c in new] == \
        [("k", "k@2", 201, 64)]
    assert run_json("search", NEEDLE_QUERY, "-c", "k", cwd=tmp_path, env=env)[0]["id"] == "needle"


def test_the_same_model_name_with_other_weights_is_refused(tmp_path: Path, model_path: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "models" / "minilm"
    shutil.copytree(model_path, copy)
    env = bienc_env(model=str(copy), backend="torch", dtype="float32")
    corpus = write_jsonl(tmp_path / "docs.jsonl", [NEEDLE])
    assert run_bienc("ingest", str(corpus), "-c", "w", cwd=tmp_path, env=env).returncode == 0
    recorded = run_json("info", "-c", "w", cwd=tmp_path, env=env)["collections"][0]
    assert recorded["model"] == "minilm" and len(recorded["weights"]) == 64

    weights = copy / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(n for n, t in tensors.items() if t.is_floating_point())
    tensors[name] = tensors[name] + 1e-3 * torch.randn_like(tensors[name])  # a changed copy
    save_file(tensors, str(weights), metadata={"format": "pt"})
    refused = run_bienc("search", "quokka", "-c", "w", cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert f"weights {recorded['weights'][:16]}..." in refused.stderr
    assert "but the model loaded as 'minilm' has weights" in refused.stderr
    ingest = run_bienc("ingest", str(corpus), "-c", "w", cwd=tmp_path, env=env)
    assert ingest.returncode == 1 and recorded["weights"][:16] in ingest.stderr
