"""Rebuilding a collection from its own stored text (`bienc reindex`): a new physical
collection with another encoding, filled through the same queue and workers, then switched
to in one step. The protocol with the writers is bienc.queue.reindex's.

Steps, each a task (bienc.workers.tasks), each safe to run again after a crash:
    start    choose the new collection (NAME@N+1) and its encoding, list the documents to
             copy, queue the first copy batches (a few at a time, so that ingests of other
             jobs keep their turn in the queue); run again, queue the batches not copied
    copy     one batch: read the documents' text from the live collection, write them into
             the new one; then queue the next batch, or, after the last, the finish
    finish   from whatever state the reindex is in, to its end: copy the documents written
             meanwhile, fence the writers, copy again, switch the name, drop the old
             collection (copying -> fencing -> switched -> gone); or, after a failed copy, a
             cancel or an abort, drop the new one (aborting -> gone)

Start and finish hold the reindex's lease while they run. A planned failure (a model that
cannot load, documents that cannot be copied) before the switch aborts the reindex; any other
error stops it in `failed`, with writes going on, for `bienc reindex NAME --resume` or
`--abort` (bienc.runtime). Named crash points (bienc.config.crash) mark the steps between
which the fault tests kill a finish.

Copying re-encodes, except where the new encoding makes the same dense vectors (same model,
weights, precision and chunking, as when only lexical vectors are added): then the stored
vectors are copied as they are and only the lexical vectors are computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bienc.config.crash import crash_point
from bienc.config.errors import (
    BiencError,
    CollectionError,
    CollectionNotFoundError,
    ModelLoadError,
    StoreUnavailableError,
)
from bienc.encoding.lexical import LexicalParams, document_text, lexical_encoder, lexical_params
from bienc.ingest.documents import stored_document
from bienc.queue.celery_app import INGEST_QUEUE, REINDEX_BATCH_TASK, REINDEX_FINISH_TASK, app
from bienc.queue.jobs import BatchOutcome
from bienc.queue.leases import new_holder
from bienc.queue.reindex import Lease, LeaseLost, Reindex, State
from bienc.store import record
from bienc.store.interface import ChunkPoint
from bienc.store.record import POINT_IDS, Chunking, CollectionEncoding, physical_name, split_physical
from bienc.workers.indexing import encoding_of, index_documents, index_hash

if TYPE_CHECKING:
    from bienc.encoding.encoder import Encoder
    from bienc.resources import Resources

log = logging.getLogger(__name__)
WINDOW = 4  # copy batches in the queue at once
DRAIN_BATCH = 256  # dirty documents copied at a time
WRITERS_POLL_S = 0.05


def collection_encoder(resources: Resources, name: str) -> tuple[CollectionEncoding, Encoder]:
    """The encoding collection `name` records (the settings' for a new one; the settings'
    chunking for one recorded without) and its model."""
    try:
        recorded = resources.store.describe(name)
    except CollectionNotFoundError:
        recorded = resources.default_encoding()
    recorded = with_chunking(recorded, resources)
    return recorded, resources.encoder_for(name, recorded)


def with_chunking(recorded: CollectionEncoding, resources: Resources) -> CollectionEncoding:
    if recorded.chunking is not None:
        return recorded
    settings = resources.settings
    return replace(recorded, chunking=Chunking(settings.chunking, settings.chunk_tokens,
                                               settings.chunk_overlap))


def target_encoding(resources: Resources, name: str, source: CollectionEncoding,
                    options: dict[str, Any]) -> CollectionEncoding:
    """The new collection's encoding: the live one's (`source`, its chunking known), changed
    as `options` ask (model, chunk_tokens, chunk_overlap, lexical)."""
    assert source.chunking is not None  # with_chunking
    chunking = source.chunking
    tokens, overlap = options.get("chunk_tokens"), options.get("chunk_overlap")
    if tokens is not None or overlap is not None:
        chunking = Chunking(True, tokens or chunking.tokens,
                            overlap if overlap is not None else chunking.overlap)
        if chunking.overlap >= chunking.tokens:
            raise CollectionError(f"chunk overlap {chunking.overlap} must be smaller than the "
                                  f"chunk size {chunking.tokens}")
    wanted = options.get("lexical")
    lexical: LexicalParams | None
    if wanted is None:
        lexical = LexicalParams.from_record(source.lexical) if source.lexical is not None else None
    elif wanted:
        lexical = (LexicalParams.from_record(source.lexical) if source.lexical is not None
                   else lexical_params(resources.settings) or LexicalParams())
    else:
        lexical = None
    model = options.get("model")
    if not model:  # the same model (nothing to load): the record, rechunked and relexed, with
        # the point ids a new collection gets
        return replace(source, chunking=chunking,
                       lexical=lexical.record() if lexical is not None else None,
                       point_ids=POINT_IDS[-1])
    try:
        encoder = resources.model(model)
    except ModelLoadError as exc:
        raise CollectionError(f"cannot reindex {name!r} with model {model!r}: {exc}") from exc
    return encoding_of(encoder, chunking, lexical)


def same_vectors(source: CollectionEncoding, target: CollectionEncoding) -> bool:
    """Whether both encodings make the same dense vectors of the same chunks."""
    return (source.model, source.weights, source.encoding, source.dimension, source.chunking) \
        == (target.model, target.weights, target.encoding, target.dimension, target.chunking)


def next_generation(resources: Resources, name: str) -> int:
    return record.next_generation(name, resources.store.list_physical())


def _send(task: str, *args: Any) -> None:
    app.send_task(task, args=args, queue=INGEST_QUEUE)


class StepBusy(Exception):
    """Another live process runs a step of this reindex (it holds the lease): try later."""


def _wait_for_writers(resources: Resources, name: str, seq: int) -> None:
    """Until every writer of `name` numbered before `seq` is done (or known dead)."""
    registry = resources.reindexes
    while registry.writers_before(name, seq):
        time.sleep(WRITERS_POLL_S)


def _current(resources: Resources, job_id: str, name: str) -> Reindex | None:
    reindex = resources.reindexes.get(name)
    return reindex if reindex is not None and reindex.job_id == job_id else None


def _take(resources: Resources, reindex: Reindex, leaving: str, to: State | None,
          holder: str, **fields: str) -> bool:
    """Take the reindex's lease (and change its state, set `fields`): False when it is in
    none of the states `leaving`, or ended; StepBusy while another live process holds it."""
    took = resources.reindexes.transition(reindex, leaving, to, holder, fields=fields)
    if took.outcome == "leased":
        raise StepBusy(f"the reindex of {reindex.name!r} is {took.found}, run by another process")
    return bool(took)


# Start and copy


def start(resources: Resources, job_id: str, name: str) -> None:
    """Plan the copy (once: run again, after a crash or a resume, it queues what is left)."""
    registry = resources.reindexes
    reindex = _current(resources, job_id, name)
    holder = new_holder()
    if reindex is None or not _take(resources, reindex, "copying failed:copying", "copying", holder):
        return  # ended, or aborting (its own task ends it)
    with registry.leased(reindex, holder), _stopping_on_error(resources, job_id, name, holder):
        if registry.planned(name):
            _queue_left(resources, reindex)
        else:
            _plan(resources, reindex)


def _plan(resources: Resources, reindex: Reindex) -> None:
    registry, store, name, job_id = resources.reindexes, resources.store, reindex.name, reindex.job_id
    source = reindex.source or store.resolve(name)
    if source is None:
        raise CollectionNotFoundError(f"collection {name!r} does not exist; nothing to reindex")
    _wait_for_writers(resources, name, reindex.begin_seq)  # those that did not know of it
    source_encoding = with_chunking(store.describe(source), resources)
    encoding = target_encoding(resources, name, source_encoding, reindex.options)
    target = reindex.target or physical_name(name, next_generation(resources, name))
    store.ensure_collection(target, encoding)
    registry.set_plan(name, source, target)
    ids = store.document_ids(source)
    size = resources.settings.ingest_batch_size
    batches = [ids[i:i + size] for i in range(0, len(ids), size)]
    registry.set_batches(name, batches)
    resources.jobs.set_total(job_id, len(ids))
    log.info("reindex of %r: %d documents from %s into %s", name, len(ids), source, target)
    if not batches:
        _queue_finish(resources, reindex)
    for _ in range(min(WINDOW, len(batches))):
        _queue_next_batch(resources, reindex)


def _queue_left(resources: Resources, reindex: Reindex) -> None:
    """Queue again the batches not copied yet (one in a worker's hands is copied twice: the
    same points), or the finish if none is left."""
    registry = resources.reindexes
    left = registry.batches_left(reindex.name)
    log.info("reindex of %r resumed: %d batches left to copy", reindex.name, len(left))
    for batch_no in left:
        _send(REINDEX_BATCH_TASK, reindex.job_id, reindex.name, batch_no)
    if not left:
        registry.reset_finish(reindex.name)
        _queue_finish(resources, reindex)


def _queue_next_batch(resources: Resources, reindex: Reindex) -> None:
    batch_no = resources.reindexes.take_next_batch(reindex.name)
    if batch_no is not None:
        _send(REINDEX_BATCH_TASK, reindex.job_id, reindex.name, batch_no)


def _queue_finish(resources: Resources, reindex: Reindex) -> None:
    if resources.reindexes.claim_finish(reindex.name):
        _send(REINDEX_FINISH_TASK, reindex.job_id, reindex.name)


def copy_batch(resources: Resources, job_id: str, name: str, batch_no: int) -> None:
    reindex = _current(resources, job_id, name)
    if reindex is None or reindex.state != "copying" or reindex.source is None \
            or reindex.target is None:
        return  # ended, aborting or stopped meanwhile (a resume queues it again)
    with _stopping_on_error(resources, job_id, name, "", leaving="copying"):
        ids = resources.reindexes.batch(name, batch_no)
        outcome = copy_documents(resources, reindex.source, reindex.target, ids, job_id)
        resources.jobs.record_batch(job_id, batch_no, outcome, ids)
        all_copied = resources.reindexes.copied(name, batch_no)
        _queue_next_batch(resources, reindex)
        if all_copied:
            _queue_finish(resources, reindex)


def copy_documents(resources: Resources, source: str, target: str, doc_ids: Sequence[str],
                   job_id: str) -> BatchOutcome:
    """Make `target` hold `doc_ids` as `source` holds them now (absent there: absent here)."""
    store = resources.store
    source_encoding = with_chunking(store.describe(source), resources)
    encoding = store.describe(target)
    heads = store.first_chunks(source, doc_ids)
    missing = [d for d in doc_ids if d not in heads]
    store.delete_documents(target, missing)
    present = [d for d in doc_ids if d in heads]
    copied: list[str] = []
    if same_vectors(source_encoding, encoding):
        copied = _copy_vectors(resources, source, target, present, encoding, job_id)
    rest = [d for d in present if d not in set(copied)]
    outcome = BatchOutcome()
    if rest:
        encoder = resources.encoder_for(target, encoding)
        docs = [stored_document(d, heads[d]) for d in rest]
        outcome = index_documents(docs, target, encoder, store, encoding, job_id, create=False,
                                  versions=resources.versions)
    return BatchOutcome(indexed=outcome.indexed + len(copied),
                        skipped=outcome.skipped + len(missing), failures=outcome.failures,
                        superseded=outcome.superseded)


def _copy_vectors(resources: Resources, source: str, target: str, doc_ids: Sequence[str],
                  encoding: CollectionEncoding, job_id: str) -> list[str]:
    """Copy the documents' stored chunk vectors with new payload hashes and lexical vectors;
    returns the documents copied (one caught mid-replacement, its chunks of two versions, is
    left for re-encoding)."""
    store = resources.store
    by_doc: dict[str, list[ChunkPoint]] = {}
    for point in store.document_points(source, doc_ids):
        by_doc.setdefault(point.doc_id, []).append(point)
    lexical = LexicalParams.from_record(encoding.lexical) if encoding.lexical is not None else None
    assert encoding.chunking is not None
    points: list[ChunkPoint] = []
    copied: list[str] = []
    for doc_id in doc_ids:
        chunks = sorted(by_doc.get(doc_id, []), key=lambda p: p.chunk_no)
        if not chunks or chunks[0].chunk_no != 0:
            continue
        head = chunks[0].payload
        if [p.chunk_no for p in chunks] != list(range(int(head.get("chunks", 1)))) or \
                len({p.payload.get("content_hash") for p in chunks}) != 1:
            continue
        document = stored_document(doc_id, head)
        content_hash = index_hash(document, encoding.chunking, lexical)
        sparse = lexical_encoder(lexical).embed_documents(
            [document_text(document.title, document.text)])[0] if lexical is not None else None
        for point in chunks:
            payload = {**point.payload, "content_hash": content_hash}
            if point.chunk_no == 0:
                payload["job_id"] = job_id
            points.append(ChunkPoint(doc_id, point.chunk_no, point.vector, payload,
                                     sparse if point.chunk_no == 0 else None))
        copied.append(doc_id)
    for start in range(0, len(points), 512):
        store.upsert(target, points[start:start + 512])
    store.delete_chunks_from(target, {d: len(by_doc[d]) for d in copied})
    return copied


def _drain(resources: Resources, reindex: Reindex) -> None:
    """Copy the documents written since the copy began, until none is left."""
    assert reindex.source is not None and reindex.target is not None
    while ids := resources.reindexes.pop_dirty(reindex.name, DRAIN_BATCH):
        try:
            outcome = copy_documents(resources, reindex.source, reindex.target, ids, reindex.job_id)
        except BaseException:  # copied again when the finish runs again
            resources.reindexes.mark_dirty(reindex.name, ids)
            raise
        if outcome.failures:
            doc_id, reason = next(iter(outcome.failures.items()))
            raise CollectionError(f"{len(outcome.failures)} documents written during the reindex "
                                  f"could not be copied ({doc_id}: {reason})")


# Finish: from wherever the reindex stands to its end


def finish(resources: Resources, job_id: str, name: str) -> None:
    """Drive the reindex from its state to its end: fence, switch, clean up; or abort. Run
    by the last copy batch, by a cancel, `--resume` and `--abort`; run again after a crash, it
    goes on from the state the crash left."""
    registry = resources.reindexes
    reindex = _current(resources, job_id, name)
    holder = new_holder()
    if reindex is None or not _take(resources, reindex, FINISHABLE, None, holder):
        return  # ended; or copying still (a resume's start task handles that)
    with registry.leased(reindex, holder) as lease, \
            _stopping_on_error(resources, job_id, name, holder):
        while (reindex := _current(resources, job_id, name)) is not None:
            if reindex.state == "failed":
                if not _take(resources, reindex, reindex.at, reindex.failed_in, holder):
                    return
                log.info("reindex of %r goes on from %s", name, reindex.where)
                continue
            if not _STEPS[reindex.state](resources, reindex, lease):
                return


def _fence(resources: Resources, reindex: Reindex, lease: Lease) -> bool:
    """copying -> fencing, once every batch is copied (else False: not this task's turn);
    -> aborting if documents could not be copied."""
    registry, name, holder = resources.reindexes, reindex.name, lease.holder
    if not registry.copied(name):
        return False
    status = resources.jobs.get(reindex.job_id)
    if status is not None and status.failed:
        doc_id, reason = next(iter(status.failures.items()), ("", ""))
        _take(resources, reindex, "copying", "aborting", holder, abort_outcome="failed",
              abort_reason=f"{status.failed} documents could not be copied ({doc_id}: {reason}); "
                           "the collection is unchanged")
        return True
    _drain(resources, reindex)  # most of them while writes go on: the fence is short
    crash_point("reindex.copying.drained")
    _take(resources, reindex, "copying", "fencing", holder)  # a cancel came first: aborting
    return True


def _switch(resources: Resources, reindex: Reindex, lease: Lease) -> bool:
    """fencing -> switched: wait for the writers that may not have seen the fence, copy what
    they wrote, point the name at the new collection."""
    store, name = resources.store, reindex.name
    assert reindex.source is not None and reindex.target is not None
    if store.resolve(name) != reindex.target:
        crash_point("reindex.fencing.entered")
        _wait_for_writers(resources, name, reindex.fence_seq)
        _drain(resources, reindex)
        crash_point("reindex.fencing.drained")
        lease.check()  # a whole lease left for the switch: nobody else can have taken over
        store.switch_alias(name, reindex.target)
        crash_point("reindex.fencing.switched")
    return _take(resources, reindex, "fencing", "switched", lease.holder)


def _clean(resources: Resources, reindex: Reindex, lease: Lease) -> bool:
    """switched -> done: drop the old collection (`keep_old`: keep it), forget the reindex."""
    assert reindex.source is not None and reindex.target is not None
    keep = reindex.options.get("keep_old") and split_physical(reindex.source) is not None
    if not keep and reindex.source != reindex.target:
        resources.store.drop_physical(reindex.source)
    crash_point("reindex.switched.dropped")
    if resources.reindexes.end(reindex, lease.holder):
        resources.jobs.close(reindex.job_id)
        log.info("reindex of %r done: %s now serves it", reindex.name, reindex.target)
    return False


def _abort(resources: Resources, reindex: Reindex, lease: Lease) -> bool:
    """aborting -> gone: drop the new collection, forget the reindex; the job ends with the
    outcome the abort recorded. Where the name already serves the new collection (the switch
    came before the abort), it keeps serving it, and the old one is kept."""
    store, name, target = resources.store, reindex.name, reindex.target
    outcome = reindex.abort_outcome or "cancelled"
    reason = reindex.abort_reason or "aborted"
    if target is not None and store.resolve(name) == target:
        reason += f"; {name!r} already served the new collection {target}, and still does"
        if reindex.source is not None and store.resolve(reindex.source) == reindex.source:
            reason += (f"; the old one, {reindex.source}, is kept (drop it with DELETE "
                       f"/v1/collections/{reindex.source})")
    elif target is not None:
        try:
            store.drop_physical(target)
        except StoreUnavailableError:
            raise  # retried
        except Exception as exc:  # the abort ends anyway: the name never served it
            log.exception("dropping %s after the reindex of %r failed", target, name)
            reason += (f"; its new collection {target} could not be dropped ({type(exc).__name__}: "
                       f"{exc}): drop it with DELETE /v1/collections/{target}")
    crash_point("reindex.aborting.dropped")
    if resources.reindexes.end(reindex, lease.holder):
        resources.jobs.close(reindex.job_id, outcome, reason)
        log.warning("reindex of %r %s: %s", name, outcome, reason)
    return False


_STEPS: dict[str, Callable[[Resources, Reindex, Lease], bool]] = {
    "copying": _fence, "fencing": _switch, "switched": _clean, "aborting": _abort}
FINISHABLE = "copying fencing switched aborting failed:fencing failed:switched failed:aborting"


# Errors


@contextmanager
def _stopping_on_error(resources: Resources, job_id: str, name: str, holder: str,
                       leaving: str = "copying fencing switched aborting failed") -> Iterator[None]:
    """Around a step: a planned failure (BiencError) before the switch aborts the reindex;
    anything else stops it in `failed`, where writes are never held. A store outage is
    re-raised, for the task to retry; where the step may hold writes (past the copy), after
    stopping, so that they go on meanwhile (the retry goes on from `failed`)."""
    try:
        yield
    except (StepBusy, LeaseLost):
        raise
    except StoreUnavailableError as exc:
        if leaving != "copying":
            _stop(resources, job_id, name, holder, leaving, f"store unavailable: {exc}", close=False)
        raise
    except BiencError as exc:
        if not _abort_on(resources, job_id, name, holder, str(exc)):
            _stop(resources, job_id, name, holder, leaving, str(exc))
    except Exception as exc:
        log.exception("the reindex of %r stopped", name)
        _stop(resources, job_id, name, holder, leaving, f"{type(exc).__name__}: {exc}")


def _abort_on(resources: Resources, job_id: str, name: str, holder: str, reason: str) -> bool:
    """Abort a reindex that failed as planned, before its switch; False after it."""
    reindex = _current(resources, job_id, name)
    if reindex is None:
        return True
    if reindex.state not in ("copying", "fencing") or not _take(
            resources, reindex, reindex.at, "aborting", holder, abort_outcome="failed",
            abort_reason=reason):
        return False
    aborting = _current(resources, job_id, name)
    if aborting is not None:
        with _stopping_on_error(resources, job_id, name, holder, leaving="aborting"):
            _abort(resources, aborting, Lease(resources.reindexes, name, holder))
    return True


def _stop(resources: Resources, job_id: str, name: str, holder: str, leaving: str, error: str,
          close: bool = True) -> None:
    """Record the reindex as failed where it stood (writes released), and, with `close`, end
    its job as failed, saying how to go on."""
    reindex = _current(resources, job_id, name)
    if reindex is None:
        return
    stopped = resources.reindexes.transition(reindex, leaving, "failed", holder,
                                             fields={"error": error[:1000]})
    if not stopped and not stopped.found.startswith("failed"):
        log.error("the reindex of %r (%s) could not be stopped after: %s", name, stopped.found, error)
        return
    if close:
        give_up(resources, job_id, name, error)


def give_up(resources: Resources, job_id: str, name: str, error: str) -> None:
    """End the job of a reindex stopped in `failed` (or not started): failed, with the state
    it stopped in and how to go on."""
    reindex = _current(resources, job_id, name)
    if reindex is not None and reindex.state != "failed":
        stopped = resources.reindexes.transition(reindex, reindex.at, "failed",
                                                 fields={"error": error[:1000]})
        reindex = _current(resources, job_id, name) if stopped else reindex
    if reindex is None:
        resources.jobs.close(job_id, "failed", error)
        return
    resources.jobs.close(job_id, "failed", f"{error}; the reindex of {name!r} stopped, "
                         f"{reindex.where}, and writes to it go on: {reindex.way_out()}")
    log.error("reindex of %r stopped, %s: %s", name, reindex.where, error)
