"""Every crash point of a reindex's finish and abort, raising (BIENC_CRASH_AT=NAME:raise), on
real Redis and a Qdrant Edge store, with the reindex's tasks taken off the real queue and run
here as a worker would run them. After each failure: the reindex is `failed` where it
stopped, writes to the name are not held (and one made then is not lost), and both ways out
reach a clean state: resume (the collection rebuilt, every document once) and abort (the
name serving what it served, or what it switched to). test_reindex_faults.py kills real
processes at the points that matter most; this covers each point, in seconds."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from bienc.config.settings import Settings
from bienc.config.topology import Role, decide
from bienc.encoding.lexical import LexicalParams
from bienc.queue.celery_app import INGEST_QUEUE, REINDEX_BATCH_TASK, REINDEX_FINISH_TASK, REINDEX_START_TASK
from bienc.resources import Resources
from bienc.runtime import Runtime
from bienc.store.edge import EdgeVectorStore
from bienc.store.interface import ChunkPoint
from bienc.store.record import Chunking, CollectionEncoding
from bienc.workers import reindexing
from tests.conftest import TEST_REDIS_URL

ENCODING = CollectionEncoding(model="m", dimension=8, encoding="", chunking=Chunking(True, 128, 16),
                              lexical=LexicalParams().record())
IDS = [f"d{i}" for i in range(10)]
STEPS: dict[str, Callable[..., None]] = {
    REINDEX_START_TASK: reindexing.start, REINDEX_BATCH_TASK: reindexing.copy_batch,
    REINDEX_FINISH_TASK: reindexing.finish}


def _point(doc_id: str, rng: np.random.Generator) -> ChunkPoint:
    payload = {"doc_id": doc_id, "chunk": 0, "chunks": 1, "metadata": {}, "title": None,
               "content_hash": "h", "text": f"the text of {doc_id}"}
    return ChunkPoint(doc_id, 0, rng.normal(size=8).astype(np.float32), payload)


@pytest.fixture
def runtime(redis_db: redis.Redis, tmp_path: Path) -> Iterator[Runtime]:
    store = EdgeVectorStore(tmp_path / "edge")
    store.ensure_collection("c", ENCODING)
    rng = np.random.default_rng(3)
    store.upsert("c", [_point(d, rng) for d in IDS])
    settings = Settings(_env_file=None, broker_url=TEST_REDIS_URL, ingest_batch_size=4,  # type: ignore[call-arg]
                        data_dir=tmp_path / "data")
    yield Runtime(Resources(settings, store=store, redis_client=redis_db), decide(settings, Role.SUBMIT))
    store.close()


def _work(runtime: Runtime, limit: int | None = None) -> None:
    """Run the reindex tasks queued (at most `limit`), oldest first, as a worker takes them."""
    client = runtime.resources.redis
    while limit != 0 and (raw := client.rpop(INGEST_QUEUE)) is not None:
        message = json.loads(raw)  # kombu's envelope: the task's name, its arguments in the body
        args = json.loads(base64.b64decode(message["body"]))[0]
        STEPS[message["headers"]["task"]](runtime.resources, *args)
        limit = None if limit is None else limit - 1


def _stored_ids(runtime: Runtime, name: str) -> list[str]:
    return sorted(runtime.resources.store.document_ids(name))


def _reindex_failing_at(runtime: Runtime, point: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reindex dropping the lexical vectors (the dense ones are copied as they are), whose
    steps raise at `point`; returns its job id."""
    job_id = runtime.reindex("c", {"lexical": False})
    if point.startswith("reindex.aborting"):
        _work(runtime, limit=1)  # the start: it makes c@2
        runtime.cancel(job_id)
    monkeypatch.setenv("BIENC_CRASH_AT", f"{point}:raise")
    _work(runtime)
    monkeypatch.delenv("BIENC_CRASH_AT")
    return job_id


# point -> (where the reindex stops, what the name serves then)
POINTS = {
    "reindex.copying.drained": ("copying", "c@1"),
    "reindex.fencing.entered": ("fencing", "c@1"),
    "reindex.fencing.drained": ("fencing", "c@1"),
    "reindex.fencing.switched": ("fencing", "c@2"),
    "reindex.switched.dropped": ("switched", "c@2"),
    "reindex.aborting.dropped": ("aborting", "c@1"),
}


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("way_out", ["resume", "abort"])
def test_a_step_that_raises_at_each_point_leaves_a_state_both_ways_out_end(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, point: str, way_out: str) -> None:
    registry, store, jobs = runtime.resources.reindexes, runtime.resources.store, runtime.resources.jobs
    job_id = _reindex_failing_at(runtime, point, monkeypatch)
    failed_in, serving = POINTS[point]
    stopped = registry.get("c")
    assert stopped is not None and (stopped.state, stopped.failed_in) == ("failed", failed_in)
    assert "InjectedFault" in (stopped.error or "") and store.resolve("c") == serving
    status = jobs.get(job_id)
    assert status is not None and status.state == "failed" and "--resume" in (status.last_error or "")

    # writes are not held; one made now, through the name, is not lost whichever way out
    with registry.writing("c") as write:
        assert not write.hold
        store.upsert("c", [_point("late", np.random.default_rng(4))])
        if write.mark:
            registry.mark_dirty("c", ["late"])

    if way_out == "resume":
        assert runtime.resume_reindex("c") == (job_id, f"failed (in {failed_in})")
    else:
        assert runtime.abort_reindex("c") == (job_id, f"failed (in {failed_in})")
    _work(runtime)
    assert registry.get("c") is None, registry.get("c")
    aborted = way_out == "abort" or failed_in == "aborting"
    status = jobs.get(job_id)
    assert status is not None and status.state == ("cancelled" if aborted else "completed"), status
    # resumed: rebuilt (an abort resumed: as it was); aborted: the name keeps what it serves,
    # and, after the switch, the old collection unless it was dropped already
    expected = "c@1" if aborted and serving == "c@1" else "c@2"
    kept = {"c@1"} if aborted and expected == "c@2" and failed_in == "fencing" else set()
    assert store.resolve("c") == expected and set(store.list_physical()) == {expected} | kept
    assert _stored_ids(runtime, "c") == sorted([*IDS, "late"])
    assert (store.describe("c").lexical is None) == (expected == "c@2")
