"""Delete by filter: the job's task over real Redis and each engine (a run cut short and run
again, a reindex's fence), and `bienc delete` / `bienc search --offset` on the embedded default.
The HTTP route is in test_api.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from bienc.config.settings import Settings
from bienc.encoding.lexical import LexicalEncoder, LexicalParams
from bienc.queue.deletes import DeletePlans
from bienc.queue.leases import new_holder
from bienc.resources import Resources
from bienc.store.filters import parse_filter
from bienc.store.interface import ChunkPoint, Store
from bienc.store.record import Chunking, CollectionEncoding
from bienc.workers import deleting
from tests.integration.conftest import bienc_env, run_bienc, run_json, write_jsonl

LEXICAL = LexicalParams()
ENCODING = CollectionEncoding(model="m", dimension=8, encoding="", chunking=Chunking(True, 128, 16),
                              lexical=LEXICAL.record())
DOCUMENTS = 900
PURGED = {"kind": "old"}  # two in three: 600 of 900, in batches of 256
MATCHED = 600


def _points(rng: np.random.Generator) -> list[ChunkPoint]:
    points = []
    texts = [f"{'obsolete' if i % 3 != 2 else 'current'} record number {i}" for i in range(DOCUMENTS)]
    sparse = LexicalEncoder(LEXICAL).embed_documents(texts)
    for i, text in enumerate(texts):
        meta = {"kind": "old" if i % 3 != 2 else "new", "n": i}
        for chunk in range(2):
            payload = {"doc_id": f"d{i}", "chunk": chunk, "chunks": 2, "metadata": meta,
                       "content_hash": "h", "title": None, **({"text": text} if chunk == 0 else {})}
            points.append(ChunkPoint(f"d{i}", chunk, rng.normal(size=8).astype(np.float32), payload,
                                     sparse[i] if chunk == 0 else None))
    return points


@pytest.fixture
def resources(redis_db: redis.Redis, each_engine: Store) -> Iterator[Resources]:
    each_engine.ensure_collection("c", ENCODING)
    each_engine.upsert("c", _points(np.random.default_rng(1)))
    yield Resources(Settings(_env_file=None), store=each_engine, redis_client=redis_db)  # type: ignore[call-arg]


def _submit(resources: Resources, raw: dict[str, Any]) -> str:
    """What Runtime.delete_matching does, without sending the task (called here instead)."""
    job_id = resources.jobs.create("c", 0, {}, kind="delete", open_=True)
    DeletePlans(resources.redis).create(job_id, "c", raw, resources.versions.assign("c", 1))
    return job_id


def _lexical_ids(store: Store, word: str) -> set[str]:
    found = store.lexical_candidates("c", LexicalEncoder(LEXICAL).embed_query(word), 1000)
    return {c.doc_id for c in found}


class _WorkerDied(Exception):
    pass


def test_a_delete_cut_short_and_run_again_deletes_and_counts_each_document_once(
        resources: Resources, monkeypatch: pytest.MonkeyPatch) -> None:
    store = resources.store
    matched = store.count_documents("c", parse_filter(PURGED))
    assert matched == MATCHED
    job_id = _submit(resources, PURGED)

    # the worker dies after its second batch is deleted, before it is recorded
    delete = store.delete_documents
    calls = []

    def dies_after_the_second(name: str, doc_ids: list[str]) -> None:
        delete(name, doc_ids)
        calls.append(len(doc_ids))
        if len(calls) == 2:
            raise _WorkerDied

    monkeypatch.setattr(store, "delete_documents", dies_after_the_second)
    assert deleting.run(resources, job_id, slice_s=0) == "more"  # one batch, then the rest queued
    with pytest.raises(_WorkerDied):
        deleting.run(resources, job_id)
    status = resources.jobs.get(job_id)
    assert status is not None and (status.state, status.total, status.indexed) == ("running", MATCHED, 256)
    monkeypatch.undo()
    assert deleting.run(resources, job_id) == "done"  # the redelivered task
    assert deleting.run(resources, job_id) == "done"  # and a duplicate of it: nothing to do

    status = resources.jobs.get(job_id)
    assert status is not None
    assert (status.state, status.total, status.indexed, status.skipped, status.queued) == \
        ("completed", MATCHED, MATCHED, 0, 0)
    assert status.to_dict()["deleted"] == MATCHED and status.kind == "delete"
    info = store.info("c")
    assert (info.documents, info.points) == (DOCUMENTS - MATCHED, 2 * (DOCUMENTS - MATCHED))
    assert store.count_documents("c", parse_filter(PURGED)) == 0
    assert _lexical_ids(store, "obsolete") == set()  # their lexical entries went too
    assert len(_lexical_ids(store, "current")) == DOCUMENTS - MATCHED
    dense = store.dense_candidates("c", np.ones(8, dtype=np.float32), 1000)
    assert len(dense) == DOCUMENTS - MATCHED and all(int(c.doc_id[1:]) % 3 == 2 for c in dense)
    assert DeletePlans(resources.redis).get(job_id) is None  # the plan ended with the job


def test_a_delete_is_held_while_a_reindex_switches_and_marks_what_it_deletes(resources: Resources) -> None:
    registry = resources.reindexes
    assert registry.begin("c", "reindex-job", {})  # copying: deletions are marked dirty
    job_id = _submit(resources, {"n": {"lt": 10}})
    assert deleting.run(resources, job_id) == "done"
    assert sorted(registry.pop_dirty("c", 100)) == sorted(f"d{i}" for i in range(10))
    job_id = _submit(resources, {"n": {"gte": 10, "lt": 20}})
    finisher = new_holder()  # this process: alive, so its lease holds
    reindex = registry.get("c")
    assert reindex is not None and registry.transition(reindex, "copying", "fencing", finisher)
    assert deleting.run(resources, job_id) == "held"  # fencing: a writer waits
    assert resources.store.count_documents("c", parse_filter({"n": {"lt": 20}})) == 10
    assert registry.end(reindex, finisher)
    assert deleting.run(resources, job_id) == "done"
    status = resources.jobs.get(job_id)
    assert status is not None and (status.state, status.indexed) == ("completed", 10)
    assert resources.store.count_documents("c", parse_filter({"n": {"lt": 20}})) == 0


def test_a_filter_matching_nothing_ends_at_once_and_a_missing_collection_fails(resources: Resources) -> None:
    job_id = _submit(resources, {"kind": "none"})
    assert deleting.run(resources, job_id) == "done"
    status = resources.jobs.get(job_id)
    assert status is not None and (status.state, status.total) == ("completed", 0)
    resources.store.delete_collection("c")
    job_id = _submit(resources, PURGED)
    with pytest.raises(Exception, match="does not exist"):
        deleting.run(resources, job_id)


def test_bienc_delete_and_search_offset_on_the_embedded_default(tmp_path: Path) -> None:
    env = bienc_env()
    records = [{"id": f"n{i}", "text": f"Field note {i}: the {'penguins' if i % 2 else 'volcanoes'} "
                f"of the southern islands, season {i}.",
                "metadata": {"year": 2000 + i, "seen": f"2024-{1 + i % 12:02d}-15"}}
               for i in range(24)]
    corpus = write_jsonl(tmp_path / "notes.jsonl", records)
    assert run_bienc("ingest", str(corpus), "-c", "notes", cwd=tmp_path, env=env).returncode == 0

    deep = run_json("search", "penguins of the southern islands", "-c", "notes", "-k", "8",
                    cwd=tmp_path, env=env)
    page = run_json("search", "penguins of the southern islands", "-c", "notes", "-k", "4",
                    "--offset", "4", cwd=tmp_path, env=env)
    assert [h["id"] for h in page] == [h["id"] for h in deep[4:8]]
    too_deep = run_bienc("search", "x", "-c", "notes", "-k", "10", "--offset", "995",
                         cwd=tmp_path, env=env)
    assert too_deep.returncode == 1 and "over the limit of 1000" in too_deep.stderr

    purge = '{"year": {"lt": 2010}, "not": {"seen": {"gte": "2024-06-01"}}}'  # n0..n4: Jan-May
    dry = run_json("delete", "notes", "--filter", purge, "--dry-run", cwd=tmp_path, env=env)
    assert dry == {"collection": "notes", "matched": 5, "dry_run": True}
    assert run_json("info", "-c", "notes", cwd=tmp_path, env=env)["collections"][0]["documents"] == 24
    done = run_json("delete", "notes", "--filter", purge, cwd=tmp_path, env=env)
    assert (done["kind"], done["state"], done["deleted"], done["total"]) == ("delete", "completed", 5, 5)
    info = run_json("info", "-c", "notes", cwd=tmp_path, env=env)["collections"][0]
    assert (info["documents"], info["points"]) == (19, 19)
    left = run_json("search", "volcanoes penguins islands", "-c", "notes", "-k", "30", "--mode",
                    "lexical", cwd=tmp_path, env=env)
    assert {h["id"] for h in left} == {f"n{i}" for i in range(5, 24)}
    bad = run_bienc("delete", "notes", "--filter", '{"year": {"after": 1}}', cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "filter 'year': unknown operator 'after'" in bad.stderr
    empty = run_bienc("delete", "notes", "--filter", "{}", cwd=tmp_path, env=env)
    assert empty.returncode == 1 and "--filter is empty" in empty.stderr
