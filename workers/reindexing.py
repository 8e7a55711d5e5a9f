"""Rebuilding a collection from its own stored text (`bienc reindex`): a new physical
collection with another encoding, filled through the same queue and workers, then switched
to in one step. The protocol with the writers is bienc.queue.reindex's.

Steps, each a task (bienc.workers.tasks), each safe to run again after a crash:
    start    choose the new collection (NAME@N+1) and its encoding, list the documents to
             copy, queue the first copy batches (a few at a time, so that ingests of other
             jobs keep their turn in the queue)
    copy     one batch: read the documents' text from the live collection, write them into
             the new one; then queue the next batch, or, after the last, the finish
    finish   copy the documents written meanwhile, fence the writers, copy again, switch the
             name, drop the old collection. A failed copy or a cancel drops the new one instead.

Copying re-encodes, except where the new encoding makes the same dense vectors (same model,
weights, precision and chunking, as when only lexical vectors are added): then the stored
vectors are copied as they are and only the lexical vectors are computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bienc.config.errors import BiencError, CollectionError, CollectionNotFoundError, ModelLoadError
from bienc.encoding.lexical import LexicalParams, document_text, lexical_encoder, lexical_params
from bienc.ingest.documents import stored_document
from bienc.queue.celery_app import INGEST_QUEUE, REINDEX_BATCH_TASK, REINDEX_FINISH_TASK, app
from bienc.queue.jobs import BatchOutcome
from bienc.queue.reindex import Reindex
from bienc.store import record
from bienc.store.interface import ChunkPoint
from bienc.store.record import Chunking, CollectionEncoding, physical_name, split_physical
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
    if not model:  # the same model (nothing to load): the record, rechunked and relexed
        return replace(source, chunking=chunking,
                       lexical=lexical.record() if lexical is not None else None)
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


def _wait_for_writers(resources: Resources, name: str, since: float) -> None:
    """Until every writer of `name` that started before `since` is done (or taken for dead)."""
    registry = resources.reindexes
    while registry.writers_before(name, since):
        time.sleep(WRITERS_POLL_S)


def _current(resources: Resources, job_id: str, name: str) -> Reindex | None:
    reindex = resources.reindexes.get(name)
    return reindex if reindex is not None and reindex.job_id == job_id else None


def start(resources: Resources, job_id: str, name: str) -> None:
    registry, store = resources.reindexes, resources.store
    reindex = _current(resources, job_id, name)
    if reindex is None:
        return
    if reindex.cancelled:
        _queue_finish(resources, reindex)
        return
    source = reindex.source or store.resolve(name)
    if source is None:
        raise CollectionNotFoundError(f"collection {name!r} does not exist; nothing to reindex")
    _wait_for_writers(resources, name, reindex.phase_at)  # those that did not know of it
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


def _queue_next_batch(resources: Resources, reindex: Reindex) -> None:
    batch_no = resources.reindexes.take_next_batch(reindex.name)
    if batch_no is not None:
        _send(REINDEX_BATCH_TASK, reindex.job_id, reindex.name, batch_no)


def _queue_finish(resources: Resources, reindex: Reindex) -> None:
    if resources.reindexes.claim_finish(reindex.name):
        _send(REINDEX_FINISH_TASK, reindex.job_id, reindex.name)


def copy_batch(resources: Resources, job_id: str, name: str, batch_no: int) -> None:
    reindex = _current(resources, job_id, name)
    if reindex is None or reindex.source is None or reindex.target is None:
        return  # ended (cancelled, failed) meanwhile
    if reindex.cancelled:
        return  # the cancel queued the finish, which drops the new collection
    ids = resources.reindexes.batch(name, batch_no)
    outcome = copy_documents(resources, reindex.source, reindex.target, ids, job_id)
    jobs = resources.jobs
    jobs.record_batch(job_id, batch_no, outcome, ids)
    _queue_next_batch(resources, reindex)
    status = jobs.get(job_id)
    if status is not None and status.queued == 0:
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
        outcome = copy_documents(resources, reindex.source, reindex.target, ids, reindex.job_id)
        if outcome.failures:
            doc_id, reason = next(iter(outcome.failures.items()))
            raise CollectionError(f"{len(outcome.failures)} documents written during the reindex "
                                  f"could not be copied ({doc_id}: {reason})")


def finish(resources: Resources, job_id: str, name: str) -> None:
    store, registry = resources.store, resources.reindexes
    reindex = _current(resources, job_id, name)
    if reindex is None:
        return
    if reindex.cancelled:
        abort(resources, job_id, name, "cancelled", "cancelled (bienc jobs cancel)")
        return
    if reindex.source is None or reindex.target is None:
        raise BiencError(f"the reindex of {name!r} never planned its new collection")
    if store.resolve(name) != reindex.target:  # not switched yet
        status = resources.jobs.get(job_id)
        if status is not None and status.failed:
            doc_id, reason = next(iter(status.failures.items()), ("", ""))
            abort(resources, job_id, name, "failed",
                  f"{status.failed} documents could not be copied ({doc_id}: {reason}); the "
                  f"collection is unchanged")
            return
        _drain(resources, reindex)
        since = reindex.phase_at if reindex.phase == "fence" else registry.fence(name)
        _wait_for_writers(resources, name, since)
        _drain(resources, reindex)
        store.switch_alias(name, reindex.target)
    keep = reindex.options.get("keep_old") and split_physical(reindex.source) is not None
    if not keep and reindex.source != reindex.target:
        store.drop_physical(reindex.source)
    registry.end(reindex)
    resources.jobs.close(job_id)
    log.info("reindex of %r done: %s now serves it", name, reindex.target)


def abort(resources: Resources, job_id: str, name: str, outcome: str, reason: str) -> None:
    """End a reindex that failed or was cancelled: the live collection stays as it is, the new
    one is dropped."""
    reindex = _current(resources, job_id, name)
    if reindex is not None:
        if reindex.target is not None and resources.store.resolve(name) != reindex.target:
            resources.store.drop_physical(reindex.target)
        resources.reindexes.end(reindex)
    resources.jobs.close(job_id, outcome, reason)
    log.warning("reindex of %r %s: %s", name, outcome, reason)
