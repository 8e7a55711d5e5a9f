"""Indexing one batch: leave out the documents a newer version superseded, skip unchanged
ones, chunk, encode (dense chunks, each document's lexical vector), upsert, drop stale chunks."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, closing, nullcontext
from typing import Any

import numpy as np

from bienc.config.errors import CollectionError, StoreUnavailableError
from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams, document_text, lexical_encoder
from bienc.ingest.chunking import Chunk, chunk_document, number_chunks, section_context
from bienc.ingest.documents import Document, Section
from bienc.queue.jobs import BatchOutcome
from bienc.queue.versions import Versions, applies, stored_version
from bienc.store.interface import ChunkPoint, SparseVector, Store
from bienc.store.record import Chunking, CollectionEncoding, check_model, name_of

log = logging.getLogger(__name__)

_RUN_BATCHES = 2  # forward batches' worth of chunks per upsert


def encoding_of(encoder: Encoder, chunking: Chunking,
                lexical: LexicalParams | None = None) -> CollectionEncoding:
    """What a collection made by `encoder`, cut by `chunking`, with lexical vectors of
    parameters `lexical` (None: none) records."""
    return CollectionEncoding(
        model=encoder.identity, dimension=encoder.dimension, encoding=encoder.encoding,
        source=encoder.source, weights=encoder.weights, chunking=chunking,
        lexical=lexical.record() if lexical is not None else None)


def index_hash(document: Document, params: Chunking,
               lexical: LexicalParams | None = None) -> str:
    """Equal for two ingests exactly when the second would write the same points: the same
    document, chunked the same way, with the same lexical parameters (or none)."""
    key = f"{document.content_hash}|{params.fingerprint()}"
    if lexical is not None:
        key += f"|{lexical.fingerprint()}"
    return hashlib.sha256(key.encode()).hexdigest()


def _spans(document: Document) -> list[tuple[str | None, str, Section | None]]:
    """(context, body, section) of each part chunked on its own: the whole text under the
    title for a document without sections (exactly as before sections existed, so such a
    document encodes to the same text), else each non-blank section under its context."""
    if not document.sections:
        return [(document.title, document.text, None)]
    spans: list[tuple[str | None, str, Section | None]] = [
        (section_context(document.title, s.path), document.text[s.start : s.end], s)
        for s in document.sections if document.text[s.start : s.end].strip()]
    return spans or [(document.title, document.text, None)]


def chunk_documents(documents: Sequence[Document], encoder: Encoder,
                    params: Chunking) -> list[list[Chunk]]:
    """Chunks of each document, in the model's own tokens; a document's sections are cut one
    by one (no chunk spans two pages or two sections). Without chunking, each document (each
    section) is one chunk that the model truncates to its window."""
    spans = [_spans(d) for d in documents]
    flat = [span for doc_spans in spans for span in doc_spans]
    if not params.enabled:
        cut = [[Chunk(0, f"{context} {body}" if context else body, body)]
               for context, body, _ in flat]
    else:
        chunk_tokens = min(params.tokens, encoder.max_seq_length)
        bodies = encoder.token_offsets([body for _, body, _ in flat])
        contexts = encoder.token_offsets([context or "" for context, _, _ in flat])
        cut = [chunk_document(context, context_offsets, body, offsets, chunk_tokens, params.overlap)
               for (context, body, _), context_offsets, offsets in zip(flat, contexts, bodies,
                                                                        strict=True)]
    chunked, at = [], 0
    for doc_spans in spans:
        parts = cut[at : at + len(doc_spans)]
        at += len(doc_spans)
        if doc_spans[0][2] is None:
            chunked.append(parts[0])
            continue
        sections = [s for _, _, s in doc_spans if s is not None]
        chunked.append(number_chunks(parts, [s.page for s in sections], [s.path for s in sections]))
    return chunked


def build_points(document: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                 content_hash: str, job_id: str = "",
                 sparse: SparseVector | None = None) -> list[ChunkPoint]:
    """Points of one document: chunk 0 holds the full text, the job that wrote it and the
    document's lexical vector (`sparse`, when the collection keeps them), every chunk its own
    window and the document's version."""
    points = []
    for chunk, vector in zip(chunks, vectors, strict=True):
        payload: dict[str, object] = {
            "doc_id": document.id, "chunk": chunk.chunk_no, "chunks": len(chunks),
            "title": document.title, "metadata": document.metadata, "content_hash": content_hash,
        }
        if document.version is not None:
            payload["version"] = document.version
        if chunk.chunk_no == 0:
            payload["text"] = document.text
            payload["job_id"] = job_id
            if document.sections:  # so that a reindex cuts the document the same way
                payload["sections"] = [s.to_json() for s in document.sections]
        if len(chunks) > 1:
            payload["chunk_text"] = chunk.body
        if chunk.page is not None:
            payload["page"] = chunk.page
        if chunk.section:
            payload["section"] = list(chunk.section)
        points.append(ChunkPoint(document.id, chunk.chunk_no, vector, payload,
                                 sparse if chunk.chunk_no == 0 else None))
    return points


def _encode_alone(encoder: Encoder, document: Document, chunks: Sequence[Chunk]
                  ) -> tuple[np.ndarray | None, str | None]:
    """One document's vectors, or the reason it cannot be encoded."""
    try:
        return encoder.encode_documents([c.text for c in chunks]), None
    except Exception as exc:
        return None, f"encoding failed: {type(exc).__name__}: {exc}"[:500]


def _upsert_isolating_failures(store: Store, collection: str,
                               points: Sequence[ChunkPoint]) -> dict[str, str]:
    """Upsert all points; if the store refuses the batch (not an outage), write document by
    document so that only the documents it refuses fail."""
    try:
        store.upsert(collection, points)
        return {}
    except (StoreUnavailableError, CollectionError):
        raise
    except Exception:
        log.warning("the store refused a batch of %d points; isolating the bad ones", len(points))
    by_doc: dict[str, list[ChunkPoint]] = {}
    for point in points:
        by_doc.setdefault(point.doc_id, []).append(point)
    failures = {}
    for doc_id, doc_points in by_doc.items():
        try:
            store.upsert(collection, doc_points)
        except (StoreUnavailableError, CollectionError):
            raise
        except Exception as exc:
            failures[doc_id] = f"store refused the document: {type(exc).__name__}: {exc}"[:500]
    return failures


def _encode_and_write(encoder: Encoder, store: Store, collection: str,
                      documents: Sequence[Document], chunked: Sequence[Sequence[Chunk]],
                      hashes: dict[str, str], job_id: str,
                      sparse: Sequence[SparseVector | None]
                      ) -> tuple[list[tuple[Document, int]], dict[str, str]]:
    """Encode all chunks of the batch in one plan (longest first, so forward batches pad
    little) and hand each document to a writer thread as soon as its last chunk is encoded,
    a few forward batches' worth at a time, so the encoder does not wait for the store.

    If a forward batch fails, the documents not yet encoded are retried one by one, so that
    a poison document fails alone. Returns the documents written (with their chunk counts)
    and the failures; a store outage raises once the write in flight is done.
    """
    texts = [c.text for chunks in chunked for c in chunks]
    owners = [d for d, chunks in enumerate(chunked) for _ in chunks]
    offsets = np.cumsum([0, *(len(chunks) for chunks in chunked)])
    vectors = np.empty((len(texts), encoder.dimension), dtype=np.float32)
    left = [len(chunks) for chunks in chunked]
    ready: list[int] = []  # encoded documents not yet handed to the writer
    failures: dict[str, str] = {}
    written: list[tuple[Document, int]] = []
    write_every = _RUN_BATCHES * encoder.batch_size  # chunks

    # the stream is closed however this ends: a suspended one holds requests of the
    # encoder's pool (OpenVINO's streams), and an error whose traceback keeps this frame
    # alive would leave the next batch waiting for them
    with (closing(encoder.encode_stream(texts)) as stream,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="bienc-upsert") as writer):
        in_flight: Future[dict[str, str]] | None = None
        pending = 0  # chunks of the documents in `ready`

        def hand_over() -> None:
            nonlocal in_flight, pending
            points: list[ChunkPoint] = []
            for d in ready:
                doc = documents[d]
                points.extend(build_points(doc, chunked[d], vectors[offsets[d] : offsets[d + 1]],
                                           hashes[doc.id], job_id, sparse[d]))
                written.append((doc, len(chunked[d])))
            ready.clear()
            pending = 0
            if in_flight is not None:
                failures.update(in_flight.result())
            in_flight = writer.submit(_upsert_isolating_failures, store, collection, points)

        while True:
            try:  # only the encoder's errors: a store outage from hand_over() propagates
                batch = next(stream, None)
            except Exception:
                log.warning("encoding a batch of %d documents failed; isolating the bad ones",
                            len(documents))
                break
            if batch is None:
                break
            rows, batch_vectors = batch
            vectors[rows] = batch_vectors
            for row in rows:
                d = owners[row]
                left[d] -= 1
                if left[d] == 0:
                    ready.append(d)
                    pending += len(chunked[d])
            if pending >= write_every:
                hand_over()
        for d, count in enumerate(left):  # left only when a forward batch failed
            if count:
                doc_vectors, reason = _encode_alone(encoder, documents[d], chunked[d])
                if reason is not None:
                    failures[documents[d].id] = reason
                else:
                    vectors[offsets[d] : offsets[d + 1]] = doc_vectors
                    ready.append(d)
        if ready:
            hand_over()
        if in_flight is not None:
            failures.update(in_flight.result())
    return written, failures


def locked(versions: Versions | None, collection: str, doc_ids: list[str]
           ) -> AbstractContextManager[Any]:
    """The documents' locks (bienc.queue.versions), or nothing for a single writer."""
    if versions is None:
        return nullcontext()
    return versions.locked(name_of(collection), doc_ids)


def index_documents(documents: Sequence[Document], collection: str, encoder: Encoder,
                    store: Store, encoding: CollectionEncoding, job_id: str = "",
                    create: bool = True, versions: Versions | None = None) -> BatchOutcome:
    """Make `documents` searchable in `collection` exactly as given, unless a newer version of
    one is stored or deleted it. Idempotent.

    A missing collection is created with `encoding` (with `create`; else it is an error:
    CollectionNotFoundError); an existing one is written with the encoding it records (its
    chunking, or, recorded by an older bienc without one, `encoding`'s; its lexical
    parameters), and `encoder` must be its model (check_model). A document older than the
    stored one or than its tombstone (bienc.queue.versions) is left as it is and counts as
    superseded. Documents whose text, title, metadata and chunking are unchanged since their
    last ingest cost no encoding (a newer version of one is only recorded) and count as
    skipped, unless this job wrote them: then an earlier delivery of this batch did, and they
    count as indexed (its stale-chunk cleanup is repeated in case it died before). Raises
    StoreUnavailableError (retry the batch), DocumentsBusyError (another writer holds some of
    the documents: try again later) or CollectionError.

    With `versions` (every worker passes its process's), the documents' locks are held from
    the read of what is stored until the write and its cleanup are done, so that no other
    writer comes between the comparison and the write; without, one writer is assumed.
    """
    recorded = store.ensure_collection(collection, encoding) if create else store.describe(collection)
    check_model(collection, recorded, encoder.identity, encoder.dimension, encoder.weights)
    params = recorded.chunking or encoding.chunking
    if params is None:
        raise CollectionError(f"no chunking given for collection {collection!r}")
    lexical = LexicalParams.from_record(recorded.lexical) if recorded.lexical is not None else None
    ids = [d.id for d in documents]
    with locked(versions, collection, ids):
        stored = store.first_chunks(collection, ids)
        tombstones = versions.tombstones(name_of(collection), ids) if versions else {}
        current = [d for d in documents
                   if applies(d.version or 0, stored.get(d.id), tombstones.get(d.id))]
        outcome = _index_current(current, collection, encoder, store, params, lexical, stored,
                                 job_id)
    return BatchOutcome(indexed=outcome.indexed, skipped=outcome.skipped,
                        failures=outcome.failures, superseded=len(documents) - len(current))


def _index_current(documents: Sequence[Document], collection: str, encoder: Encoder,
                   store: Store, params: Chunking, lexical: LexicalParams | None,
                   stored: dict[str, dict[str, Any]], job_id: str) -> BatchOutcome:
    """index_documents of documents that are not superseded, `stored` being the payloads of
    the chunk 0 of those stored."""
    hashes = {d.id: index_hash(d, params, lexical) for d in documents}
    changed = [d for d in documents if stored.get(d.id, {}).get("content_hash") != hashes[d.id]]
    changed_ids = {d.id for d in changed}
    same = [d for d in documents if d.id not in changed_ids]
    resumed = {d.id: int(stored[d.id].get("chunks", 1)) for d in same
               if job_id and stored[d.id].get("job_id") == job_id}
    store.set_versions(collection, {d.id: d.version for d in same if d.version is not None
                                    and d.version > stored_version(stored[d.id])})
    store.delete_chunks_from(collection, resumed)
    skipped = len(same) - len(resumed)
    if not changed:
        return BatchOutcome(indexed=len(resumed), skipped=skipped)
    chunked = chunk_documents(changed, encoder, params)
    sparse: list[SparseVector | None] = [None] * len(changed)
    if lexical is not None:  # ~60 us a document, against milliseconds to encode its chunks
        sparse = list(lexical_encoder(lexical).embed_documents(
            [document_text(d.title, d.text) for d in changed]))
    written, failures = _encode_and_write(encoder, store, collection, changed, chunked, hashes,
                                          job_id, sparse)
    written = [(d, n) for d, n in written if d.id not in failures]
    # chunks n and above of every document written, whatever its stored chunk 0 says: a
    # crash after an earlier write may have left them behind a chunk 0 that no longer knows
    store.delete_chunks_from(collection, {d.id: n for d, n in written})
    return BatchOutcome(indexed=len(written) + len(resumed), skipped=skipped, failures=failures)

