"""Indexing logic in-process with the real model and the embedded store."""

import gc
import threading
from collections.abc import Generator, Sequence
from contextlib import closing

import numpy as np
import pytest
from qdrant_client import QdrantClient

from bienc.config.errors import StoreUnavailableError
from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams
from bienc.ingest.documents import Document
from bienc.search.searcher import SearchRequest, search
from bienc.store.interface import ChunkPoint
from bienc.store.qdrant import VectorStore
from bienc.store.record import Chunking, CollectionEncoding
from bienc.workers.indexing import build_points, chunk_documents, encoding_of, index_documents, index_hash

PARAMS = Chunking(True, 64, 16)


def _enc(encoder: Encoder, lexical: LexicalParams | None = None,
         chunking: Chunking = PARAMS) -> CollectionEncoding:
    return encoding_of(encoder, chunking, lexical)


class FaultyEncoder(Encoder):
    """The real encoder, made to fail on texts containing a marker (fault injection)."""

    def __init__(self, real: Encoder, marker: str):
        self.__dict__.update(real.__dict__)
        self._marker = marker

    def encode_stream(self, texts: Sequence[str]) -> Generator[tuple[list[int], np.ndarray]]:
        texts = list(texts)
        with closing(super().encode_stream(texts)) as stream:
            for rows, vectors in stream:  # fails in the forward batch
                if any(self._marker in texts[i] for i in rows):
                    raise RuntimeError("poisoned input")
                yield rows, vectors


@pytest.fixture
def store() -> VectorStore:
    return VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)


def _docs(n: int, prefix: str = "") -> list[Document]:
    topics = ["volcanoes", "chess openings", "bread baking", "jazz history", "tidal energy"]
    return [Document(f"d{i}", f"{prefix}A note on {topics[i % 5]}, number {i}.") for i in range(n)]


def test_identical_reingest_encodes_nothing(encoder: Encoder, store: VectorStore) -> None:
    docs = _docs(12)
    first = index_documents(docs, "c", encoder, store, _enc(encoder))
    calls = encoder.calls
    second = index_documents(docs, "c", encoder, store, _enc(encoder))
    assert (first.indexed, second.indexed, second.skipped) == (12, 0, 12)
    assert encoder.calls == calls  # no forward pass at all
    changed = [*docs[:11], Document("d11", "A different note on volcanoes.")]
    third = index_documents(changed, "c", encoder, store, _enc(encoder))
    assert (third.indexed, third.skipped) == (1, 11)
    assert encoder.calls == calls + 1
    other = index_documents(docs[:2], "c", encoder, store, _enc(encoder, chunking=Chunking(True, 32, 8)))
    assert (other.indexed, other.skipped) == (0, 2)  # the collection's own chunking holds


def test_a_poison_document_fails_alone(encoder: Encoder, store: VectorStore) -> None:
    # enough documents for several forward batches, some written before the poison's batch
    docs = [*_docs(100), Document("bad", "this one is POISON for the encoder")]
    outcome = index_documents(docs, "c", FaultyEncoder(encoder, "POISON"), store, _enc(encoder))
    assert outcome.indexed == 100
    assert list(outcome.failures) == ["bad"] and "poisoned input" in outcome.failures["bad"]
    assert store.info("c").documents == 100


class DownStore(VectorStore):
    """The real store, its writes failing as in a Qdrant outage (fault injection)."""

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        raise StoreUnavailableError("Qdrant did not answer (test)")


def test_a_store_outage_mid_batch_raises_and_encodes_nothing_twice(encoder: Encoder) -> None:
    store = DownStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    calls = encoder.calls
    with pytest.raises(StoreUnavailableError):  # the task retries the whole batch later
        index_documents(_docs(200), "c", encoder, store, _enc(encoder))  # several writes per batch
    assert encoder.calls == calls + 1  # not taken for an encoding failure: nothing re-encoded


def test_a_batch_that_failed_to_write_leaves_the_encoder_free(encoder: Encoder) -> None:
    store = DownStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    gc.disable()  # the failed batch's frames stay alive, as in a worker that keeps the error
    try:
        with pytest.raises(StoreUnavailableError) as failed:  # batches still in flight
            index_documents(_docs(400), "c", encoder, store, _enc(encoder))
        done: list[np.ndarray] = []
        texts = [f"A note on the next batch, number {i}." for i in range(300)]
        thread = threading.Thread(target=lambda: done.append(encoder.encode_documents(texts)),
                                  daemon=True)
        thread.start()
        thread.join(timeout=120)
        assert done and done[0].shape == (300, encoder.dimension), \
            "the next batch waited for encoder requests that the failed one never handed back"
        assert failed.value is not None
    finally:
        gc.enable()


def test_shrinking_a_document_leaves_no_orphan_chunk(encoder: Encoder, store: VectorStore) -> None:
    long_text = " ".join(f"Sentence {i} about the slow growth of coral reefs." for i in range(40))
    index_documents([Document("reef", long_text, "Reefs")], "c", encoder, store, _enc(encoder))
    assert store.info("c").points > 5
    shorter = Document("reef", "Coral reefs grow slowly.", "Reefs")
    index_documents([shorter], "c", encoder, store, _enc(encoder))
    info = store.info("c")
    assert (info.documents, info.points) == (1, 1)
    hit = search(store, encoder, "c", SearchRequest(["coral"], top_k=5)).hits[0][0]
    assert hit.text == "Coral reefs grow slowly." and hit.snippet == hit.text


def test_top_k_counts_documents_not_chunks(encoder: Encoder, store: VectorStore) -> None:
    long_text = " ".join(f"Paragraph {i}: glaciers retreat as summers warm." for i in range(30))
    docs = [Document(f"g{i}", long_text + f" Glacier number {i}.") for i in range(12)]
    index_documents(docs, "c", encoder, store, _enc(encoder))
    assert store.info("c").points > 3 * len(docs)
    for k in (10, 1000):
        hits = search(store, encoder, "c", SearchRequest(["glaciers retreat"], top_k=k)).hits[0]
        ids = [h.doc_id for h in hits]
        assert len(ids) == len(set(ids)) == min(k, 12)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_redelivered_batch_counts_as_indexed_and_finishes_cleanup(encoder: Encoder,
                                                                    store: VectorStore) -> None:
    long_text = " ".join(f"Sentence {i} about tides and the moon." for i in range(40))
    index_documents([Document("t", long_text)], "c", encoder, store, _enc(encoder), job_id="old")
    many = store.info("c").points
    short = Document("t", "Tides follow the moon.")
    # a first delivery wrote the new chunks, then its worker died before deleting stale ones
    doc_hash = index_hash(short, PARAMS)
    store.upsert("c", build_points(short, chunk_documents([short], encoder, PARAMS)[0],
                                   encoder.encode_documents([short.text]), doc_hash, "job-2"))
    assert store.info("c").points == many
    calls = encoder.calls
    redelivered = index_documents([short], "c", encoder, store, _enc(encoder), job_id="job-2")
    assert (redelivered.indexed, redelivered.skipped) == (1, 0)
    assert encoder.calls == calls
    assert store.info("c").points == 1
    again = index_documents([short], "c", encoder, store, _enc(encoder), job_id="job-3")
    assert (again.indexed, again.skipped) == (0, 1)  # another job: genuinely unchanged


def test_a_tail_left_by_a_crash_goes_at_the_next_write_of_the_document(encoder: Encoder,
                                                                        store: VectorStore) -> None:
    """A crash between a write and its stale-chunk cleanup leaves an older version's tail
    behind a chunk 0 that counts fewer chunks; the next write of the document, by any job and
    whatever the chunk 0 it finds says, deletes every chunk from its own count on."""
    long_text = " ".join(f"Sentence {i} about rivers and their deltas." for i in range(40))
    index_documents([Document("r", long_text)], "c", encoder, store, _enc(encoder), job_id="old")
    many = store.info("c").points
    short = Document("r", "Rivers end in deltas.")
    store.upsert("c", build_points(short, chunk_documents([short], encoder, PARAMS)[0],
                                   encoder.encode_documents([short.text]),
                                   index_hash(short, PARAMS), "crashed"))
    assert store.info("c").points == many  # the crashed job's cleanup never ran
    other = Document("r", "Rivers carry silt to their deltas.")  # also one chunk, new content
    index_documents([other], "c", encoder, store, _enc(encoder), job_id="next")
    assert store.info("c").points == 1
