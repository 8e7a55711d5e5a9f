"""Wiring for entry points: the queue, the in-process worker of the embedded default, and the
ingest / search calls that the CLI and the HTTP API share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery import Celery

from core.encoding_plan import model_identity, planned_encoding
from core.errors import CollectionNotFoundError, StoreUnavailableError
from core.jobs import JobStatus
from core.resources import Resources, set_resources
from ingest.producer import Submission, submit, validate_collection_name, wait_for_job
from ingest.readers import Item
from workers.app import INDEX_BATCH_TASK, INGEST_QUEUE, configure_app

if TYPE_CHECKING:
    from core.store import Hit
    from search.searcher import SearchRequest

# Imported where used: the encoder, the task code and the in-process worker bring numpy,
# torch and Celery's worker, which `bienc ingest` to a shared broker never needs (its start
# delays the workers' first batch).

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, resources: Resources):
        set_resources(resources)  # the in-process worker's tasks share this encoder and store
        self.resources = resources
        self.settings = resources.settings
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        """The Celery app bound to the broker; starts the embedded Redis on first use."""
        if self._app is None:
            self._app = configure_app(self.settings)
        return self._app

    @property
    def embedded(self) -> bool:
        return self.settings.embedded_queue

    @contextmanager
    def serving(self, in_process_worker: bool | None = None) -> Iterator[Runtime]:
        """Run an in-process worker while inside: by default when no external broker is
        configured; `bienc serve` also asks for one when it owns the embedded store."""
        if not (self.embedded if in_process_worker is None else in_process_worker):
            yield self
            return
        from workers.inprocess import InProcessWorker

        with InProcessWorker(self.app):
            yield self

    def enqueue(self, job_id: str, collection: str, batch_no: int,
                documents: list[dict[str, Any]]) -> None:
        # by name: the task's code (and the encoder it imports) is the workers' business
        self.app.send_task(INDEX_BATCH_TASK, args=(job_id, collection, batch_no, documents),
                           queue=INGEST_QUEUE)

    def ingest(self, items: Iterable[Item], collection: str) -> Submission:
        """Accept documents for `collection`. Where this process can reach the store, the
        collection is checked first, so a wrong model is refused before anything is queued."""
        validate_collection_name(collection)
        try:
            if self.embedded or self.resources.has_encoder:  # this process encodes anyway
                encoder = self.resources.encoder
                self.resources.store.ensure_collection(collection, encoder.dimension,
                                                       encoder.identity, encoder.encoding)
            elif self.settings.qdrant_url or self.resources.has_store:
                # Workers encode: check against the configured model without loading it (seconds
                # a `bienc ingest` would keep the workers waiting). The first batch creates it.
                self.resources.store.check_collection(collection, None,
                                                      model_identity(self.settings.model),
                                                      planned_encoding(self.settings))
        except CollectionNotFoundError:
            pass
        except StoreUnavailableError as exc:  # the queue holds the batches until it is back
            log.warning("%s; accepting anyway, workers retry", exc)
        return submit(items, collection, jobs=self.resources.jobs, enqueue=self.enqueue,
                      batch_size=self.settings.ingest_batch_size)

    def wait(self, job_id: str, on_progress: Callable[[JobStatus], None] | None = None,
             timeout_s: float | None = None) -> JobStatus:
        return wait_for_job(self.resources.jobs, job_id, on_progress=on_progress,
                            timeout_s=timeout_s)

    def search(self, collection: str, request: SearchRequest,
               timings: dict[str, float] | None = None) -> list[list[Hit]]:
        from search.searcher import search

        return search(self.resources.store, self.resources.encoder, collection, request, timings)
