import threading
import time

import redis

from bienc.ingest.producer import wait_for_job
from bienc.queue.jobs import BatchOutcome, JobStatus, JobTracker, derive_state


def test_state_follows_the_counts() -> None:
    assert derive_state(10, 0, 0, 1, retrying=False, started=False) == "queued"
    assert derive_state(10, 3, 0, 0, retrying=False, started=True) == "running"
    assert derive_state(10, 3, 0, 0, retrying=True, started=True) == "retrying"
    assert derive_state(10, 8, 2, 0, retrying=False, started=True) == "completed"
    assert derive_state(10, 8, 0, 2, retrying=False, started=True) == "completed_with_errors"
    assert derive_state(2, 0, 0, 2, retrying=False, started=True) == "failed"


def test_a_redelivered_batch_is_not_counted_twice(redis_db: redis.Redis) -> None:
    jobs = JobTracker(redis_db, ttl_s=60)
    job_id = jobs.create("c", accepted=5, rejected={"line 3": "invalid JSON"})
    status = jobs.get(job_id)
    assert status is not None
    assert (status.state, status.total, status.queued, status.failed) == ("queued", 6, 5, 1)
    jobs.note_retry(job_id, "Qdrant did not answer")
    assert jobs.get(job_id).state == "retrying"  # type: ignore[union-attr]
    outcome = BatchOutcome(indexed=2, skipped=1, failures={"d4": "encoding failed"})
    jobs.record_batch(job_id, 0, outcome)
    jobs.record_batch(job_id, 0, outcome)  # the same batch delivered again
    jobs.record_batch(job_id, 1, BatchOutcome(indexed=1))
    status = jobs.get(job_id)
    assert status is not None
    assert (status.indexed, status.skipped, status.failed, status.queued) == (3, 1, 2, 0)
    assert status.state == "completed_with_errors"
    assert status.failures == {"line 3": "invalid JSON", "d4": "encoding failed"}
    assert status.last_error is None
    assert 0 < redis_db.ttl(f"bienc:job:{job_id}") <= 60


def test_a_job_is_kept_while_queued_or_dead_lettered_then_expires(redis_db: redis.Redis) -> None:
    jobs = JobTracker(redis_db, ttl_s=60)
    job_id = jobs.create("c", accepted=3, rejected={})
    keys = [f"bienc:job:{job_id}{suffix}" for suffix in ("", ":batches")]

    def ttls() -> list[int]:
        return [int(redis_db.ttl(key)) for key in keys]

    assert ttls()[0] == -1  # documents queued: kept however long they wait
    jobs.record_batch(job_id, 0, BatchOutcome(indexed=1))
    assert ttls() == [-1, -1]
    docs = [{"id": "b", "text": "x"}, {"id": "c", "text": "y"}]
    jobs.dead_letter(job_id, 1, "c", docs, "store unavailable")
    jobs.record_batch(job_id, 1, BatchOutcome(failures={"b": "dead", "c": "dead"}))
    assert ttls() == [-1, -1]  # finished, but its dead letters can still be replayed
    jobs.reopen_batch(job_id, 1, ["b", "c"])  # a replay: queued again
    jobs.forget_dead_letter(job_id, 1)
    assert ttls() == [-1, -1]
    jobs.dead_letter(job_id, 1, "c", docs, "store unavailable again")
    jobs.record_batch(job_id, 1, BatchOutcome(failures={"b": "dead", "c": "dead"}))
    assert jobs.delete_dead_letters(job_id) == 1
    assert all(0 < ttl <= 60 for ttl in ttls())  # finished, nothing to replay: expires
    assert jobs.dead_letters(job_id) == {} and job_id not in jobs.jobs_with_dead_letters()
    assert jobs.delete_dead_letters(job_id) == 0


def test_unknown_job_is_none(redis_db: redis.Redis) -> None:
    assert JobTracker(redis_db, ttl_s=60).get("nope") is None


def test_waiting_wakes_on_each_recorded_batch_not_on_the_poll(redis_db: redis.Redis) -> None:
    """`bienc ingest --wait` returns when the last batch is recorded. The worker here records
    a batch only after the waiter has seen the one before, and the poll interval (60 s) is
    longer than the wait allowed (20 s): without a change notice the wait times out."""
    jobs = JobTracker(redis_db, ttl_s=60)
    job_id = jobs.create("c", accepted=3, rejected={})
    seen: list[JobStatus] = []
    progressed = threading.Condition()

    def on_progress(status: JobStatus) -> None:
        with progressed:
            seen.append(status)
            progressed.notify_all()

    def worker() -> None:
        for batch_no, (queued, indexed) in enumerate([(3, 2), (1, 1)]):
            with progressed:
                if not progressed.wait_for(lambda q=queued: bool(seen) and seen[-1].queued == q,
                                           timeout=30):
                    return
            jobs.record_batch(job_id, batch_no, BatchOutcome(indexed=indexed))

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        status = wait_for_job(jobs, job_id, timeout_s=20, poll_s=60, on_progress=on_progress)
    finally:
        thread.join()
    assert (status.state, status.indexed, status.queued) == ("completed", 3, 0)
    assert [s.queued for s in seen] == [3, 1, 0]
    channel = f"bienc:job-changed:{job_id}".encode()
    for _ in range(100):  # the server drops the waiter's subscription when it disconnects
        if redis_db.pubsub_numsub(channel) == [(channel, 0)]:
            break
        time.sleep(0.05)
    assert redis_db.pubsub_numsub(channel) == [(channel, 0)]
