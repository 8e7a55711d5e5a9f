"""Celery tasks: thin wrappers that decode a message, call the indexing or reindexing logic,
record progress."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore

from bienc.config.errors import BiencError, DocumentsBusyError, StoreUnavailableError
from bienc.ingest.documents import Document
from bienc.queue.celery_app import (
    DELETE_TASK,
    INDEX_BATCH_TASK,
    INGEST_QUEUE,
    REINDEX_BATCH_TASK,
    REINDEX_FINISH_TASK,
    REINDEX_START_TASK,
    app,
)
from bienc.queue.jobs import BatchOutcome
from bienc.queue.reindex import LeaseLost
from bienc.resources import get_resources
from bienc.workers import deleting, reindexing
from bienc.workers.indexing import index_documents

log = logging.getLogger(__name__)
HOLD_RETRY_S = 1.0  # a write held by a fence, or a busy reindex step, is tried again this much later


def retry_delay_s(retries: int, first_s: float, cap_s: float) -> float:
    """Capped exponential backoff: first_s, 2*first_s, 4*first_s, ... at most cap_s."""
    return float(min(first_s * (2**retries), cap_s))


@app.task(  # type: ignore[untyped-decorator]
    name=INDEX_BATCH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True
)
def index_batch(self: Task, job_id: str, collection: str, batch_no: int,
                documents: list[dict[str, Any]]) -> None:
    """Index one batch of one job. Idempotent: redelivery rewrites the same points and record
    (or, once a newer version is written, counts its documents as superseded). While a reindex
    of the collection switches, or another worker holds some of its documents too long, the
    batch is held (tried again shortly)."""
    resources = get_resources()
    docs = [Document.from_message(m) for m in documents]
    try:
        with resources.reindexes.writing(collection) as write:
            if write.hold:
                _try_again_shortly(self)
            try:
                recorded, encoder = reindexing.collection_encoder(resources, collection)
                outcome = index_documents(docs, collection, encoder, resources.store, recorded,
                                          job_id, versions=resources.versions)
            finally:
                if write.mark:  # whatever was written, the reindex copies it again
                    resources.reindexes.mark_dirty(collection, [d.id for d in docs])
    except DocumentsBusyError:  # not an outage: no retry is spent
        _try_again_shortly(self)
    except StoreUnavailableError as exc:
        retries = _retry_outage(self, job_id, exc)
        reason = (f"store unavailable after {retries} retries: {exc}; kept as a dead letter, "
                  f"replay with `bienc jobs retry {job_id}`")
        resources.jobs.dead_letter(job_id, batch_no, collection, documents, reason[:1000])
        outcome = _all_failed(docs, reason)
    except BiencError as exc:  # not transient (wrong collection, model missing): do not retry
        outcome = _all_failed(docs, str(exc))
    resources.jobs.record_batch(job_id, batch_no, outcome, [d.id for d in docs])


@app.task(  # type: ignore[untyped-decorator]
    name=REINDEX_START_TASK, bind=True, acks_late=True, reject_on_worker_lost=True
)
def reindex_start(self: Task, job_id: str, name: str) -> None:
    """Plan a reindex: its new collection, the documents to copy; queue the first copies."""
    _reindex_step(self, job_id, name, lambda: reindexing.start(get_resources(), job_id, name))


@app.task(  # type: ignore[untyped-decorator]
    name=REINDEX_BATCH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True
)
def reindex_batch(self: Task, job_id: str, name: str, batch_no: int) -> None:
    """Copy one batch of a reindex's documents into its new collection. Idempotent."""
    _reindex_step(self, job_id, name,
                  lambda: reindexing.copy_batch(get_resources(), job_id, name, batch_no))


@app.task(  # type: ignore[untyped-decorator]
    name=REINDEX_FINISH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True
)
def reindex_finish(self: Task, job_id: str, name: str) -> None:
    """Copy what was written meanwhile, switch the name, drop the old collection (or, after a
    failure or a cancel, drop the new one). Idempotent."""
    _reindex_step(self, job_id, name, lambda: reindexing.finish(get_resources(), job_id, name))


@app.task(  # type: ignore[untyped-decorator]
    name=DELETE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True
)
def delete_matching(self: Task, job_id: str) -> None:
    """Delete the documents a delete job's filter matches, a few seconds' worth at a time (the
    rest: this task again). Idempotent (bienc.workers.deleting)."""
    resources = get_resources()
    try:
        step = deleting.run(resources, job_id)
    except StoreUnavailableError as exc:
        retries = _retry_outage(self, job_id, exc)
        deleting.abort(resources, job_id, f"store unavailable after {retries} retries: {exc}; "
                                          "the documents not deleted yet are still there")
        return
    except BiencError as exc:  # the collection is gone, a declared index refuses the filter
        deleting.abort(resources, job_id, str(exc))
        return
    except Exception as exc:  # not left open for ever: the job says what went wrong
        log.exception("delete job %s failed", job_id)
        deleting.abort(resources, job_id, f"{type(exc).__name__}: {exc}")
        return
    if step == "held":
        raise self.retry(countdown=HOLD_RETRY_S, max_retries=None)
    if step == "more":
        app.send_task(DELETE_TASK, args=(job_id,), queue=INGEST_QUEUE)


def _reindex_step(task: Task, job_id: str, name: str, step: Any) -> None:
    """Run a reindex step (which handles its own failures: bienc.workers.reindexing): a store
    outage is retried like an ingest batch's, then stops the reindex; a step that another
    live process is running is tried again shortly."""
    resources = get_resources()
    try:
        step()
    except reindexing.StepBusy:
        _try_again_shortly(task)
    except LeaseLost as exc:  # another process took the reindex over: it goes on from there
        log.warning("%s", exc)
    except StoreUnavailableError as exc:
        retries = _retry_outage(task, job_id, exc)
        reindexing.give_up(resources, job_id, name, f"store unavailable after {retries} retries: {exc}")


def _try_again_shortly(task: Task) -> NoReturn:
    """Send the task again, as it is, HOLD_RETRY_S from now, and end this run (its message is
    acknowledged once the new one is sent). Not a Celery retry: a write is held as long as a
    reindex's switch or a snapshot lasts, so the tries are not bounded, and they leave the
    count of retries, which bounds store outages, as it was."""
    request = task.request
    task.apply_async(args=request.args, kwargs=request.kwargs, countdown=HOLD_RETRY_S,
                     retries=request.retries or 0, queue=INGEST_QUEUE)
    raise Ignore()


def _retry_outage(task: Task, job_id: str, exc: StoreUnavailableError) -> int:
    """Retry `task` after a store outage with capped exponential backoff (raises Celery's
    Retry) while retries remain; once they are spent, returns how many there were."""
    resources = get_resources()
    settings = resources.settings
    retries = task.request.retries or 0
    if retries < settings.task_max_retries:
        resources.jobs.note_retry(job_id, str(exc)[:500])
        delay = retry_delay_s(retries, settings.retry_backoff_s, settings.retry_backoff_max_s)
        raise task.retry(exc=exc, countdown=delay, max_retries=settings.task_max_retries) from exc
    return int(retries)


def _all_failed(docs: list[Document], reason: str) -> BatchOutcome:
    log.error("batch of %d documents failed: %s", len(docs), reason)
    return BatchOutcome(failures={d.id: reason[:500] for d in docs})
