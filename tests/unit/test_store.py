"""The store against the embedded engine, with hand-made vectors (no model needed)."""

import numpy as np
import pytest
from qdrant_client import QdrantClient

from core.errors import CollectionError, CollectionNotFoundError, InvalidInputError
from core.store import ChunkPoint, VectorStore, metadata_filter, point_id


@pytest.fixture
def store() -> VectorStore:
    return VectorStore(QdrantClient(location=":memory:"), ":memory:")


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _point(doc: str, chunk: int, vector: np.ndarray, chunks: int = 1, **meta: object) -> ChunkPoint:
    payload = {"doc_id": doc, "chunk": chunk, "chunks": chunks, "metadata": meta, "title": None,
               "content_hash": "h"}
    if chunk == 0:
        payload["text"] = f"full text of {doc}"
    if chunks > 1:
        payload["chunk_text"] = f"{doc} chunk {chunk}"
    return ChunkPoint(doc, chunk, vector, payload)


def test_point_ids_are_stable_and_distinct() -> None:
    assert point_id("a", 0) == point_id("a", 0)
    assert len({point_id("a", 0), point_id("a", 1), point_id("b", 0), point_id("a\x001", 0)}) == 4


def test_collection_of_another_model_or_dimension_is_refused(store: VectorStore) -> None:
    store.ensure_collection("c", 3, "model-a")
    store.ensure_collection("c", 3, "model-a")  # idempotent
    with pytest.raises(CollectionError, match="holds 3-d vectors of model 'model-a'"):
        store.ensure_collection("c", 4, "model-b")
    with pytest.raises(CollectionError, match="BIENC_MODEL"):
        store.check_collection("c", 3, "model-b")
    with pytest.raises(CollectionNotFoundError, match="does not exist"):
        store.check_collection("missing", 3, "model-a")


def test_rewriting_a_document_overwrites_instead_of_duplicating(store: VectorStore) -> None:
    store.ensure_collection("c", 3, "m")
    store.upsert("c", [_point("a", 0, _unit(1, 0, 0))])
    store.upsert("c", [_point("a", 0, _unit(0, 1, 0))])
    info = store.info("c")
    assert (info.documents, info.points) == (1, 1)
    hits = store.search("c", _unit(0, 1, 0), 5)
    assert hits[0].doc_id == "a" and hits[0].score == pytest.approx(1.0)


def test_search_returns_each_document_once_scored_by_its_best_chunk(store: VectorStore) -> None:
    store.ensure_collection("c", 3, "m")
    store.upsert("c", [
        _point("long", 0, _unit(1, 0, 0), chunks=3), _point("long", 1, _unit(0.9, 0.1, 0), chunks=3),
        _point("long", 2, _unit(0, 0, 1), chunks=3), _point("short", 0, _unit(0.7, 0.7, 0)),
    ])
    hits = store.search("c", _unit(0, 0, 1), 10)
    assert [h.doc_id for h in hits] == ["long", "short"]
    assert hits[0].chunk == 2 and hits[0].snippet == "long chunk 2"
    assert hits[0].text == "full text of long"  # fetched from chunk 0
    assert store.search("c", _unit(0, 0, 1), 1)[0].doc_id == "long"


def test_stale_chunks_and_documents_are_deleted(store: VectorStore) -> None:
    store.ensure_collection("c", 3, "m")
    store.upsert("c", [_point("a", i, _unit(1, i, 0), chunks=3) for i in range(3)]
                 + [_point("b", 0, _unit(0, 1, 1))])
    store.delete_chunks_from("c", {"a": 1})
    assert store.info("c").points == 2
    store.delete_documents("c", ["a", "b"])
    assert store.info("c").points == 0


def test_metadata_filter_and_threshold(store: VectorStore) -> None:
    store.ensure_collection("c", 3, "m")
    store.upsert("c", [_point("en", 0, _unit(1, 0, 0), lang="en"),
                       _point("fr", 0, _unit(1, 0.1, 0), lang="fr")])
    hits = store.search("c", _unit(1, 0, 0), 10, query_filter=metadata_filter({"lang": "fr"}))
    assert [h.doc_id for h in hits] == ["fr"]
    hits = store.search("c", _unit(1, 0, 0), 10, query_filter=metadata_filter({"lang": ["fr", "en"]}))
    assert len(hits) == 2
    assert store.search("c", _unit(0, 0, 1), 10, score_threshold=0.5) == []
    with pytest.raises(InvalidInputError, match="filter 'lang'"):
        metadata_filter({"lang": {"nested": 1}})
