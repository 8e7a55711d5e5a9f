"""A reindex killed or failing at named points (BIENC_CRASH_AT, bienc/config/crash.py), with
real processes: the `bienc` commands on the embedded default, `bienc serve`, and `bienc worker`
over a shared Redis. After each fault the collection is read again as a user would: every
accepted document is there once, searches answer, writes are not held, and `--resume` or
`--abort` (the API's resume and abort) reach a clean state.

Points: reindex.fencing.entered (a kill with writes held), reindex.fencing.switched (a kill
after the switch, before the state says so and the old collection is dropped),
reindex.fencing.drained:raise (a finish that raises before the switch).

Each reindex here only drops or adds the lexical vectors, so that it copies the stored dense
vectors and loads no model: the processes that ingest and search do."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bienc.queue.reindex import ReindexRegistry
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import (
    BIENC,
    bienc_env,
    run_bienc,
    run_json,
    stop_embedded_redis,
    stop_gracefully,
    write_jsonl,
)
from tests.integration.test_api import _wait_for_job, serve

TOPICS = ["tides", "glaciers", "orchids", "comets", "violins", "harbours"]
NEEDLE = {"id": "needle", "title": "Quokka census",
          "text": "The quokka census on Rottnest Island counted twelve thousand animals in spring."}
NEEDLE_QUERY = "How many quokkas live on Rottnest Island?"
KILLED = -signal.SIGKILL


def _documents(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "title": f"Report {i} on {TOPICS[i % len(TOPICS)]}",
             "text": f"Note {i} describes the {TOPICS[i % len(TOPICS)]} seen near station {i}."}
            for i in range(n)]


ACCEPTED = [*_documents(30, "d"), NEEDLE]
LATE = _documents(4, "late")  # ingested after the fault
ALL_IDS = sorted(d["id"] for d in [*ACCEPTED, *LATE])


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The embedded default's environment, with the documents ingested into collection c.
    A killed process leaves its embedded Redis running: stopped at the end."""
    data = tmp_path / "data"
    env = bienc_env(data_dir=str(data), ingest_batch_size="8")
    write_jsonl(tmp_path / "late.jsonl", LATE)
    ingest = run_bienc("ingest", str(write_jsonl(tmp_path / "docs.jsonl", ACCEPTED)), "-c", "c",
                       cwd=tmp_path, env=env)
    assert ingest.returncode == 0, ingest.stderr
    yield env
    stop_embedded_redis(data)


def _crashed(point: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_bienc(*args, cwd=cwd, env={**env, "BIENC_CRASH_AT": point})


def _collections(cwd: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in run_json("info", cwd=cwd, env=env)["collections"]}


def _exported_ids(cwd: Path, env: dict[str, str], name: str) -> list[str]:
    exported = run_bienc("export", name, cwd=cwd, env=env)
    assert exported.returncode == 0, exported.stderr
    return sorted(json.loads(line)["id"] for line in exported.stdout.splitlines())


def _clean(cwd: Path, env: dict[str, str], physical: str, lexical: bool) -> None:
    """Only collection c, served by `physical`, no reindex, every document once."""
    collections = _collections(cwd, env)
    assert list(collections) == ["c"], collections
    info = collections["c"]
    assert (info["physical"], info["documents"], info["lexical"] is not None, "reindex" in info) == \
        (physical, len(ALL_IDS), lexical, False), info
    assert _exported_ids(cwd, env, "c") == ALL_IDS


def test_a_reindex_killed_in_its_fence_or_after_its_switch_goes_on_and_loses_nothing(
        tmp_path: Path, embedded: dict[str, str]) -> None:
    env = embedded
    killed = _crashed("reindex.fencing.entered", "reindex", "c", "--no-lexical", cwd=tmp_path, env=env)
    assert killed.returncode == KILLED, killed.stderr
    info = _collections(tmp_path, env)["c"]
    assert (info["physical"], info["reindex"]["state"]) == ("c@1", "fencing"), info
    # The next process that works the queue takes the finish up again (its message was never
    # acknowledged, and the holder of its lease is dead), and its own writes go through.
    late = run_bienc("ingest", str(tmp_path / "late.jsonl"), "-c", "c", cwd=tmp_path, env=env, timeout=180)
    assert late.returncode == 0, late.stderr
    info = _collections(tmp_path, env)["c"]
    assert (info["physical"], info["lexical"], info["documents"], "reindex" in info) == \
        ("c@2", None, len(ALL_IDS), False), info

    # killed after the name switched, before the state said so or the old one was dropped
    killed = _crashed("reindex.fencing.switched", "reindex", "c", "--lexical", cwd=tmp_path, env=env)
    assert killed.returncode == KILLED, killed.stderr
    info = _collections(tmp_path, env)["c"]
    assert (info["physical"], info["reindex"]["state"]) == ("c@3", "fencing"), info
    hits = run_json("search", NEEDLE_QUERY, "-c", "c", cwd=tmp_path, env=env)
    assert hits[0]["id"] == "needle"  # searches answer, from the new collection
    resumed = run_bienc("reindex", "c", "--resume", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the reindex of 'c' from fencing" in resumed.stderr
    _clean(tmp_path, env, "c@3", lexical=True)
    again = run_bienc("reindex", "c", "--resume", cwd=tmp_path, env=env)
    assert again.returncode == 1 and "no reindex of 'c' to resume" in again.stderr


def test_a_finish_that_raises_stops_without_holding_writes_and_resume_finishes_it(
        tmp_path: Path, embedded: dict[str, str]) -> None:
    env = embedded
    failed = _crashed("reindex.fencing.drained:raise", "reindex", "c", "--no-lexical",
                      cwd=tmp_path, env=env)
    assert failed.returncode == 1, failed.stderr
    assert "InjectedFault" in failed.stdout and "bienc reindex c --resume" in failed.stdout
    info = _collections(tmp_path, env)["c"]
    assert info["physical"] == "c@1" and info["reindex"]["state"] == "failed", info
    assert info["reindex"]["failed_in"] == "fencing" and "InjectedFault" in info["reindex"]["error"]

    late = run_bienc("ingest", str(tmp_path / "late.jsonl"), "-c", "c", cwd=tmp_path, env=env, timeout=180)
    assert late.returncode == 0, late.stderr  # not held: written to c@1, marked for the copy
    refused = run_bienc("reindex", "c", "--chunk-tokens", "64", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "failed (in fencing)" in refused.stderr
    assert "bienc reindex c --resume" in refused.stderr and "--abort" in refused.stderr

    resumed = run_bienc("reindex", "c", "--resume", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    _clean(tmp_path, env, "c@2", lexical=False)  # the late documents were copied by the new fence
    hits = run_json("search", NEEDLE_QUERY, "-c", "c", cwd=tmp_path, env=env)
    assert hits[0]["id"] == "needle"


def _finished(api: httpx.Client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    """A reindex job's status once it ended (its counts alone do not say: it is open)."""
    deadline = time.monotonic() + timeout_s
    while (status := api.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running", "retrying"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    return dict(status)


def test_over_the_api_a_stopped_reindex_refuses_a_cancel_naming_its_state_and_aborts(
        tmp_path: Path) -> None:
    env = bienc_env(ingest_batch_size="8", crash_at="reindex.fencing.drained:raise")
    with serve(tmp_path, env) as server, server.client() as api:
        _wait_for_job(api, api.post("/v1/collections/c/documents",
                                    json={"documents": ACCEPTED}).json()["job_id"])
        job_id = api.post("/v1/collections/c/reindex", json={"lexical": False}).json()["job_id"]
        status = _finished(api, job_id)
        assert status["state"] == "failed" and "reindex/resume" in status["last_error"], status
        info = api.get("/v1/collections/c").json()
        assert info["physical"] == "c@1" and info["reindex"]["state"] == "failed", info

        cancel = api.post(f"/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 409 and "failed (in fencing)" in cancel.json()["detail"]
        for refused in (api.post("/v1/collections/c/reindex", json={}), api.delete("/v1/collections/c")):
            assert refused.status_code == 409 and "failed (in fencing)" in refused.json()["detail"]
        late = api.post("/v1/collections/c/documents", json={"documents": LATE}).json()["job_id"]
        _wait_for_job(api, late)  # writes are not held

        aborted = api.post("/v1/collections/c/reindex/abort")
        assert aborted.status_code == 202, aborted.text
        assert aborted.json() == {"job_id": job_id, "collection": "c", "from": "failed (in fencing)"}
        status = _finished(api, job_id)
        assert status["state"] == "cancelled" and "--abort" in status["last_error"], status
        info = api.get("/v1/collections/c").json()
        assert (info["physical"], info["documents"], "reindex" in info) == ("c@1", len(ALL_IDS), False)
        assert [c["name"] for c in api.get("/v1/collections").json()["collections"]] == ["c"]
        assert api.get("/v1/collections/c@2").status_code == 404  # the new one is dropped
        nothing = api.post("/v1/collections/c/reindex/resume")
        assert nothing.status_code == 409 and "no reindex of 'c' to resume" in nothing.json()["detail"]
        hits = api.post("/v1/collections/c/search", json={"query": NEEDLE_QUERY}).json()["results"][0]
        assert hits[0]["id"] == "needle"


def test_a_worker_killed_in_the_fence_holds_writes_for_a_lease_not_the_visibility_timeout(
        tmp_path: Path, redis_db: redis.Redis) -> None:
    # the killed worker's message comes back after 900 s: only the lease lets writes through
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"), lease_s="2",
                    visibility_timeout_s="900", ingest_batch_size="8")
    docs, late = write_jsonl(tmp_path / "docs.jsonl", ACCEPTED), write_jsonl(tmp_path / "late.jsonl", LATE)
    with (tmp_path / "worker-1.log").open("w") as log:
        first = subprocess.Popen([*BIENC, "worker"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                 env={**env, "BIENC_CRASH_AT": "reindex.fencing.entered"})
        try:
            ingest = run_bienc("ingest", str(docs), "-c", "k", "--wait", cwd=tmp_path, env=env)
            assert ingest.returncode == 0, ingest.stderr
            started = run_bienc("reindex", "k", "--no-lexical", cwd=tmp_path, env=env)
            assert started.returncode == 0, started.stderr
            assert first.wait(timeout=180) == KILLED
        finally:
            if first.poll() is None:
                first.kill()
    fence = ReindexRegistry(redis_db, 2).get("k")
    assert fence is not None and fence.state == "fencing"

    with (tmp_path / "worker-2.log").open("w") as log:
        second = subprocess.Popen([*BIENC, "worker"], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            started_at = time.monotonic()
            written = run_bienc("ingest", str(late), "-c", "k", "--wait", cwd=tmp_path, env=env, timeout=240)
            assert written.returncode == 0, written.stderr
            assert time.monotonic() - started_at < 240
            stopped = ReindexRegistry(redis_db, 2).get("k")
            assert stopped is not None and stopped.where == "failed (in fencing)"
            assert "lease lapsed" in (stopped.error or "")
            resumed = run_bienc("reindex", "k", "--resume", "--wait", cwd=tmp_path, env=env)
            assert resumed.returncode == 0, resumed.stderr
        finally:
            stop_gracefully(second)
    collections = _collections(tmp_path, env)
    assert [(c["name"], c["physical"], c["documents"], c["lexical"]) for c in collections.values()] == \
        [("k", "k@2", len(ALL_IDS), None)]
    assert _exported_ids(tmp_path, env, "k") == ALL_IDS
