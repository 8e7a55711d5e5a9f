"""Celery tasks: thin wrappers that decode a message, call the indexing logic, record progress."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from bienc.config.errors import BiencError, StoreUnavailableError
from bienc.encoding.lexical import lexical_params
from bienc.ingest.documents import Document
from bienc.queue.celery_app import INDEX_BATCH_TASK, app
from bienc.queue.jobs import BatchOutcome
from bienc.resources import get_resources
from bienc.workers.indexing import ChunkingParams, index_documents

log = logging.getLogger(__name__)


def retry_delay_s(retries: int, first_s: float, cap_s: float) -> float:
    """Capped exponential backoff: first_s, 2*first_s, 4*first_s, ... at most cap_s."""
    return float(min(first_s * (2**retries), cap_s))


@app.task(  # type: ignore[untyped-decorator]
    name=INDEX_BATCH_TASK, bind=True, acks_late=True, reject_on_worker_lost=True
)
def index_batch(self: Task, job_id: str, collection: str, batch_no: int,
                documents: list[dict[str, Any]]) -> None:
    """Index one batch of one job. Idempotent: redelivery rewrites the same points and record."""
    resources = get_resources()
    settings = resources.settings
    docs = [Document.from_message(m) for m in documents]
    params = ChunkingParams(settings.chunk_tokens, settings.chunk_overlap, settings.chunking)
    try:
        outcome = index_documents(docs, collection, resources.encoder, resources.store, params,
                                  job_id, lexical_params(settings))
    except StoreUnavailableError as exc:
        retries = self.request.retries or 0
        if retries < settings.task_max_retries:
            resources.jobs.note_retry(job_id, str(exc)[:500])
            delay = retry_delay_s(retries, settings.retry_backoff_s, settings.retry_backoff_max_s)
            raise self.retry(exc=exc, countdown=delay) from exc
        reason = (f"store unavailable after {retries} retries: {exc}; kept as a dead letter, "
                  f"replay with `bienc jobs retry {job_id}`")
        resources.jobs.dead_letter(job_id, batch_no, collection, documents, reason[:1000])
        outcome = _all_failed(docs, reason)
    except BiencError as exc:  # not transient (wrong collection, model missing): do not retry
        outcome = _all_failed(docs, str(exc))
    resources.jobs.record_batch(job_id, batch_no, outcome, [d.id for d in docs])


def _all_failed(docs: list[Document], reason: str) -> BatchOutcome:
    log.error("batch of %d documents failed: %s", len(docs), reason)
    return BatchOutcome(failures={d.id: reason[:500] for d in docs})
