import redis

from core.jobs import BatchOutcome, JobTracker, derive_state


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


def test_unknown_job_is_none(redis_db: redis.Redis) -> None:
    assert JobTracker(redis_db, ttl_s=60).get("nope") is None
