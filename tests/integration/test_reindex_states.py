"""The reindex registry on real Redis: writers and fences ordered by sequence numbers, leases
that lapse, writers of dead processes, changes of state that check the state they leave, and
the answers a user gets (cancel after the finish started, resume and abort). No model: the
registry and the runtime's reindex calls alone; tests/faults/ runs whole reindexes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from bienc.config.errors import CollectionError
from bienc.config.settings import Settings
from bienc.config.topology import Role
from bienc.queue.leases import holder_dead, new_holder
from bienc.queue.reindex import ReindexRegistry, WriterLeaseLost
from bienc.runtime import Runtime, build_runtime
from tests.conftest import TEST_REDIS_URL


def _registry(client: redis.Redis, lease_s: float = 30.0, local: bool = False) -> ReindexRegistry:
    return ReindexRegistry(client, lease_s, local=local)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_fence_waits_for_the_writers_numbered_before_it_and_holds_the_later_ones(
        redis_db: redis.Redis) -> None:
    registry = _registry(redis_db)
    assert registry.begin("n", "job", {})
    reindex = registry.get("n")
    assert reindex is not None and reindex.state == "copying"
    with registry.writing("n") as early:
        assert early.mark and not early.hold  # copying: what it writes is copied again
        finisher = new_holder()
        assert registry.transition(reindex, "copying", "fencing", finisher)
        fence = registry.get("n")
        assert fence is not None and fence.fence_seq > reindex.begin_seq
        assert registry.writers_before("n", fence.fence_seq) == 1  # the early writer
        with registry.writing("n") as late:
            assert late.hold  # it registered after the fence: it sees it
            assert registry.writers_before("n", fence.fence_seq) == 1  # not waited for
    assert registry.writers_before("n", fence.fence_seq) == 0
    # a hold is ordered the same way
    with registry.writing("other") as before:
        assert not before.hold and not before.mark
        seq = registry.hold("other", "snapshot", 30)
        with registry.writing("other") as after:
            assert after.hold
        assert registry.writers_before("other", seq) == 1
    assert registry.writers_before("other", seq) == 0


def test_changes_of_state_check_the_state_they_leave_and_the_lease(redis_db: redis.Redis) -> None:
    registry = _registry(redis_db, lease_s=0.5)
    assert registry.begin("n", "job", {}) and not registry.begin("n", "other-job", {})
    reindex = registry.get("n")
    assert reindex is not None
    first, second = new_holder(), new_holder()
    assert registry.transition(reindex, "copying", "fencing", first)
    busy = registry.transition(reindex, "fencing", "switched", second)
    assert (busy.outcome, busy.found) == ("leased", "fencing")
    wrong = registry.transition(reindex, "copying", "fencing", first)
    assert (wrong.outcome, wrong.found) == ("state", "fencing")
    gone = registry.transition(reindex.__class__(**{**reindex.__dict__, "job_id": "nope"}),
                               "fencing", "switched", first)
    assert gone.outcome == "gone"
    assert registry.renew_lease("n", first) and not registry.renew_lease("n", second)
    time.sleep(0.7)  # the first holder stopped renewing: its lease lapsed
    assert registry.transition(reindex, "fencing", "switched", second)
    assert not registry.end(reindex, first) and registry.end(reindex, second)
    assert registry.get("n") is None and registry.begin("n", "job-2", {})


def test_a_fence_whose_finisher_died_stops_holding_writes(redis_db: redis.Redis) -> None:
    registry = _registry(redis_db, lease_s=0.5)
    registry.begin("n", "job", {})
    reindex = registry.get("n")
    assert reindex is not None
    assert registry.transition(reindex, "copying", "fencing", new_holder())
    with registry.writing("n") as write:
        assert write.hold  # its finisher renews (here: has not lapsed yet)
    time.sleep(0.7)  # it died: nobody renews
    with registry.writing("n") as write:
        assert not write.hold and write.mark  # writes go on, copied again at the next fence
    stopped = registry.get("n")
    assert stopped is not None and (stopped.state, stopped.failed_in) == ("failed", "fencing")
    assert stopped.where == "failed (in fencing)" and "lease lapsed" in (stopped.error or "")
    assert "--resume" in stopped.way_out() and "--abort" in stopped.way_out()
    # resumed: a new fence, numbered after the writers that wrote meanwhile
    assert registry.transition(stopped, "failed:fencing", "fencing", new_holder())
    again = registry.get("n")
    assert again is not None and again.state == "fencing" and again.fence_seq > stopped.fence_seq


def test_writers_of_dead_processes_stop_counting(redis_db: redis.Redis) -> None:
    dead = f"{_dead_pid()}-{'0' * 32}"
    assert holder_dead(dead) and not holder_dead(new_holder())
    shared = _registry(redis_db, lease_s=0.5)  # a shared Redis: other machines' pids mean nothing
    redis_db.zadd("bienc:writers:n", {dead: 1})
    redis_db.zadd("bienc:writer-leases:n", {dead: time.time() + 0.5})
    assert shared.writers_before("n", 2) == 1  # until its lease lapses
    time.sleep(0.7)
    assert shared.writers_before("n", 2) == 0
    embedded = _registry(redis_db, lease_s=900, local=True)  # one machine: known dead at once
    redis_db.zadd("bienc:writers:n", {dead: 1})
    redis_db.zadd("bienc:writer-leases:n", {dead: time.time() + 900})
    assert embedded.writers_before("n", 2) == 0
    # and a finisher that died holds no fence on the embedded queue either
    embedded.begin("n", "job", {})
    reindex = embedded.get("n")
    assert reindex is not None and embedded.transition(reindex, "copying", "fencing", dead)
    assert embedded.get("n").leased is False  # type: ignore[union-attr]
    with embedded.writing("n") as write:
        assert not write.hold and write.mark


def test_a_writer_that_outlived_its_lease_writes_again(redis_db: redis.Redis) -> None:
    registry = _registry(redis_db, lease_s=30)
    leases = "bienc:writer-leases:n"
    with pytest.raises(WriterLeaseLost, match="outlived its lease"), registry.writing("n"):
        # as if frozen past its lease: a fence drops it and goes on without it
        redis_db.zadd(leases, {writer: 0 for writer in redis_db.zrange(leases, 0, -1)})
        assert registry.writers_before("n", 10**9) == 0


@pytest.fixture
def runtime(redis_db: redis.Redis) -> Iterator[Runtime]:
    settings = Settings(_env_file=None, broker_url=TEST_REDIS_URL,  # type: ignore[call-arg]
                        qdrant_url="http://127.0.0.1:9")  # never reached: no store call here
    yield build_runtime(settings, Role.SUBMIT)


def test_cancel_after_the_finish_started_is_refused_naming_the_state(
        runtime: Runtime, redis_db: redis.Redis) -> None:
    registry, jobs = runtime.resources.reindexes, runtime.resources.jobs
    job_id = jobs.create("n", 0, {}, kind="reindex", open_=True)
    registry.begin("n", job_id, {})
    reindex = registry.get("n")
    assert reindex is not None
    finisher = new_holder()
    assert registry.transition(reindex, "copying", "fencing", finisher)
    with pytest.raises(CollectionError, match=r"is fencing: its finish has started, so it can no "
                                              r"longer be cancelled"):
        runtime.cancel(job_id)
    with pytest.raises(CollectionError, match="fencing, run by a live worker now"):
        runtime.resume_reindex("n")
    with pytest.raises(CollectionError, match="fencing, run by a live worker now"):
        runtime.abort_reindex("n")
    # stopped (its finish raised): the cancel still refuses, naming where; abort proceeds
    assert registry.transition(reindex, "fencing", "failed", finisher, fields={"error": "boom"})
    registry.renew_lease("n", finisher)
    redis_db.delete("bienc:reindex-lease:n")  # the failed step let go of it
    jobs.close(job_id, "failed", "boom")
    with pytest.raises(CollectionError, match=r"failed \(in fencing\): its finish has started"):
        runtime.cancel(job_id)
    assert runtime.abort_reindex("n") == (job_id, "failed (in fencing)")
    aborting = registry.get("n")
    assert aborting is not None and aborting.state == "aborting"
    status = jobs.get(job_id)
    assert status is not None and status.open and not status.finished  # again, until the abort ends
    assert status.last_error is None
    assert redis_db.llen("bienc.ingest") == 1  # the task that ends it, queued
    with pytest.raises(CollectionError, match="no reindex of 'gone' to resume"):
        runtime.resume_reindex("gone")


def test_a_cancel_while_copying_aborts(runtime: Runtime, redis_db: redis.Redis) -> None:
    registry, jobs = runtime.resources.reindexes, runtime.resources.jobs
    job_id = jobs.create("n", 0, {}, kind="reindex", open_=True)
    registry.begin("n", job_id, {})
    reindex = registry.get("n")
    assert reindex is not None and registry.transition(reindex, "copying", None, new_holder())
    runtime.cancel(job_id)  # even while its start holds the lease: the abort waits for it
    cancelled = registry.get("n")
    assert cancelled is not None and cancelled.state == "aborting"
    assert cancelled.abort_outcome == "cancelled"
