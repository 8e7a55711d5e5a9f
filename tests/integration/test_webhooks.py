"""Job webhooks end to end: a real `bienc serve` (embedded queue, in-process worker, the real
model) and a real receiver on 127.0.0.1; the claim of a delivery over the test Redis; and the
embedded `bienc ingest`, killed while a webhook waits for its next attempt."""

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

from bienc.queue.broker import embedded_socket_path
from bienc.queue.jobs import BatchOutcome, JobTracker
from tests.integration.conftest import (
    BIENC,
    bienc_env,
    embedded_unacknowledged,
    run_bienc,
    stop_embedded_redis,
    write_jsonl,
)
from tests.integration.test_api import SHORT, Server, serve
from tests.webhook_receiver import SECRET, Receiver, closed_port, documented_verify, receiver

MAX_ATTEMPTS = 3
WEBHOOKS = {"webhook_allowed_hosts": "127.0.0.1", "webhook_secret": SECRET,
            "webhook_max_attempts": str(MAX_ATTEMPTS), "webhook_backoff_s": "0.2",
            "webhook_backoff_max_s": "0.5", "webhook_timeout_s": "3"}


# The claim: once per end of a job, by whichever write ends it


def test_a_webhook_is_claimed_once_each_time_its_job_ends(redis_db: redis.Redis) -> None:
    fired: list[tuple[str, int]] = []
    jobs = JobTracker(redis_db, ttl_s=600, notify=lambda job_id, round_: fired.append((job_id, round_)))
    job = jobs.create("c", accepted=4, rejected={}, callback_url="http://127.0.0.1/hook")
    assert jobs.get(job).webhook.state == "waiting"  # type: ignore[union-attr]
    jobs.record_batch(job, 0, BatchOutcome(indexed=2))
    assert fired == []
    jobs.record_batch(job, 1, BatchOutcome(failures={"c": "dead", "d": "dead"}))
    jobs.record_batch(job, 1, BatchOutcome(failures={"c": "dead", "d": "dead"}))  # redelivered
    assert fired == [(job, 1)]
    status = jobs.get(job)
    assert status is not None and status.state == "completed_with_errors"
    assert status.webhook is not None and (status.webhook.state, status.webhook.attempts) == ("pending", 0)

    jobs.reopen_batch(job, 1, ["c", "d"])  # `bienc jobs retry`: the job runs again ...
    assert jobs.get(job).webhook.state == "waiting"  # type: ignore[union-attr]
    jobs.note_webhook(job, 1, "delivered")  # ... and the first round's late news is ignored
    assert jobs.get(job).webhook.state == "waiting"  # type: ignore[union-attr]
    assert jobs.start_webhook_attempt(job, 1) == 0
    jobs.record_batch(job, 1, BatchOutcome(indexed=2))  # ... and ends again: a new round
    assert fired == [(job, 1), (job, 2)]
    assert jobs.webhook_url(job, 1) is None and jobs.webhook_url(job, 2) == "http://127.0.0.1/hook"
    assert jobs.start_webhook_attempt(job, 2) == 1
    jobs.note_webhook(job, 2, "retrying", "attempt 1: answered 500")
    assert jobs.start_webhook_attempt(job, 2) == 2
    jobs.note_webhook(job, 2, "delivered")
    assert jobs.start_webhook_attempt(job, 2) == 0 and jobs.webhook_url(job, 2) is None
    hook = jobs.get(job).webhook  # type: ignore[union-attr]
    assert hook is not None and (hook.state, hook.attempts, hook.last_error) == ("delivered", 2, None)

    reindex = jobs.create("c", 0, {}, kind="reindex", open_=True, callback_url="http://127.0.0.1/r")
    jobs.set_total(reindex, 3)
    assert fired[-1][0] != reindex  # open: not ended, whatever its counts
    jobs.close(reindex, "cancelled", "cancelled by a test")  # ends early, documents still queued
    assert fired[-1] == (reindex, 1)
    rejected = jobs.create("c", 0, {"line 1": "invalid JSON"}, callback_url="http://127.0.0.1/x")
    assert fired[-1] == (rejected, 1)  # nothing to queue: it ended as it was created
    plain = jobs.create("c", 1, {})
    jobs.record_batch(plain, 0, BatchOutcome(indexed=1))
    assert plain not in {job_id for job_id, _ in fired}
    assert jobs.get(plain).webhook is None  # type: ignore[union-attr]
    assert jobs.get(plain).to_dict()["webhook"] is None  # type: ignore[union-attr]


# Over real HTTP, with the worker that runs jobs


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("serve-webhooks"), bienc_env(**WEBHOOKS)) as running:
        yield running


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _webhook_done(api: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """The job's status once its webhook is delivered or has failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if status["webhook"]["state"] in ("delivered", "failed"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_a_finished_ingest_and_reindex_are_posted_signed(api: httpx.Client, hooks: Receiver) -> None:
    verify = documented_verify()
    accepted = api.post("/v1/collections/hooked/documents",
                        json={"documents": SHORT, "callback_url": hooks.url("/done")})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    status = _webhook_done(api, job_id)
    assert status["webhook"] == {**status["webhook"], "url": hooks.url("/done"),
                                 "state": "delivered", "attempts": 1, "last_error": None}
    [got] = hooks.wait_for("/done")
    assert verify(SECRET, got.headers["X-Bienc-Signature"], got.body)
    assert got.headers["X-Bienc-Delivery"] == f"{job_id}.1"
    posted = json.loads(got.body)
    assert posted == {k: v for k, v in status.items() if k != "webhook"}  # the final status
    assert (posted["state"], posted["indexed"], posted["queued"]) == ("completed", len(SHORT), 0)

    started = api.post("/v1/collections/hooked/reindex",
                       json={"chunk_tokens": 64, "callback_url": hooks.url("/reindexed")})
    assert started.status_code == 202, started.text
    reindexed = _webhook_done(api, started.json()["job_id"])
    assert reindexed["webhook"]["state"] == "delivered"
    [got] = hooks.wait_for("/reindexed")
    assert verify(SECRET, got.headers["X-Bienc-Signature"], got.body)
    posted = json.loads(got.body)
    assert (posted["kind"], posted["state"], posted["indexed"]) == ("reindex", "completed", len(SHORT))

    group_a = sum(1 for d in SHORT if d.get("metadata", {}).get("group") == "a")
    deleting = api.post("/v1/collections/hooked/delete",
                        json={"filter": {"group": "a"}, "callback_url": hooks.url("/deleted")})
    assert deleting.status_code == 202, deleting.text
    assert _webhook_done(api, deleting.json()["job_id"])["webhook"]["state"] == "delivered"
    [got] = hooks.wait_for("/deleted")
    assert verify(SECRET, got.headers["X-Bienc-Signature"], got.body)
    posted = json.loads(got.body)
    assert (posted["kind"], posted["state"], posted["deleted"]) == ("delete", "completed", group_a)


def test_a_callback_the_service_may_not_call_is_refused_at_submission(server: Server,
                                                                      api: httpx.Client,
                                                                      hooks: Receiver) -> None:
    jobs_before = api.get("/v1/jobs").json()["total"]
    for url in ("http://example.com/hook", "http://localhost:8000/v1/collections",
                "http://169.254.169.254/latest/meta-data/", "ftp://127.0.0.1/hook",
                "http://user:secret@127.0.0.1/hook"):
        refused = api.post("/v1/collections/refused/documents",
                           json={"documents": SHORT[:1], "callback_url": url})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"].startswith("field 'callback_url': "), refused.text
    detail = api.post("/v1/collections/refused/documents",
                      json={"documents": SHORT[:1], "callback_url": "http://example.com/hook"}
                      ).json()["detail"]
    assert detail == ("field 'callback_url': host 'example.com' (port 80) is not in "
                      "BIENC_WEBHOOK_ALLOWED_HOSTS")
    reindex = api.post("/v1/collections/hooked/reindex",
                       json={"lexical": True, "callback_url": "http://example.com/hook"})
    assert reindex.status_code == 422 and "callback_url" in reindex.json()["detail"]
    upload = api.post("/v1/collections/refused/files",
                      files=[("files", ("a.txt", b"some text", "text/plain"))],
                      data={"callback_url": "http://example.com/hook"})
    assert upload.status_code == 422 and "callback_url" in upload.json()["detail"], upload.text
    delete = api.post("/v1/collections/hooked/delete",
                      json={"filter": {"group": "a"}, "callback_url": "http://example.com/hook"})
    assert delete.status_code == 422 and "callback_url" in delete.json()["detail"], delete.text
    assert api.get("/v1/jobs").json()["total"] == jobs_before  # nothing was queued
    assert api.get("/v1/collections/refused").status_code == 404

    uploaded = api.post("/v1/collections/uploaded/files",
                        files=[("files", ("a.txt", b"Lighthouses guide ships.", "text/plain"))],
                        data={"callback_url": hooks.url("/uploaded")})
    assert uploaded.status_code == 202, uploaded.text
    assert _webhook_done(api, uploaded.json()["job_id"])["webhook"]["state"] == "delivered"
    assert json.loads(hooks.wait_for("/uploaded")[0].body)["indexed"] == 1


def test_a_failing_receiver_is_retried_then_the_failure_is_recorded(api: httpx.Client,
                                                                    hooks: Receiver) -> None:
    hooks.answers["/flaky"] = [500, 503]
    flaky = api.post("/v1/collections/hooked/documents",
                     json={"documents": SHORT[:2], "callback_url": hooks.url("/flaky")})
    assert flaky.status_code == 202, flaky.text
    status = _webhook_done(api, flaky.json()["job_id"])
    assert (status["webhook"]["state"], status["webhook"]["attempts"]) == ("delivered", 3)
    attempts = hooks.wait_for("/flaky", 3)
    assert len({a.headers["X-Bienc-Delivery"] for a in attempts}) == 1  # one delivery
    assert len({a.body for a in attempts}) == 1

    nobody = f"http://127.0.0.1:{closed_port()}/hook"
    lost = api.post("/v1/collections/hooked/documents",
                    json={"documents": SHORT[:1], "callback_url": nobody})
    status = _webhook_done(api, lost.json()["job_id"])
    hook = status["webhook"]
    assert (hook["state"], hook["attempts"]) == ("failed", MAX_ATTEMPTS)
    assert hook["last_error"].startswith(f"attempt {MAX_ATTEMPTS}: OSError: cannot connect to "
                                         "127.0.0.1"), hook
    assert "Connection refused" in hook["last_error"]
    assert status["state"] == "completed"  # the job itself is not affected

    hooks.answers["/refusing"] = [500] * 10
    refusing = api.post("/v1/collections/hooked/documents",
                        json={"documents": SHORT[:1], "callback_url": hooks.url("/refusing")})
    status = _webhook_done(api, refusing.json()["job_id"])
    assert status["webhook"]["state"] == "failed"
    assert status["webhook"]["last_error"] == f"attempt {MAX_ATTEMPTS}: answered 500: receiver says no"
    assert len(hooks.at("/refusing")) == MAX_ATTEMPTS


# The embedded command line


def test_the_embedded_ingest_stays_until_its_webhook_is_delivered(tmp_path: Path) -> None:
    records = write_jsonl(tmp_path / "docs.jsonl", SHORT)
    env = bienc_env(**WEBHOOKS)
    refused = run_bienc("ingest", str(records), "-c", "k", "--callback-url",
                        "http://example.com/hook", cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert "--callback-url" in refused.stderr and "BIENC_WEBHOOK_ALLOWED_HOSTS" in refused.stderr
    assert not (tmp_path / ".bienc").exists()  # refused before anything was read or started
    with receiver() as hooks:
        hooks.answers["/cli"] = [500]
        done = run_bienc("ingest", str(records), "-c", "k", "--json", "--callback-url",
                         hooks.url("/cli"), cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert (status["webhook"]["state"], status["webhook"]["attempts"]) == ("delivered", 2)
        assert len(hooks.at("/cli")) == 2  # delivered before the command returned
        assert documented_verify()(SECRET, hooks.at("/cli")[1].headers["X-Bienc-Signature"],
                                   hooks.at("/cli")[1].body)


def _embedded_job(data_dir: Path, job_id: str | None = None) -> dict[str, str]:
    client = redis.Redis(unix_socket_path=str(embedded_socket_path(data_dir)), socket_timeout=5)
    try:
        keys = [f"bienc:job:{job_id}"] if job_id else [
            k.decode() for k in client.scan_iter("bienc:job:*") if k.count(b":") == 2]
        return {k.decode(): v.decode() for k, v in client.hgetall(keys[0]).items()} if keys else {}
    finally:
        client.close()


def _hook_state(data_dir: Path) -> str | None:
    """The webhook state of the one job in the embedded Redis, if it is up yet."""
    if not embedded_socket_path(data_dir).exists():
        return None
    try:
        return _embedded_job(data_dir).get("hook_state")
    except redis.RedisError:
        return None


def test_a_webhook_waiting_for_its_next_attempt_outlives_a_killed_process(tmp_path: Path) -> None:
    """kill -9 while a webhook waits for its second attempt: its message stays in the embedded
    queue, unacknowledged, and the next process on the folder makes the attempt."""
    data_dir = tmp_path / ".bienc"
    env = bienc_env(**{**WEBHOOKS, "webhook_backoff_s": "10", "webhook_backoff_max_s": "10"})
    with receiver() as hooks:
        hooks.answers["/later"] = [503]
        killed = subprocess.Popen([*BIENC, "ingest", str(write_jsonl(tmp_path / "a.jsonl", SHORT)),
                                   "-c", "k", "--callback-url", hooks.url("/later")],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 240
            # retrying, and its next attempt's message taken (not still in the queue)
            while _hook_state(data_dir) != "retrying" or embedded_unacknowledged(data_dir) != 1:
                assert killed.poll() is None and time.monotonic() < deadline, "no retry came"
                time.sleep(0.1)
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
            assert len(hooks.at("/later")) == 1
            again = run_bienc("ingest", str(write_jsonl(tmp_path / "b.jsonl", SHORT[:1])), "-c", "k",
                              cwd=tmp_path, env=env)
            assert again.returncode == 0, again.stderr
            assert "queued again 1 batches that a stopped process left unfinished" in again.stderr
            job = _embedded_job(data_dir, json.loads(hooks.at("/later")[0].body)["job_id"])
            assert (job["hook_state"], job["hook_attempts"]) == ("delivered", "2")
            assert len(hooks.at("/later")) == 2
        finally:
            if killed.poll() is None:
                killed.kill()
            stop_embedded_redis(data_dir)
