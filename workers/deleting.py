"""Deleting the documents a metadata filter matches (`bienc delete`, POST .../delete): one task
that plans the job (bienc.queue.deletes) and deletes its batches in order, each through the
collection's name as a writer of it (a reindex in progress sees the deletions; while it
switches, the task is held and tried again shortly).

The task may die anywhere and run again (acks_late): the plan is fixed by its first run, a
batch deleted again deletes nothing more and counts as its first try did, and a batch is
skipped once recorded on the job. It works for SLICE_S seconds at a time, then queues itself
again, so that the queue's other tasks keep their turn.

Deletes are versioned (bienc.queue.versions): a delete by filter has one version, the client's
or the one given when it was accepted; a document whose stored version is newer is kept (and
counted as superseded), and each document deleted leaves a tombstone of that version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal

from bienc.config.errors import CollectionError, DocumentsBusyError
from bienc.queue.deletes import DeletePlans
from bienc.queue.jobs import BatchOutcome
from bienc.queue.versions import LOCK_WAIT_S, Versions, stored_version
from bienc.store.filters import parse_filter
from bienc.store.interface import Store
from bienc.store.record import name_of

if TYPE_CHECKING:
    from bienc.resources import Resources

log = logging.getLogger(__name__)
BATCH = 256  # documents deleted at a time
SLICE_S = 5.0  # a task's work before it queues the rest
Step = Literal["done", "more", "held"]


def run(resources: Resources, job_id: str, slice_s: float = SLICE_S) -> Step:
    """Delete what job `job_id` has left, for `slice_s` seconds at most: "done" once the job
    is closed (or ended before), "more" when batches remain, "held" while a reindex of the
    collection switches or another writer holds documents of the batch too long."""
    plans, jobs, store = DeletePlans(resources.redis), resources.jobs, resources.store
    plan = plans.get(job_id)
    if plan is None:
        return "done"  # another run of this task finished it
    collection = plan.collection
    if plan.batches is None:
        query_filter = parse_filter(plan.filter)
        if query_filter is None:
            raise CollectionError("a delete needs a filter")  # refused on submission already
        ids = store.document_ids(collection, query_filter)
        plans.plan(job_id, [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)])
        jobs.set_total(job_id, plans.total(job_id))
        plan = plans.get(job_id)
        assert plan is not None and plan.batches is not None
        log.info("delete job %s: %d documents of %r match", job_id, len(ids), collection)
    version = plan.version
    if version is None:  # queued by an older bienc: a version now, the same for every try
        version = plans.version_once(job_id, resources.versions.assign(name_of(collection), 1))
    done = plans.done(job_id)
    deadline = float("inf")  # set by the first batch: planning does not count
    for batch_no in range(plan.batches):
        if batch_no in done:
            continue
        if time.monotonic() > deadline:  # after a batch at least
            return "more"
        deadline = min(deadline, time.monotonic() + slice_s)
        ids = plans.batch(job_id, batch_no)
        with resources.reindexes.writing(collection) as write:
            if write.hold:
                return "held"
            try:
                deleted, newer = delete_documents(
                    store, resources.versions, collection, ids, version,
                    count=partial(_count_once, plans, job_id, batch_no))
            except DocumentsBusyError:  # a batch is writing some of them: tried again shortly
                return "held"
            finally:
                if write.mark:  # the reindex copies them again: absent
                    resources.reindexes.mark_dirty(collection, ids)
        superseded = min(len(newer), len(ids) - deleted)
        jobs.record_batch(job_id, batch_no, BatchOutcome(
            indexed=deleted, skipped=len(ids) - deleted - superseded, superseded=superseded))
        plans.mark_done(job_id, batch_no)
    jobs.close(job_id)
    plans.end(job_id)
    return "done"


def _count_once(plans: DeletePlans, job_id: str, batch_no: int, found: list[str]) -> int:
    """A batch's count from its first try: the documents it found (bienc.queue.deletes)."""
    return plans.count_once(job_id, batch_no, len(found))


def delete_documents(store: Store, versions: Versions, collection: str, doc_ids: Sequence[str],
                     version: int, wait_s: float = LOCK_WAIT_S,
                     count: Callable[[list[str]], int] = len) -> tuple[int, list[str]]:
    """Delete those of `doc_ids` whose stored version is not newer than `version`, under their
    locks (bienc.queue.versions); returns `count` of the stored ids it deletes (called before
    they go) and the ids a newer version kept. Each deleted id, absent ones too (an older
    write of one may still be on its way), gets a tombstone of `version`, recorded before the
    points go: a crash in between leaves a document that a retry of the delete removes, never
    one that an older write can bring back. Waits `wait_s` at most for the locks
    (DocumentsBusyError)."""
    name = name_of(collection)
    with versions.locked(name, list(doc_ids), wait_s):
        heads = store.first_chunks(collection, doc_ids, fields=["doc_id", "version"])
        newer = [d for d in doc_ids if stored_version(heads.get(d)) > version]
        kept = set(newer)
        doomed = [d for d in doc_ids if d not in kept]
        counted = count([d for d in doomed if d in heads])
        versions.record_tombstones(name, dict.fromkeys(doomed, version))
        store.delete_documents(collection, doomed)
    return counted, newer


def abort(resources: Resources, job_id: str, reason: str) -> None:
    """End a delete that cannot go on: the documents deleted so far stay deleted (and counted),
    the others stay."""
    resources.jobs.close(job_id, "failed", reason)
    DeletePlans(resources.redis).end(job_id)
    log.warning("delete job %s failed: %s", job_id, reason)
