"""Indexing one batch: skip unchanged documents, chunk, encode, upsert, drop stale chunks."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.encoder import Encoder
from core.jobs import BatchOutcome
from core.store import ChunkPoint, VectorStore
from ingest.chunking import Chunk, chunk_document
from ingest.documents import Document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkingParams:
    chunk_tokens: int
    overlap: int

    def fingerprint(self) -> str:
        return f"{self.chunk_tokens}/{self.overlap}"


def index_hash(document: Document, params: ChunkingParams) -> str:
    """Equal for two ingests exactly when the second would write the same points."""
    return hashlib.sha256(f"{document.content_hash}|{params.fingerprint()}".encode()).hexdigest()


def chunk_documents(documents: Sequence[Document], encoder: Encoder,
                    params: ChunkingParams) -> list[list[Chunk]]:
    """Chunks of each document, in the model's own tokens."""
    tokenizer = encoder.tokenizer
    chunk_tokens = min(params.chunk_tokens, encoder.max_seq_length)
    bodies = tokenizer([d.text for d in documents], add_special_tokens=False,
                       return_offsets_mapping=True)["offset_mapping"]
    titles = tokenizer([d.title or "" for d in documents], add_special_tokens=False,
                       return_offsets_mapping=True)["offset_mapping"]
    return [
        chunk_document(d.title, title_offsets, d.text, offsets, chunk_tokens, params.overlap)
        for d, title_offsets, offsets in zip(documents, titles, bodies, strict=True)
    ]


def build_points(document: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                 content_hash: str) -> list[ChunkPoint]:
    """Points of one document: chunk 0 holds the full text, every chunk its own window."""
    points = []
    for chunk, vector in zip(chunks, vectors, strict=True):
        payload: dict[str, object] = {
            "doc_id": document.id, "chunk": chunk.chunk_no, "chunks": len(chunks),
            "title": document.title, "metadata": document.metadata, "content_hash": content_hash,
        }
        if chunk.chunk_no == 0:
            payload["text"] = document.text
        if len(chunks) > 1:
            payload["chunk_text"] = chunk.body
        points.append(ChunkPoint(document.id, chunk.chunk_no, vector, payload))
    return points


def _encode_isolating_failures(
    encoder: Encoder, documents: Sequence[Document], chunked: Sequence[Sequence[Chunk]]
) -> tuple[list[np.ndarray | None], dict[str, str]]:
    """Vectors per document; a batch that fails is retried one document at a time so that
    one poison document fails alone."""
    texts = [c.text for chunks in chunked for c in chunks]
    try:
        flat = encoder.encode_documents(texts)
    except Exception:
        log.warning("encoding a batch of %d documents failed; isolating the bad ones", len(documents))
    else:
        out: list[np.ndarray | None] = []
        start = 0
        for chunks in chunked:
            out.append(flat[start : start + len(chunks)])
            start += len(chunks)
        return out, {}
    vectors: list[np.ndarray | None] = []
    failures: dict[str, str] = {}
    for document, chunks in zip(documents, chunked, strict=True):
        try:
            vectors.append(encoder.encode_documents([c.text for c in chunks]))
        except Exception as exc:
            vectors.append(None)
            failures[document.id] = f"encoding failed: {type(exc).__name__}: {exc}"[:500]
    return vectors, failures


def index_documents(documents: Sequence[Document], collection: str, encoder: Encoder,
                    store: VectorStore, params: ChunkingParams) -> BatchOutcome:
    """Make `documents` searchable in `collection` exactly as given. Idempotent.

    Documents whose text, title, metadata and chunking are unchanged since their last ingest
    cost no encoding. Raises StoreUnavailableError (retry the batch) or CollectionError.
    """
    store.ensure_collection(collection, encoder.dimension, encoder.identity)
    stored = store.first_chunks(collection, [d.id for d in documents])
    hashes = {d.id: index_hash(d, params) for d in documents}
    changed = [d for d in documents if stored.get(d.id, {}).get("content_hash") != hashes[d.id]]
    skipped = len(documents) - len(changed)
    if not changed:
        return BatchOutcome(indexed=0, skipped=skipped)
    chunked = chunk_documents(changed, encoder, params)
    vectors, failures = _encode_isolating_failures(encoder, changed, chunked)
    points: list[ChunkPoint] = []
    written: list[tuple[Document, int]] = []
    for document, chunks, doc_vectors in zip(changed, chunked, vectors, strict=True):
        if doc_vectors is not None:
            points.extend(build_points(document, chunks, doc_vectors, hashes[document.id]))
            written.append((document, len(chunks)))
    store.upsert(collection, points)
    stale = {d.id: n for d, n in written if int(stored.get(d.id, {}).get("chunks", 0)) > n}
    store.delete_chunks_from(collection, stale)
    return BatchOutcome(indexed=len(written), skipped=skipped, failures=failures)

