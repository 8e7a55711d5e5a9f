"""Deleting the documents a metadata filter matches (`bienc delete`, POST .../delete): one task
that plans the job (bienc.queue.deletes) and deletes its batches in order, each through the
collection's name as a writer of it (a reindex in progress sees the deletions; while it
switches, the task is held and tried again shortly).

The task may die anywhere and run again (acks_late): the plan is fixed by its first run, a
batch deleted again deletes nothing more and counts as its first try did, and a batch is
skipped once recorded on the job. It works for SLICE_S seconds at a time, then queues itself
again, so that the queue's other tasks keep their turn.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

from bienc.config.errors import CollectionError
from bienc.queue.deletes import DeletePlans
from bienc.queue.jobs import BatchOutcome
from bienc.store.filters import parse_filter

if TYPE_CHECKING:
    from bienc.resources import Resources

log = logging.getLogger(__name__)
BATCH = 256  # documents deleted at a time
SLICE_S = 5.0  # a task's work before it queues the rest
Step = Literal["done", "more", "held"]


def run(resources: Resources, job_id: str, slice_s: float = SLICE_S) -> Step:
    """Delete what job `job_id` has left, for `slice_s` seconds at most: "done" once the job
    is closed (or ended before), "more" when batches remain, "held" while a reindex of the
    collection switches."""
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
                found = store.first_chunks(collection, ids, fields=["doc_id"])
                deleted = plans.count_once(job_id, batch_no, len(found))
                store.delete_documents(collection, ids)
            finally:
                if write.mark:  # the reindex copies them again: absent
                    resources.reindexes.mark_dirty(collection, ids)
        jobs.record_batch(job_id, batch_no, BatchOutcome(indexed=deleted, skipped=len(ids) - deleted))
        plans.mark_done(job_id, batch_no)
    jobs.close(job_id)
    plans.end(job_id)
    return "done"


def abort(resources: Resources, job_id: str, reason: str) -> None:
    """End a delete that cannot go on: the documents deleted so far stay deleted (and counted),
    the others stay."""
    resources.jobs.close(job_id, "failed", reason)
    DeletePlans(resources.redis).end(job_id)
    log.warning("delete job %s failed: %s", job_id, reason)
