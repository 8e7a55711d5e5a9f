"""Wiring for entry points: the queue, the in-process worker where the topology says this
process runs one, and the ingest / search calls that the CLI and the HTTP API share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from celery import Celery

from bienc.config.errors import (
    CollectionError,
    CollectionNotFoundError,
    ConfigError,
    JobNotFoundError,
    StoreUnavailableError,
)
from bienc.config.settings import Settings
from bienc.config.topology import Role, Topology, decide
from bienc.ingest.producer import Submission, submit, validate_collection_name, wait_for_job
from bienc.ingest.readers import Item
from bienc.queue.celery_app import (
    DELETE_TASK,
    INDEX_BATCH_TASK,
    INGEST_QUEUE,
    REINDEX_FINISH_TASK,
    REINDEX_START_TASK,
    WEBHOOK_QUEUE,
    configure_app,
)
from bienc.queue.deletes import DeletePlans
from bienc.queue.jobs import JobStatus
from bienc.queue.reindex import Reindex
from bienc.queue.webhooks import check_callback_url
from bienc.resources import Resources, set_resources
from bienc.store.record import split_physical

if TYPE_CHECKING:
    from bienc.ingest.files import FileOptions
    from bienc.search.searcher import SearchRequest, SearchResults
    from bienc.store.filters import MetadataFilter

# Imported where used: the encoder, the task code and the in-process worker bring numpy,
# torch and Celery's worker, which `bienc ingest` to a shared broker never needs (its start
# delays the workers' first batch).

log = logging.getLogger(__name__)
_UNACKED_KEY = "unacked"  # kombu's hash of delivered, unacknowledged messages
ACK_GRACE_S = 1.0  # finish_queue: seconds a finished batch may take to be acknowledged
DELETE_LOCK_WAIT_S = 30.0  # a delete request waits this long for documents a batch is writing


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
            # the documents' locks were all held by the process that died (bienc.queue.versions)
            self.resources.versions.release_all_locks()
            with InProcessWorker(self.app):
                yield self

    def enqueue(self, job_id: str, collection: str, batch_no: int,
                documents: list[dict[str, Any]]) -> None:
        # by name: the task's code (and the encoder it imports) is the workers' business
        self.app.send_task(INDEX_BATCH_TASK, args=(job_id, collection, batch_no, documents),
                           queue=INGEST_QUEUE)

    def ingest(self, items: Iterable[Item], collection: str, job_id: str | None = None,
               callback_url: str | None = None) -> Submission:
        """Accept documents for `collection` (into the open job `job_id`, else a new one, whose
        final status is POSTed to `callback_url` when given). Where this process encodes
        anyway, a new collection is created first (with the settings' encoding) and the
        collection's model loaded, so that one that cannot load here is refused before
        anything is queued."""
        validate_collection_name(collection)
        if callback_url is not None:
            check_callback_url(self.settings, callback_url)
        if self.topology.runs_worker or self.resources.has_encoder:
            try:
                try:
                    recorded = self.resources.store.describe(collection)
                except CollectionNotFoundError:
                    recorded = self.resources.store.ensure_collection(
                        collection, self.resources.default_encoding())
                self.resources.encoder_for(collection, recorded)  # loadable here, the right one
            except StoreUnavailableError as exc:  # the queue holds the batches until it is back
                log.warning("%s; accepting anyway, workers retry", exc)
        return submit(items, collection, jobs=self.resources.jobs, enqueue=self.enqueue,
                      versions=self.resources.versions, batch_size=self.settings.ingest_batch_size,
                      batch_chars=self.settings.ingest_batch_chars, job_id=job_id,
                      callback_url=callback_url)

    @property
    def reads_store(self) -> bool:
        """Whether this process may open the store: a server, or an embedded one this process
        owns (it runs the worker). Elsewhere a `bienc worker` owns the embedded store."""
        return self.topology.runs_worker or not self.topology.embedded_store

    def file_options(self, collection: str, include: Sequence[str] = (),
                     exclude: Sequence[str] = ()) -> FileOptions:
        """How files are read for `collection`: the settings' limits, and, where this process
        can read the store, a check that spares parsing a file whose bytes are already indexed
        (without it, the worker still skips it as unchanged once parsed)."""
        from bienc.ingest.files import FileOptions

        settings = self.settings
        return FileOptions(include=include, exclude=exclude, max_file_bytes=settings.max_file_bytes,
                           parse_timeout_s=settings.parse_timeout_s,
                           parse_processes=settings.parse_processes,
                           unchanged=(lambda files: self.unchanged_files(collection, files))
                           if self.reads_store else None)

    def unchanged_files(self, collection: str, files: Sequence[tuple[str, str]]) -> set[str]:
        """The ids among (id, sha256) `files` whose stored document came from those bytes."""
        try:
            stored = self.resources.store.first_chunks(collection, [doc_id for doc_id, _ in files],
                                                       fields=["metadata"])
        except CollectionNotFoundError:
            return set()
        return {doc_id for doc_id, sha in files
                if (stored.get(doc_id, {}).get("metadata") or {}).get("sha256") == sha}

    def sync_folder(self, collection: str, root: Path) -> list[str]:
        """Delete the documents of `collection` that came from files (their metadata records a
        path and a sha256) whose file below `root` is gone; returns their ids."""
        if not self.reads_store:
            raise ConfigError("--sync reads the collection's documents, and the embedded store "
                              "belongs to the `bienc worker` process: run the sync there, or use "
                              "a Qdrant server (BIENC_QDRANT_URL)")
        store = self.resources.store
        try:
            ids = store.document_ids(collection)
        except CollectionNotFoundError:
            return []
        heads = store.first_chunks(collection, ids, fields=["metadata"])
        gone = sorted(doc_id for doc_id, head in heads.items()
                      if isinstance(meta := head.get("metadata"), dict) and "sha256" in meta
                      and meta.get("path") == doc_id and not (root / doc_id).is_file())
        if gone:
            self.delete_documents(collection, gone)
        return gone

    def wait(self, job_id: str, on_progress: Callable[[JobStatus], None] | None = None,
             timeout_s: float | None = None) -> JobStatus:
        return wait_for_job(self.resources.jobs, job_id, on_progress=on_progress,
                            timeout_s=timeout_s)

    def wait_for_webhook(self, job_id: str, timeout_s: float | None = None) -> JobStatus | None:
        """The status of the ended job `job_id` once its webhook is delivered or has failed
        (its attempts are bounded); at once when it has none. For a process that runs the
        worker and leaves when its job ends (the embedded `bienc ingest`): its worker makes
        the attempts. None for an unknown job; TimeoutError after `timeout_s`."""
        jobs = self.resources.jobs
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with jobs.changes(job_id) as changed:
            while True:
                status = jobs.get(job_id)
                if status is None or status.webhook is None \
                        or status.webhook.state in ("delivered", "failed"):
                    return status
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the webhook of job {job_id} is still {status.webhook.state}")
                changed(1.0)

    def queued_batches(self) -> int:
        """Batches (and webhook deliveries) waiting in the queues or in a worker's hands
        (delivered, unacknowledged, a delivery's next attempt included)."""
        client = self.resources.redis
        pipe = client.pipeline()
        pipe.llen(INGEST_QUEUE)
        pipe.llen(WEBHOOK_QUEUE)
        pipe.hlen(_UNACKED_KEY)
        return sum(int(n) for n in pipe.execute())

    def finish_queue(self, on_wait: Callable[[int], None] | None = None,
                     poll_s: float = 0.2) -> None:
        """On the embedded queue, return once its worker (this process) has done every batch,
        including those of jobs a stopped process left behind: nobody else would do them.
        Elsewhere, return at once: the shared queue's workers do them."""
        if not (self.topology.embedded_queue and self.topology.runs_worker):
            return
        told = False
        started = time.monotonic()
        while (left := self.queued_batches()) > 0:
            # the batch a job just finished is acknowledged a moment after it is recorded:
            # tell only of batches still there after that moment
            if on_wait is not None and not told and time.monotonic() - started > ACK_GRACE_S:
                on_wait(left)
                told = True
            time.sleep(poll_s)

    def search(self, collection: str, request: SearchRequest,
               timings: dict[str, float] | None = None) -> SearchResults:
        from bienc.search.searcher import search

        return search(self.resources.store, self.resources.encoder_for, collection, request, timings)

    def collections(self) -> list[dict[str, Any]]:
        """Every collection's info, as users know them: a reindex's new collection is not
        listed until it takes over its name; the name being reindexed says so."""
        store = self.resources.store
        running = self.resources.reindexes.active()
        building = {r.target for r in running if r.target}
        infos = []
        for name in store.list_collections():
            if name in building:
                continue
            try:
                infos.append(self._info(name, running))
            except CollectionNotFoundError:  # dropped while listing
                continue
        return infos

    def describe(self, collection: str) -> dict[str, Any]:
        return self._info(collection, self.resources.reindexes.active())

    def _info(self, name: str, running: list[Any]) -> dict[str, Any]:
        info = self.resources.store.info(name).to_dict()
        for reindex in running:
            if reindex.name == name:
                info["reindex"] = reindex.to_dict()
        return info

    def delete_collection(self, collection: str) -> None:
        """Drop a collection; refused while it is being reindexed (cancel that first)."""
        for reindex in self.resources.reindexes.active():
            if collection in (reindex.name, reindex.target):
                raise CollectionError(
                    f"collection {collection!r} is being reindexed (job {reindex.job_id}, "
                    f"{reindex.where}): {reindex.way_out()}; then drop it")
        if not self.resources.store.delete_collection(collection):
            raise CollectionNotFoundError(f"collection {collection!r} does not exist")
        if split_physical(collection) is None:  # the name is gone: its deletes' tombstones too
            self.resources.versions.forget(collection)

    def reindex(self, collection: str, options: dict[str, Any], callback_url: str | None = None
                ) -> str:
        """Queue a reindex of `collection` (options: model, chunk_tokens, chunk_overlap,
        lexical, keep_old); returns its job id, whose final status is POSTed to `callback_url`
        when given. CollectionError (409) while another runs."""
        validate_collection_name(collection)
        if callback_url is not None:
            check_callback_url(self.settings, callback_url)
        if self.topology.runs_worker or not self.topology.embedded_store or self.resources.has_store:
            self.resources.store.describe(collection)  # CollectionNotFoundError: nothing to rebuild
        registry, jobs = self.resources.reindexes, self.resources.jobs
        running = registry.get(collection)
        if running is not None:
            raise CollectionError(f"a reindex of {collection!r} is running (job {running.job_id}, "
                                  f"{running.where}): {running.way_out()}")
        job_id = jobs.create(collection, 0, {}, kind="reindex", open_=True, callback_url=callback_url)
        if not registry.begin(collection, job_id, options):
            jobs.close(job_id, "failed", "another reindex of this collection started first")
            raise CollectionError(f"a reindex of {collection!r} is running")
        self.app.send_task(REINDEX_START_TASK, args=(job_id, collection), queue=INGEST_QUEUE)
        return job_id

    def cancel(self, job_id: str) -> None:
        """Cancel a reindex that is copying: its new collection is dropped, the live one
        untouched. CollectionError (409) naming its state once its finish has started."""
        registry = self.resources.reindexes
        reindex = registry.of_job(job_id)
        if reindex is None:
            status = self.resources.jobs.get(job_id)
            if status is None:
                raise JobNotFoundError(f"job {job_id!r} is unknown (expired, or never created)")
            raise CollectionError(f"job {job_id} is not a running reindex ({status.kind}, "
                                  f"{status.state}); only a running reindex can be cancelled")
        # whoever runs the start may hold the lease: the abort waits for it
        took = registry.transition(reindex, "copying failed:copying", "aborting", force=True,
                                   fields={"abort_outcome": "cancelled",
                                           "abort_reason": "cancelled (bienc jobs cancel)"})
        if took.outcome == "state":
            raise CollectionError(
                f"the reindex of {reindex.name!r} (job {job_id}) is {_where(took.found)}: its finish "
                f"has started, so it can no longer be cancelled; {reindex.way_out()}")
        if took:
            self._advance(reindex, REINDEX_FINISH_TASK)

    def resume_reindex(self, collection: str) -> tuple[str, str]:
        """Go on with the reindex of `collection` from the state it stopped in (`bienc reindex
        NAME --resume`); returns its job id and that state. CollectionError (409) when there
        is none, or a live worker runs it now."""
        reindex = self._stopped_reindex(collection, "resume", busy=lambda r: r.leased)
        self._advance(reindex, REINDEX_START_TASK if not reindex.finishing else REINDEX_FINISH_TASK)
        return reindex.job_id, reindex.where

    def abort_reindex(self, collection: str) -> tuple[str, str]:
        """Abort the reindex of `collection` from whatever state it is in (`bienc reindex NAME
        --abort`): its new collection is dropped, the name keeps what it serves; returns its
        job id and the state it left. CollectionError (409) when there is none, or a live
        worker runs its finish now."""
        registry = self.resources.reindexes
        # copying, a start or a batch may run: the abort waits for the start's lease
        reindex = self._stopped_reindex(collection, "abort", busy=lambda r: r.leased and r.finishing)
        why = {} if reindex.state == "aborting" else {
            "abort_outcome": "cancelled",
            "abort_reason": f"aborted (bienc reindex {collection} --abort) in {reindex.where}"}
        took = registry.transition(reindex, "copying fencing switched aborting failed", "aborting",
                                   force=not reindex.finishing, fields=why)
        if not took:
            raise CollectionError(f"the reindex of {collection!r} could not be aborted: it is "
                                  f"{_where(took.found) or 'gone'} now; try again")
        self._advance(reindex, REINDEX_FINISH_TASK)
        return reindex.job_id, reindex.where

    def _stopped_reindex(self, collection: str, doing: str,
                         busy: Callable[[Reindex], bool]) -> Reindex:
        """The reindex of `collection`, unless there is none or it is `busy` (a live worker
        runs a step of it that this must not cross)."""
        validate_collection_name(collection)
        reindex = self.resources.reindexes.get(collection)
        if reindex is None:
            raise CollectionError(f"no reindex of {collection!r} to {doing}: none is running or "
                                  "stopped (the last one ended: see `bienc jobs`)")
        if busy(reindex):
            raise CollectionError(
                f"the reindex of {collection!r} (job {reindex.job_id}) is {reindex.where}, run by "
                f"a live worker now: wait for it to end (if that worker stops, {doing} once its "
                f"lease lapses, BIENC_LEASE_S={self.settings.lease_s:g} seconds later)")
        return reindex

    def _advance(self, reindex: Reindex, task: str) -> None:
        """Open the reindex's job again (it ended if the reindex stopped) and queue the task
        that takes the reindex on from its state."""
        self.resources.jobs.reopen(reindex.job_id)
        self.app.send_task(task, args=(reindex.job_id, reindex.name), queue=INGEST_QUEUE)

    def count_matching(self, collection: str, query_filter: MetadataFilter) -> int:
        """How many documents of `collection` the filter matches (a delete's dry run)."""
        return self.resources.store.count_documents(collection, query_filter)

    def delete_matching(self, collection: str, raw_filter: dict[str, Any],
                        callback_url: str | None = None, version: int | None = None) -> str:
        """Queue the deletion of the documents the (validated, non-empty) filter matches when
        a worker takes the job (its final status is POSTed to `callback_url` when given), at
        `version` (None: the collection's next; bienc.queue.versions); returns its job id."""
        validate_collection_name(collection)
        if callback_url is not None:
            check_callback_url(self.settings, callback_url)
        if self.reads_store:
            self.resources.store.describe(collection)  # CollectionNotFoundError: nothing to delete
        job_id = self.resources.jobs.create(collection, 0, {}, kind="delete", open_=True,
                                            callback_url=callback_url)
        if version is None:
            version = self.resources.versions.assign(collection, 1)
        DeletePlans(self.resources.redis).create(job_id, collection, raw_filter, version)
        self.app.send_task(DELETE_TASK, args=(job_id,), queue=INGEST_QUEUE)
        return job_id

    @property
    def others_write(self) -> bool:
        """Whether something else may write the store while this process reads it: this
        process's own worker, or other processes sharing a Qdrant server."""
        return self.topology.runs_worker or not self.topology.embedded_store

    def snapshot(self, collection: str, out: IO[bytes], portable: bool = False,
                 work: Path | None = None) -> dict[str, Any]:
        """Write a consistent snapshot of `collection` to `out` (bienc.snapshots)."""
        from bienc import snapshots

        return snapshots.create(self.resources, collection, out, hold=self.others_write,
                                portable=portable, work=work)

    def restore(self, source: Path, as_name: str | None = None,
                work: Path | None = None) -> dict[str, Any]:
        """Restore snapshot file `source` as `as_name` (default: its own name)."""
        from bienc import snapshots

        return snapshots.restore(self.resources, source, as_name, hold=self.others_write,
                                 work=work)

    def export_page(self, collection: str, cursor: str | None, limit: int
                    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of `collection`'s documents and the next page's cursor (bienc.snapshots)."""
        from bienc import snapshots

        return snapshots.export_page(self.resources, collection, cursor, limit)

    def delete_documents(self, collection: str, doc_ids: list[str], wait_s: float = 10.0,
                         version: int | None = None) -> list[str]:
        """Delete documents through the collection's name, as a writer of it (a reindex in
        progress sees the deletion; while it switches, this waits up to `wait_s`), at
        `version` (None: the collection's next; bienc.queue.versions). Returns the ids a newer
        stored version kept."""
        from bienc.workers.deleting import delete_documents

        registry, versions = self.resources.reindexes, self.resources.versions
        if version is None:
            version = versions.assign(collection, 1)
        deadline = time.monotonic() + wait_s
        while True:
            with registry.writing(collection) as write:
                if not write.hold:
                    try:
                        _, newer = delete_documents(self.resources.store, versions, collection,
                                                    doc_ids, version, wait_s=DELETE_LOCK_WAIT_S)
                    finally:
                        if write.mark:
                            registry.mark_dirty(collection, doc_ids)
                    return newer
            if time.monotonic() > deadline:
                raise StoreUnavailableError(f"collection {collection!r} is switching to its "
                                            "reindexed or restored collection, or a snapshot of "
                                            "it is being taken; retry in a few seconds")
            time.sleep(0.1)


def _where(found: str) -> str:
    """A state as a transition found it (failed:WHERE), as users read it."""
    state, _, failed_in = found.partition(":")
    return f"{state} (in {failed_in})" if failed_in else state


def build_runtime(settings: Settings, role: Role) -> Runtime:
    """The runtime of a process with `role`; ConfigError for settings that cannot work."""
    return Runtime(Resources(settings), decide(settings, role))
