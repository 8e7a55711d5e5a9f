"""The newest version of a document wins, whatever order its writes arrive in
(bienc.queue.versions): an old batch redelivered after the new one, two workers writing the
same ids at once, a delete followed by a late older write. Real Redis, real `bienc worker`
processes with the real model, each engine an embedded worker can own.

A redelivery here is what kombu does once a batch's visibility timeout passes: the batch's
message, as it was queued, queued again. The producer is the one `bienc ingest` runs
(Runtime.ingest), made to keep the messages it queues.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from bienc.config.errors import DocumentsBusyError
from bienc.config.settings import Settings
from bienc.config.topology import Role, decide
from bienc.ingest.documents import Document, parse_record
from bienc.queue.jobs import JobStatus
from bienc.queue.versions import Versions
from bienc.resources import Resources
from bienc.runtime import Runtime
from bienc.store.factory import open_store
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import bienc_env, run_bienc, run_json, worker_process

FILLER = " ".join(f"Paragraph {i} records routine observations of the tide, the wind and the "
                  "gulls on the harbour wall." for i in range(40))  # ~8 chunks of 128 tokens


class RecordingRuntime(Runtime):
    """The runtime of `bienc ingest` to Redis (it queues, a worker encodes), keeping the
    messages it queues so that a test can deliver one again."""

    def __init__(self, settings: Settings):
        super().__init__(Resources(settings), decide(settings, Role.SUBMIT))
        self.sent: list[tuple[str, str, int, list[dict[str, Any]]]] = []

    def enqueue(self, job_id: str, collection: str, batch_no: int,
                documents: list[dict[str, Any]]) -> None:
        self.sent.append((job_id, collection, batch_no, documents))
        super().enqueue(job_id, collection, batch_no, documents)

    def redelivered(self, job_id: str, timeout_s: float = 120) -> JobStatus:
        """Queue every batch of `job_id` again, message for message, and return the job's
        status once the worker has recorded each of them (as record_batch announces it)."""
        batches = [args for args in self.sent if args[0] == job_id]
        pubsub = self.resources.redis.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(f"bienc:job-changed:{job_id}")
            pubsub.get_message(timeout=5)  # the subscription is live
            for args in batches:
                super().enqueue(*args)
            left = {str(batch_no) for _, _, batch_no, _ in batches}
            deadline = time.monotonic() + timeout_s
            while left:
                assert time.monotonic() < deadline, f"batches {left} of {job_id} not done again"
                message = pubsub.get_message(timeout=1)
                if message is not None and message["type"] == "message":
                    left.discard(message["data"].decode())
        finally:
            pubsub.close()
        status = self.resources.jobs.get(job_id)
        assert status is not None
        return status

    def versions_of(self, job_id: str) -> dict[str, int]:
        """The version each document of `job_id` was given when it was accepted."""
        return {message["id"]: message["version"]
                for job, _, _, batch in self.sent if job == job_id for message in batch}

    def wait_until(self, job_id: str, done: Callable[[JobStatus], bool],
                   timeout_s: float = 120) -> JobStatus:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.resources.jobs.get(job_id)
            assert status is not None
            if status.queued == 0 and done(status):
                return status
            assert time.monotonic() < deadline, f"job {job_id} did not get there: {status}"
            time.sleep(0.2)


def _records(n: int, label: str, long: bool = False, **fields: Any) -> list[Document]:
    return [parse_record({"id": f"n{i}", "text": f"Note {i}, version {label}: the {label} "
                          f"reading of gauge {i}." + (f" {FILLER}" if long else ""),
                          "metadata": {"label": label}, **fields}, 1_000_000)
            for i in range(n)]


@contextmanager
def _deployment(tmp_path: Path, **settings: str) -> Iterator[tuple[RecordingRuntime, dict[str, str]]]:
    """A producer and a `bienc worker` sharing the test's Redis; the store is the worker's
    (embedded) until the block ends."""
    env = bienc_env(broker_url=TEST_REDIS_URL, data_dir=str(tmp_path / "data"), **settings)
    producer = RecordingRuntime(Settings(_env_file=None, broker_url=TEST_REDIS_URL,  # type: ignore[call-arg]
                                         data_dir=tmp_path / "data", **settings))
    with worker_process(tmp_path, env):
        yield producer, env


def _stored(tmp_path: Path, collection: str, ids: list[str], **settings: Any) -> dict[str, dict[str, Any]]:
    """Chunk 0 of each document as the store holds it, once the worker has stopped."""
    store = open_store(Settings(_env_file=None, data_dir=tmp_path / "data", **settings))  # type: ignore[call-arg]
    try:
        return store.first_chunks(collection, ids)
    finally:
        store.close()


def test_an_old_batch_redelivered_after_the_new_one_is_superseded(tmp_path: Path,
                                                                  redis_db: redis.Redis) -> None:
    ids = [f"n{i}" for i in range(40)]
    with _deployment(tmp_path, ingest_batch_size="16") as (producer, env):
        old = producer.ingest(_records(40, "one"), "notes").job_id
        producer.wait_until(old, lambda s: s.indexed == 40)
        new = producer.ingest(_records(40, "two"), "notes").job_id
        producer.wait_until(new, lambda s: s.indexed == 40)
        status = producer.redelivered(old)  # its three batches, long after they were written
        shown = run_json("jobs", "show", old, cwd=tmp_path, env=env)
        said = run_bienc("jobs", "show", old, cwd=tmp_path, env=env).stdout
    assert len([args for args in producer.sent if args[0] == old]) == 3
    assert (status.state, status.superseded, status.indexed, status.skipped, status.failed) == (
        "completed", 40, 0, 0, 0)
    assert (shown["state"], shown["superseded"], shown["failed"]) == ("completed", 40, 0)
    assert "0 indexed, 0 unchanged, 40 superseded by a newer version, 0 failed" in said
    stored = _stored(tmp_path, "notes", ids)
    assert sorted(stored) == sorted(ids)
    assert {head["metadata"]["label"] for head in stored.values()} == {"two"}
    old_versions, new_versions = (producer.versions_of(job) for job in (old, new))
    assert all(old_versions[d] < new_versions[d] == stored[d]["version"] for d in ids)


def test_two_workers_writing_the_same_ids_end_at_the_newest_version(tmp_path: Path,
                                                                    redis_db: redis.Redis) -> None:
    """Two tasks at once in one worker (its threads pool; an embedded store has one writing
    process): the older job's documents are long, so that its task writes after the newer
    one's, which would leave the older version without the versions' locks and checks."""
    ids = [f"n{i}" for i in range(24)]
    engine = {"embedded_store": "qdrant-local"}
    with _deployment(tmp_path, worker_concurrency="2", **engine) as (producer, _):
        old = producer.ingest(_records(24, "one", long=True), "notes").job_id
        new = producer.ingest(_records(24, "two"), "notes").job_id
        newer = producer.wait_until(new, lambda s: True)
        older = producer.wait_until(old, lambda s: True)
    assert (newer.indexed, newer.failed) == (24, 0)
    assert older.indexed + older.superseded == 24 and older.failed == 0
    stored = _stored(tmp_path, "notes", ids, **engine)
    assert {head["metadata"]["label"] for head in stored.values()} == {"two"}
    assert {head["chunks"] for head in stored.values()} == {1}  # no chunk of the long version


def test_a_delete_followed_by_a_late_older_write_stays_deleted(tmp_path: Path,
                                                               redis_db: redis.Redis) -> None:
    ids = [f"n{i}" for i in range(20)]
    with _deployment(tmp_path) as (producer, _):
        old = producer.ingest(_records(20, "one"), "notes").job_id
        producer.wait_until(old, lambda s: s.indexed == 20)
        delete = producer.delete_matching("notes", {"label": "one"})
        deleted = producer.wait_until(delete, lambda s: not s.open)
        late = producer.redelivered(old)  # accepted before the delete: older than it
        again = producer.ingest(_records(1, "three"), "notes").job_id  # newer: back
        producer.wait_until(again, lambda s: s.indexed == 1)
    assert (deleted.state, deleted.indexed, deleted.superseded) == ("completed", 20, 0)
    assert (late.state, late.indexed, late.superseded) == ("completed", 0, 20)
    stored = _stored(tmp_path, "notes", ids)
    assert list(stored) == ["n0"] and stored["n0"]["metadata"]["label"] == "three"


# The versions' state in Redis


def test_versions_follow_acceptance_and_stay_above_every_client_version(redis_db: redis.Redis) -> None:
    versions = Versions(redis_db, retention_s=3600)
    first = versions.assign("c", 3)
    assert abs(first - time.time() * 1e6) < 60e6  # at least Redis's clock, in microseconds
    second = versions.assign("c", 1)
    assert second >= first + 3
    client = second + 10**9  # a client's own version, 1000 s of the clock ahead
    assert versions.assign("c", 2, highest_given=client) == client + 1
    assert versions.assign("c", 0, highest_given=client + 50) == client + 51  # none given out
    assert versions.assign("c", 1) == client + 51
    assert versions.assign("other", 1) < client  # each collection its own sequence


def test_tombstones_keep_the_highest_version_for_their_retention(redis_db: redis.Redis) -> None:
    versions = Versions(redis_db, retention_s=1)
    versions.record_tombstones("c", {"a": 5, "b": 7})
    versions.record_tombstones("c", {"a": 3})  # an older delete arriving late
    assert versions.tombstones("c", ["a", "b", "z"]) == {"a": 5, "b": 7}
    time.sleep(2.1)
    assert versions.tombstones("c", ["a", "b"]) == {}
    versions.record_tombstones("c", {"a": 9})
    versions.forget("c")
    assert versions.tombstones("c", ["a"]) == {}


def test_a_writer_waits_for_documents_another_holds(redis_db: redis.Redis) -> None:
    versions = Versions(redis_db, retention_s=60)
    with versions.locked("c", ["a", "b"]):
        with pytest.raises(DocumentsBusyError, match="another writer"), \
                versions.locked("c", ["b", "x"], wait_s=0.3):
            pass
        with versions.locked("c", ["x"], wait_s=0.3):  # not held: no wait
            assert redis_db.get("bienc:doc-lock:c:x") is not None
        with versions.locked("d", ["a"], wait_s=0.3):  # another collection's "a"
            pass
    with versions.locked("c", ["b", "x"], wait_s=0.3):  # released, all of them
        pass
    assert redis_db.keys("bienc:doc-lock:*") == []
    with versions.locked("c", ["a"]):
        assert versions.release_all_locks() == 1
