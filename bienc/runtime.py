"""Wiring for entry points: the queue, the in-process worker where the topology says this
process runs one, and the ingest / search calls that the CLI and the HTTP API share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery import Celery

from bienc.config.errors import CollectionNotFoundError, StoreUnavailableError
from bienc.config.settings import Settings
from bienc.config.topology import Role, Topology, decide
from bienc.encoding.lexical import lexical_params
from bienc.encoding.plan import model_identity, planned_encoding
from bienc.ingest.producer import Submission, submit, validate_collection_name, wait_for_job
from bienc.ingest.readers import Item
from bienc.queue.celery_app import INDEX_BATCH_TASK, INGEST_QUEUE, configure_app
from bienc.queue.jobs import JobStatus
from bienc.resources import Resources, set_resources

if TYPE_CHECKING:
    from bienc.search.searcher import SearchRequest, SearchResults

# Imported where used: the encoder, the task code and the in-process worker bring numpy,
# torch and Celery's worker, which `bienc ingest` to a shared broker never needs (its start
# delays the workers' first batch).

log = logging.getLogger(__name__)
_UNACKED_KEY = "unacked"  # kombu's hash of delivered, unacknowledged messages


class Runtime:
    def __init__(self, resources: Resources, topology: Topology):
        set_resources(resources)  # the in-process worker's tasks share this encoder and store
        self.resources = resources
        self.settings = resources.settings
        self.topology = topology
        self._app: Celery | None = None

    @property
    def app(self) -> Celery:
        """The Celery app bound to the broker; starts the embedded Redis on first use."""
        if self._app is None:
            self._app = configure_app(self.settings)
        return self._app

    @contextmanager
    def serving(self) -> Iterator[Runtime]:
        """Run the in-process worker while inside, where the topology says this process runs
        one. On the embedded queue it first becomes the queue's sole consumer and takes back
        at once the batches a process that died left unfinished."""
        if not self.topology.runs_worker:
            yield self
            return
        from bienc.queue.consumer import restore_unacknowledged, sole_consumer
        from bienc.workers.inprocess import InProcessWorker

        if not self.topology.embedded_queue:
            with InProcessWorker(self.app):
                yield self
            return
        with sole_consumer(self.settings.data_dir):
            restore_unacknowledged(self.app)
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
            if self.topology.runs_worker or self.resources.has_encoder:  # it encodes anyway
                encoder = self.resources.encoder
                lexical = lexical_params(self.settings)
                self.resources.store.ensure_collection(
                    collection, encoder.dimension, encoder.identity, encoder.encoding,
                    lexical.record() if lexical is not None else None)
            elif not self.topology.embedded_store or self.resources.has_store:
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

    def queued_batches(self) -> int:
        """Batches waiting in the queue or in a worker's hands (delivered, unacknowledged)."""
        client = self.resources.redis
        pipe = client.pipeline()
        pipe.llen(INGEST_QUEUE)
        pipe.hlen(_UNACKED_KEY)
        waiting, unacked = pipe.execute()
        return int(waiting) + int(unacked)

    def finish_queue(self, on_wait: Callable[[int], None] | None = None,
                     poll_s: float = 0.2) -> None:
        """On the embedded queue, return once its worker (this process) has done every batch,
        including those of jobs a stopped process left behind: nobody else would do them.
        Elsewhere, return at once: the shared queue's workers do them."""
        if not (self.topology.embedded_queue and self.topology.runs_worker):
            return
        told = False
        while (left := self.queued_batches()) > 0:
            if on_wait is not None and not told:
                on_wait(left)
                told = True
            time.sleep(poll_s)

    def search(self, collection: str, request: SearchRequest,
               timings: dict[str, float] | None = None) -> SearchResults:
        from bienc.search.searcher import search

        return search(self.resources.store, self.resources.encoder, collection, request, timings)


def build_runtime(settings: Settings, role: Role) -> Runtime:
    """The runtime of a process with `role`; ConfigError for settings that cannot work."""
    return Runtime(Resources(settings), decide(settings, role))
