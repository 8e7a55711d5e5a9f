"""The Edge store (bienc.store.edge) against the store over qdrant-client's embedded engine
(bienc.store.interface): the same behaviours, then the same rankings on embedding-like vectors."""

from __future__ import annotations

import functools
import itertools
import json
import math
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from bienc.config.errors import CollectionError, CollectionNotFoundError, ConfigError, InvalidInputError
from bienc.encoding.lexical import LexicalEncoder, LexicalParams
from bienc.encoding.openvino import calibration_texts
from bienc.search.searcher import SearchRequest, rank, validate_request
from bienc.store.edge import EdgeVectorStore
from bienc.store.filters import parse_filter
from bienc.store.interface import ChunkPoint, point_id
from bienc.store.qdrant import VectorStore
from bienc.store.record import Chunking, CollectionEncoding, check_model
from bienc.workers.reindexing import target_encoding

Store = VectorStore | EdgeVectorStore


@pytest.fixture
def store(each_engine: Store) -> Store:
    return each_engine


def _enc(dimension: int, model: str = "m", encoding: str = "", lexical: dict[str, Any] | None = None,
         weights: str | None = None) -> CollectionEncoding:
    return CollectionEncoding(model=model, dimension=dimension, encoding=encoding, weights=weights,
                              chunking=Chunking(True, 128, 16), lexical=lexical)


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _point(doc: str, chunk: int, vector: np.ndarray, chunks: int = 1, content_hash: str = "h",
           **meta: object) -> ChunkPoint:
    payload = {"doc_id": doc, "chunk": chunk, "chunks": chunks, "metadata": meta, "title": f"T {doc}",
               "content_hash": content_hash}
    if chunk == 0:
        payload["text"] = f"full text of {doc}"
    if chunks > 1:
        payload["chunk_text"] = f"{doc} chunk {chunk}"
    return ChunkPoint(doc, chunk, vector, payload)


# The same behaviours


def test_a_collection_records_its_encoding_under_its_name(store: Store) -> None:
    made = _enc(3, "model-a", "openvino/int8")
    assert store.ensure_collection("c", made) == made
    assert store.ensure_collection("c", _enc(4, "model-b")) == made  # the record holds
    assert store.describe("c") == made
    assert store.resolve("c") == "c@1" and store.list_physical() == ["c@1"]
    with pytest.raises(CollectionNotFoundError, match="does not exist"):
        store.describe("missing")
    assert store.resolve("missing") is None
    store.ensure_collection("d", _enc(5, "model-b"))
    assert store.list_collections() == ["c", "d"]
    info = store.info("d")
    assert (info.name, info.physical, info.encoding.model, info.encoding.dimension, info.documents,
            info.points) == ("d", "d@1", "model-b", 5, 0, 0)
    assert store.delete_collection("c") is True
    assert store.delete_collection("c") is False
    assert store.list_collections() == ["d"] and store.list_physical() == ["d@1"]


def test_a_name_switches_to_another_physical_collection_in_one_step(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_point("old", 0, _unit(1, 0, 0))])
    store.ensure_collection("c@2", _enc(3, lexical=BM25.record()))  # a reindex's new one
    store.upsert("c@2", [_point("new", 0, _unit(1, 0, 0))])
    assert store.list_collections() == ["c", "c@2"]  # not yet behind a name
    assert [h.doc_id for h in store.search("c", _unit(1, 0, 0), 5)] == ["old"]
    store.switch_alias("c", "c@2")
    assert store.resolve("c") == "c@2" and store.describe("c").lexical == BM25.record()
    assert [h.doc_id for h in store.search("c", _unit(1, 0, 0), 5)] == ["new"]
    assert store.list_collections() == ["c", "c@1"]  # the old one, until it is dropped
    assert [h.doc_id for h in store.search("c@1", _unit(1, 0, 0), 5)] == ["old"]
    assert store.drop_physical("c@1") is True and store.drop_physical("c@1") is False
    assert store.list_collections() == ["c"] and store.info("c").physical == "c@2"


def _holds(store: Store, name: str, point: str) -> bool:
    """Whether the collection `name` holds a point of id `point` (read from the engine)."""
    physical = store.resolve(name) or name
    if isinstance(store, EdgeVectorStore):
        return bool(store._collection(physical).parts.retrieve([point], False))
    return bool(store._client.retrieve(physical, ids=[point]))


def test_a_collection_keeps_the_point_ids_it_was_made_with(store: Store) -> None:
    """Collections made before "document-key" ids keep uuid5 ids: they are written, searched
    and read as before; a new collection's ids name the document, and a reindex's new
    collection gets them."""
    store.ensure_collection("old", replace(_enc(3), point_ids="uuid5"))
    store.ensure_collection("new", _enc(3))
    for name, made in (("old", "uuid5"), ("new", "document-key")):
        assert store.describe(name).point_ids == made
        store.upsert(name, [_point("a", 0, _unit(1, 0, 0), chunks=2),
                            _point("a", 1, _unit(0, 1, 0), chunks=2), _point("b", 0, _unit(1, 1, 0))])
        store.upsert(name, [_point("a", 1, _unit(0, 1, 0), chunks=2)])  # overwritten, not added
        assert store.info(name).points == 3
        assert _holds(store, name, point_id("a", 1, made))
        assert not _holds(store, name, point_id("a", 1, "uuid5" if made != "uuid5" else "document-key"))
        hits = store.search(name, _unit(0, 1, 0), 5)
        assert [(h.doc_id, h.chunk, h.text) for h in hits] == [
            ("a", 1, "full text of a"), ("b", 0, "full text of b")]
        assert set(store.first_chunks(name, ["a", "b", "zz"])) == {"a", "b"}
    assert target_encoding(None, "old", store.describe("old"), {}).point_ids == "document-key"  # type: ignore[arg-type]


def test_a_server_collection_made_again_elsewhere_with_other_ids_is_searched_right() -> None:
    """The qdrant-client engine keeps each collection's point-id scheme instead of asking the
    server on every search. Another process may drop the collection and make it again under
    the same name with the other scheme (an older bienc's uuid5 ids, then new ones): a
    search here still reads the hits' text, having read the scheme again."""
    client = QdrantClient(location=":memory:")
    here = VectorStore(client, ":memory:", remote=False)
    elsewhere = VectorStore(client, ":memory:", remote=False)
    here.ensure_collection("c@1", replace(_enc(3), point_ids="uuid5"))
    here.upsert("c@1", [_point("a", 0, _unit(1, 0, 0))])
    assert [(h.doc_id, h.text) for h in here.search("c@1", _unit(1, 0, 0), 5)] == [("a", "full text of a")]
    elsewhere.drop_physical("c@1")
    elsewhere.ensure_collection("c@1", _enc(3))
    elsewhere.upsert("c@1", [_point("b", 0, _unit(1, 0, 0))])
    assert [(h.doc_id, h.text) for h in here.search("c@1", _unit(1, 0, 0), 5)] == [("b", "full text of b")]
    here.close()


def test_a_collection_made_by_an_older_bienc_is_found_by_its_own_name(tmp_path: Path) -> None:
    """Before aliases, a collection was a physical collection of the user's name."""
    old_record = {"bienc_schema": 1, "model": "m", "dimension": 3, "encoding": "torch/float32"}
    local = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    edge = EdgeVectorStore(tmp_path / "edge")
    try:
        local._client.create_collection("old", vectors_config=qm.VectorParams(
            size=3, distance=qm.Distance.COSINE), metadata=old_record)
        (tmp_path / "edge" / "old").mkdir()
        (tmp_path / "edge" / "old" / "collection.json").write_text(json.dumps(old_record))
        for store in (local, edge):
            assert store.resolve("old") == "old" and store.list_collections() == ["old"]
            recorded = store.describe("old")
            assert (recorded.model, recorded.encoding, recorded.chunking, recorded.weights,
                    recorded.lexical, recorded.point_ids) == ("m", "torch/float32", None, None, None,
                                                              "uuid5")
            store.upsert("old", [_point("a", 0, _unit(1, 0, 0))])
            store.ensure_collection("old@1", _enc(3))
            store.switch_alias("old", "old@1")
            assert store.resolve("old") == "old@1" and store.info("old").points == 0
            store.drop_physical("old")  # a server has dropped it already, to make the alias
            assert store.list_collections() == ["old"] and store.list_physical() == ["old@1"]
    finally:
        local.close()
        edge.close()


def test_the_same_name_with_other_weights_is_another_model() -> None:
    recorded = _enc(3, "all-MiniLM-L6-v2", weights="a" * 64)
    check_model("c", recorded, "all-MiniLM-L6-v2", 3, "a" * 64)
    check_model("c", replace(recorded, weights=None), "all-MiniLM-L6-v2", 3, "b" * 64)  # unknown
    with pytest.raises(CollectionError, match=r"weights aaaaaaaaaaaaaaaa\.\.\., but the model "
                                              r"loaded as 'all-MiniLM-L6-v2' has weights bbbbbbbbbbbbbbbb"):
        check_model("c", recorded, "all-MiniLM-L6-v2", 3, "b" * 64)
    with pytest.raises(CollectionError, match="holds 3-d vectors of model 'all-MiniLM-L6-v2'"):
        check_model("c", recorded, "other/model", 768, "a" * 64)


def test_a_missing_collection_is_reported(store: Store) -> None:
    for call in (lambda: store.info("nope"), lambda: store.get_document("nope", "a"),
                 lambda: store.delete_documents("nope", ["a"])):
        with pytest.raises(CollectionNotFoundError, match="does not exist"):
            call()
    assert store.first_chunks("nope", []) == {}
    store.upsert("nope", [])  # nothing to write: no error, as in VectorStore


def test_rewriting_a_document_overwrites_instead_of_duplicating(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_point("a", 0, _unit(1, 0, 0))])
    store.upsert("c", [_point("a", 0, _unit(0, 1, 0))])
    info = store.info("c")
    assert (info.documents, info.points) == (1, 1)
    hits = store.search("c", _unit(0, 1, 0), 5)
    assert hits[0].doc_id == "a" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_returns_each_document_once_scored_by_its_best_chunk(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [
        _point("long", 0, _unit(1, 0, 0), chunks=3), _point("long", 1, _unit(0.9, 0.1, 0), chunks=3),
        _point("long", 2, _unit(0, 0, 1), chunks=3), _point("short", 0, _unit(0.7, 0.7, 0)),
    ])
    hits = store.search("c", _unit(0, 0, 1), 10)
    assert [h.doc_id for h in hits] == ["long", "short"]
    assert hits[0].chunk == 2 and hits[0].snippet == "long chunk 2"
    assert hits[0].text == "full text of long"  # fetched from chunk 0
    assert hits[0].title == "T long" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].snippet == hits[1].text == "full text of short" and hits[1].chunk == 0
    assert store.search("c", _unit(0, 0, 1), 1)[0].doc_id == "long"
    bare = store.search("c", _unit(0, 0, 1), 10, with_text=False)
    assert [(h.doc_id, h.text, h.snippet, h.chunk) for h in bare] == [("long", None, None, 2),
                                                                        ("short", None, None, 0)]


def test_a_search_after_deletes_and_writes_names_the_documents_there_now(store: Store) -> None:
    """Edge names the documents a search finds from the ids it has read before (a document
    key names one id for good): a deleted document is not found again, and one written
    since is found under its own name, its chunk's text beside it."""
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_point("a", 0, _unit(1, 0, 0)), _point("b", 0, _unit(0.9, 0.1, 0)),
                       _point("c", 0, _unit(0, 1, 0))])
    assert [h.doc_id for h in store.search("c", _unit(1, 0, 0), 3)] == ["a", "b", "c"]
    store.delete_documents("c", ["a"])
    store.upsert("c", [_point("d", 0, _unit(1, 0.05, 0), chunks=2),
                       _point("d", 1, _unit(1, 0.01, 0), chunks=2)])
    hits = store.search("c", _unit(1, 0, 0), 3)
    assert [(h.doc_id, h.chunk, h.snippet) for h in hits] == [
        ("d", 1, "d chunk 1"), ("b", 0, "full text of b"), ("c", 0, "full text of c")]


def test_stale_chunks_and_documents_are_deleted(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_point("a", i, _unit(1, i, 0), chunks=3) for i in range(3)]
                 + [_point("b", 0, _unit(0, 1, 1))])
    store.delete_chunks_from("c", {"a": 1})
    assert store.info("c").points == 2
    assert store.first_chunks("c", ["a", "b", "zz"], ["doc_id", "chunks"]) == {
        "a": {"doc_id": "a", "chunks": 3}, "b": {"doc_id": "b", "chunks": 1}}
    document = store.get_document("c", "a")
    assert document is not None and document["text"] == "full text of a"
    assert store.get_document("c", "zz") is None
    store.delete_documents("c", ["a", "b"])
    assert store.info("c").points == 0


def _versioned(point: ChunkPoint, version: int) -> ChunkPoint:
    return replace(point, payload={**point.payload, "version": version})


def _check_set_versions(store: Store) -> None:
    """Documents `a` (3 chunks) and `b` at version 1 are in `c`: a's version is set to 9 on
    every chunk, nothing else of either changes."""
    before = {(p.doc_id, p.chunk_no): p for p in store.document_points("c", ["a", "b"])}
    store.set_versions("c", {"a": 9})
    after = {(p.doc_id, p.chunk_no): p for p in store.document_points("c", ["a", "b"])}
    assert sorted(after) == sorted(before) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    for key, point in after.items():
        assert point.payload == {**before[key].payload, "version": 9 if key[0] == "a" else 1}
        np.testing.assert_allclose(point.vector, before[key].vector, atol=1e-6)
    assert store.first_chunks("c", ["a"], ["doc_id", "version"]) == {"a": {"doc_id": "a", "version": 9}}
    assert store.info("c").points == 4


def test_a_documents_version_is_set_on_every_chunk_and_nothing_else(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_versioned(_point("a", i, _unit(1, i, 0), chunks=3), 1) for i in range(3)]
                 + [_versioned(_point("b", 0, _unit(0, 1, 1)), 1)])
    _check_set_versions(store)
    store.set_versions("c", {})  # nothing to set: no error


def test_edge_sets_a_version_whichever_parts_hold_the_chunks(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=2)
    store.ensure_collection("c", _enc(3))
    # each upsert fills the active part (2 points): a's chunks end in two sealed parts
    store.upsert("c", [_versioned(_point("a", i, _unit(1, i, 0), chunks=3), 1) for i in range(2)])
    store.upsert("c", [_versioned(_point("a", 2, _unit(1, 2, 0), chunks=3), 1),
                       _versioned(_point("b", 0, _unit(0, 1, 1)), 1)])
    _check_set_versions(store)
    store.close()


def test_metadata_filter_exact_and_list_match_and_threshold(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_point("en", 0, _unit(1, 0, 0), lang="en", year=2020, open=True),
                       _point("fr", 0, _unit(1, 0.1, 0), lang="fr", year=2021, open=False),
                       _point("de", 0, _unit(1, 0.2, 0), lang="de", year=1, open=1)])

    def found(**filters: object) -> list[str]:
        return [h.doc_id for h in store.search("c", _unit(1, 0, 0), 10,
                                               query_filter=parse_filter(filters))]

    for _ in range(2):  # the second time over the payload indexes the first made (Edge)
        assert found(lang="fr") == ["fr"]
        assert found(year=2020) == ["en"]
        assert found(open=True) == ["en"]  # a boolean, not the integer 1
        assert found(year=True) == []
        assert found(lang=["fr", "en"]) == ["en", "fr"]
        assert found(year=[2021, 1]) == ["fr", "de"]
        assert found(lang="fr", year=2020) == []
    assert store.search("c", _unit(0, 0, 1), 10, score_threshold=0.5) == []
    assert [h.doc_id for h in store.search("c", _unit(1, 0, 0), 10, score_threshold=0.99)] == ["en", "fr"]
    with pytest.raises(InvalidInputError, match="filter 'lang'"):
        parse_filter({"lang": {"nested": 1}})


_RANGED: dict[str, dict[str, object]] = {  # metadata of every kind a range, not or exists meets
    "int3": {"x": 3, "when": "2024-05-01", "lang": "en"},
    "dec3.5": {"x": 3.5, "when": "2024-05-01T10:00:00Z", "lang": "fr"},
    "int4": {"x": 4, "when": "2024-05-01T10:00:00+02:00", "lang": None},  # 08:00 UTC
    "bool": {"x": True, "when": "2024-05-01 10:00", "lang": []},  # no offset: UTC
    "text5": {"x": "5", "when": "2024-05-01T23:59:59.999999999", "lang": ["en", "de"]},
    "list": {"x": [1, 7], "when": ["2023-12-31", "2025-01-01T00:00:00Z"]},
    "null": {"x": None, "when": 1714521600, "nested": {"year": 2021}},  # a number is no date
    "bare": {"nested": {"year": 2019}},
}
_RANGE_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"x": {"gte": 3.2}}, {"dec3.5", "int4", "list"}),  # one item of a list is enough
    ({"x": {"gte": 3, "lt": 4}}, {"int3", "dec3.5"}),
    ({"x": {"gt": 3, "lte": 4}}, {"dec3.5", "int4"}),
    ({"x": {"lt": 2}}, {"list"}),  # neither a boolean nor a numeric string is a number
    ({"when": {"gte": "2024-05-01T09:00:00Z"}}, {"dec3.5", "bool", "text5", "list"}),
    ({"when": {"gte": "2024-05-01T09:00:00+01:00", "lt": "2024-05-02"}}, {"dec3.5", "int4", "bool", "text5"}),
    ({"when": {"lt": "2024-05-01T00:00:00.000001Z"}}, {"int3", "list"}),
    ({"when": {"lte": "2024-05-01"}}, {"int3", "list"}),
    ({"lang": {"exists": True}}, {"int3", "dec3.5", "text5"}),
    ({"lang": {"exists": False}}, {"int4", "bool", "list", "null", "bare"}),
    ({"nested.year": {"gt": 2020}}, {"null"}),
    ({"not": {"lang": "en"}}, {"dec3.5", "int4", "bool", "list", "null", "bare"}),
    ({"not": {"x": {"gte": 3}, "lang": {"exists": True}}},
     {"int4", "bool", "text5", "list", "null", "bare"}),
    ({"not": [{"x": 3}, {"x": 4}], "lang": {"exists": False}}, {"bool", "list", "null", "bare"}),
    ({"not": {"not": {"x": {"lt": 4}}}}, {"int3", "dec3.5", "list"}),
    ({"x": {"gte": 3}, "not": {"when": {"gte": "2024-05-01T09:00Z"}}}, {"int3", "int4"}),
]


def test_range_not_and_exists_filters_agree_across_engines(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    store.upsert("c", [_point(doc, 0, _unit(1, i / 10, 0), **meta)
                       for i, (doc, meta) in enumerate(_RANGED.items())])
    for round_no in range(2):  # the second time over the payload indexes the first made (Edge)
        for raw, want in _RANGE_CASES:
            query_filter = parse_filter(raw)
            hits = store.search("c", _unit(1, 0, 0), 20, query_filter=query_filter)
            assert {h.doc_id for h in hits} == want, (round_no, raw)
            assert store.count_documents("c", query_filter) == len(want), raw
            assert sorted(store.document_ids("c", query_filter)) == sorted(want), raw
    assert store.count_documents("c") == len(_RANGED)


def test_a_field_filtered_in_ways_no_one_index_serves_loses_its_index(tmp_path: Path) -> None:
    """Edge: an integer index (made by an equality filter) would hide 3.5 from a range, and a
    datetime index would match dates to a number range; each is dropped before such a search."""
    edge = EdgeVectorStore(tmp_path / "edge")
    try:
        edge.ensure_collection("c", _enc(3))
        edge.upsert("c", [_point(doc, 0, _unit(1, i / 10, 0), **meta)
                          for i, (doc, meta) in enumerate(_RANGED.items())])
        fields = edge._collection("c").fields

        def found(raw: dict[str, Any]) -> set[str]:
            return {h.doc_id for h in edge.search("c", _unit(1, 0, 0), 20, query_filter=parse_filter(raw))}

        assert found({"x": 3}) == {"int3"} and fields.auto["x"] == "integer"
        assert found({"x": {"gte": 3.2}}) == {"dec3.5", "int4", "list"}
        assert "x" not in fields.auto and "x" in fields.unindexed
        assert found({"when": {"gte": "2024-05-01T09:00:00Z"}}) == {"dec3.5", "bool", "text5", "list"}
        assert fields.auto["when"] == "datetime"
        assert found({"when": {"gte": 0}}) == {"null"}  # as without an index: a number, no date
        assert "when" in fields.unindexed
        assert found({"lang": "en"}) == {"int3", "text5"} and fields.auto["lang"] == "keyword"
        assert found({"lang": {"gte": 0}}) == set() and fields.auto["lang"] == "keyword"  # served
    finally:
        edge.close()


def test_declared_indexes_are_on_every_part_and_refuse_a_range_of_the_other_kind(tmp_path: Path) -> None:
    declared: dict[str, Any] = {"year": "integer", "when": "datetime", "lang": "keyword"}
    edge = EdgeVectorStore(tmp_path / "edge", indexing_threshold=200, indexed_fields=declared)
    local = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False,
                        indexed_fields=declared)
    rng = np.random.default_rng(4)
    points = [_point(f"d{i}", 0, rng.normal(size=3).astype(np.float32), year=2000 + i % 30,
                     when=f"2024-01-{1 + i % 28:02d}") for i in range(700)]
    try:
        for store in (edge, local):
            store.ensure_collection("c", _enc(3))
            for start in range(0, len(points), 100):
                store.upsert("c", points[start:start + 100])
            for raw, want in (({"year": {"gte": 2025}}, sum(i % 30 >= 25 for i in range(700))),
                              ({"when": {"lt": "2024-01-02"}}, 25), ({"year": 2001}, 24)):
                assert store.count_documents("c", parse_filter(raw)) == want, raw
            for raw in ({"year": {"gte": "2024-01-01"}}, {"when": {"gte": 3}}):
                key = next(iter(raw))
                with pytest.raises(InvalidInputError, match=f"filter '{key}': a range of .* indexed as"):
                    store.search("c", _unit(1, 0, 0), 5, query_filter=parse_filter(raw))
        edge.wait_indexed("c")
        parts = edge._collection("c").parts
        shards = [p.shard for p in parts.parts.values()] + [parts.lexical] * (parts.lexical is not None)
        assert len(parts.parts) >= 2
        for shard in shards:
            schema = shard.info().payload_schema
            assert {f: schema[f].data_type for f in ("metadata.year", "metadata.when", "metadata.lang")} == {
                "metadata.year": qe.PayloadSchemaType.Integer,
                "metadata.when": qe.PayloadSchemaType.Datetime,
                "metadata.lang": qe.PayloadSchemaType.Keyword}
    finally:
        edge.close()
        local.close()


def test_top_k_1000_returns_1000_distinct_documents(store: Store) -> None:
    rng = np.random.default_rng(7)
    store.ensure_collection("big", _enc(8))
    points = [_point(f"d{d}", c, rng.normal(size=8).astype(np.float32), chunks=3)
              for d in range(1100) for c in range(3)]
    store.upsert("big", points)
    hits = store.search("big", _unit(1, 0, 0, 0, 0, 0, 0, 0), 1000, with_text=False)
    assert len(hits) == len({h.doc_id for h in hits}) == 1000
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_a_chunk_of_another_version_than_chunk_0_is_not_shown(store: Store) -> None:
    store.ensure_collection("c", _enc(3))
    new_head = _point("a", 0, _unit(1, 0, 0), chunks=1, content_hash="new")
    old_tail = _point("a", 2, _unit(0, 0, 1), chunks=3, content_hash="old")  # left by a re-ingest
    orphan = _point("o", 1, _unit(0, 0.1, 1), chunks=2)  # its chunk 0 is gone
    store.upsert("c", [new_head, old_tail, orphan, _point("b", 0, _unit(0, 0.5, 1))])
    hits = store.search("c", _unit(0, 0, 1), 10)
    assert [h.doc_id for h in hits] == ["b"]


# Edge only


def test_edge_store_persists_and_one_process_holds_it(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    first = EdgeVectorStore(root)
    first.ensure_collection("c", _enc(3))
    first.upsert("c", [_point("a", 0, _unit(1, 0, 0), lang="en")])
    with pytest.raises(ConfigError, match="open in another process"):
        EdgeVectorStore(root)
    with pytest.raises(InvalidInputError, match="collection name"):
        first.ensure_collection("../escape", _enc(3))
    first.close()

    again = EdgeVectorStore(root)
    assert again.list_collections() == ["c"]
    assert again.describe("c") == _enc(3)
    assert [h.doc_id for h in again.search("c", _unit(1, 0, 0), 5)] == ["a"]
    again.close()

    # Edge's own lock on the shard (its WAL) is reported the same way
    holder = qe.EdgeShard.load(str(root / "c@1" / "parts" / "p1"))
    try:
        third = EdgeVectorStore(root)
        with pytest.raises(ConfigError, match="open in another process"):
            third.info("c")
        third.close()
    finally:
        holder.close()


def test_edge_store_serves_threads_while_it_indexes(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=300)
    store.ensure_collection("c", _enc(8))
    rng = np.random.default_rng(3)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for batch in range(10):
                store.upsert("c", [_point(f"w{batch}-{d}", 0, rng.normal(size=8).astype(np.float32))
                                   for d in range(100)])
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        hits = store.search("c", _unit(1, 0, 0, 0, 0, 0, 0, 0), 20)
        assert len({h.doc_id for h in hits}) == len(hits)
    writer.join()
    assert not errors
    assert store.info("c").points == 1000
    assert len(store.search("c", _unit(1, 0, 0, 0, 0, 0, 0, 0), 1000, with_text=False)) == 1000
    store.close()


def test_an_idle_edge_collection_is_searched_through_one_index(tmp_path: Path) -> None:
    """Fewer points than seal a part, once the collection is idle, are indexed all the same
    (and stay found); a later write goes to a new active part."""
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(1500, 16)).astype(np.float32)
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=10_000)
    try:
        store.ensure_collection("c", _enc(16))
        store.upsert("c", [_point(f"d{i}", 0, v) for i, v in enumerate(vectors)])
        assert store.index_state("c")["unindexed_points"] == 1500  # not idle yet
        store.wait_indexed("c")  # as if idle now
        assert store.index_state("c") == {"indexed_parts": 1, "indexed_points": 1500,
                                          "unindexed_points": 0}
        for i in (0, 777, 1499):
            assert store.search("c", vectors[i], 1, with_text=False)[0].doc_id == f"d{i}"
        store.upsert("c", [_point("new", 0, vectors[3])])
        assert store.index_state("c")["unindexed_points"] == 1
        assert {h.doc_id for h in store.search("c", vectors[3], 2, with_text=False)} == {"d3", "new"}
    finally:
        store.close()


def test_edge_writes_during_index_builds_survive_the_swap(tmp_path: Path) -> None:
    """Parts are indexed by builder processes from copies; deletes and overwrites made
    meanwhile reach the built parts (the journal), and a store closed mid-build resumes."""
    rng = np.random.default_rng(11)
    root = tmp_path / "edge"
    store = EdgeVectorStore(root, indexing_threshold=400)
    store.ensure_collection("c", _enc(16))
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    for start in range(0, 3000, 300):  # seals a part every 400 points: builders start at once
        store.upsert("c", [_point(f"d{i}", 0, vectors[i], version="one") for i in range(start, start + 300)])
    store.delete_documents("c", [f"d{i}" for i in range(0, 3000, 7)])
    store.upsert("c", [_point(f"d{i}", 0, vectors[i], version="two") for i in range(1, 3000, 7)])
    store.close()  # a build may be running: it is dropped and done again

    store = EdgeVectorStore(root, indexing_threshold=400)
    store.wait_indexed("c")
    state = store.index_state("c")
    assert state["indexed_points"] >= 2400 and 1 <= state["indexed_parts"] <= 4, state
    kept = 3000 - len(range(0, 3000, 7))
    assert (store.info("c").documents, store.info("c").points) == (kept, kept)
    for i in (0, 7, 2996):
        assert store.get_document("c", f"d{i}") is None
    for i in (1, 8, 2997):
        document = store.get_document("c", f"d{i}")
        assert document is not None and document["metadata"]["version"] == "two"
    hits = store.search("c", vectors[8], 3)
    assert hits[0].doc_id == "d8" and hits[0].metadata["version"] == "two"
    found = {h.doc_id for h in store.search("c", vectors[0], 1000, with_text=False)}
    assert len(found) == 1000 and not {f"d{i}" for i in range(0, 3000, 7)} & found
    store.close()


# The same rankings


def _embedding_like(rng: np.random.Generator, n: int, basis: np.ndarray) -> np.ndarray:
    """Low-rank vectors plus a little noise, normalised: clustered like text embeddings."""
    x = rng.normal(size=(n, basis.shape[0])).astype(np.float32) @ basis
    x += 0.25 * rng.normal(size=x.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_edge_hnsw_rankings_agree_with_exact_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    basis = rng.normal(size=(16, 64)).astype(np.float32)
    docs, chunks = 1500, 3
    vectors = _embedding_like(rng, docs * chunks, basis)
    points = [_point(f"d{d}", c, vectors[d * chunks + c], chunks=chunks, group=d % 10)
              for d in range(docs) for c in range(chunks)]
    exact = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    # a low indexing threshold, so that this small collection is searched through HNSW
    edge = EdgeVectorStore(tmp_path / "edge", indexing_threshold=1000, search_ef=128)
    try:
        for store in (exact, edge):
            store.ensure_collection("c", _enc(64))
            for start in range(0, len(points), 500):
                store.upsert("c", points[start:start + 500])
        edge.wait_indexed("c")
        state = edge.index_state("c")  # built by builder processes, searched through HNSW
        assert state["indexed_points"] >= 4000 and state["unindexed_points"] < 1000, state

        queries = _embedding_like(rng, 50, basis)
        recalls = []
        for i, query in enumerate(queries):
            query_filter = parse_filter({"group": i % 10}) if i % 5 == 0 else None
            want = exact.search("c", query, 10, query_filter=query_filter, with_text=False)
            got = edge.search("c", query, 10, query_filter=query_filter, with_text=False)
            assert len(want) == len(got) == 10
            want_scores = {h.doc_id: h.score for h in want}
            shared = [h for h in got if h.doc_id in want_scores]
            recalls.append(len(shared) / 10)
            for hit in shared:
                assert hit.score == pytest.approx(want_scores[hit.doc_id], abs=1e-4)
            if query_filter is not None:
                assert all(h.metadata["group"] == i % 10 for h in got)
        assert np.mean(recalls) >= 0.95, recalls
    finally:
        exact.close()
        edge.close()


@pytest.mark.parametrize("search_ef", [160, 512])
def test_a_searchs_tiers_agree_where_its_dense_leg_is_approximate(tmp_path: Path,
                                                                    search_ef: int) -> None:
    """Through HNSW a top-30 search's dense leg (~150 chunks) walks the graph while a top-100
    one's (~500 chunks) walks it with a longer candidate list (`search_ef` 512: 240 against
    512, hnsw_ef) or, being more than `ef` (160), is searched exactly: the first 30 of a
    top-100 hybrid search are still a top-30 search's, and the first 100 of a top-1000 one a
    top-100 search's (bienc.search.fusion, tiers). A dense search's pages agree within a tier."""
    rng = np.random.default_rng(7)
    basis = rng.normal(size=(16, 64)).astype(np.float32)
    docs, chunks = 1500, 3
    vectors = _embedding_like(rng, docs * chunks, basis)
    words = [f"w{i}" for i in range(300)]
    points = []
    for d in range(docs):
        text = " ".join(rng.choice(words, size=int(rng.integers(5, 60))))  # lengths vary: few ties
        head = _text_point(f"d{d}", text, vectors[d * chunks])
        points.append(replace(head, payload={**head.payload, "chunks": chunks}))
        points += [_point(f"d{d}", c, vectors[d * chunks + c], chunks=chunks) for c in range(1, chunks)]
    # a sparse graph, so that its approximate answers differ from exact search's
    edge = EdgeVectorStore(tmp_path / "edge", indexing_threshold=1000, search_ef=search_ef,
                           hnsw_m=2, hnsw_ef_construct=8)
    try:
        edge.ensure_collection("c", _enc(64, lexical=BM25.record()))
        for start in range(0, len(points), 500):
            edge.upsert("c", points[start:start + 500])
        edge.wait_indexed("c")
        assert edge.index_state("c")["indexed_points"] >= 4000
        lexical = LexicalEncoder(BM25)
        for query in _embedding_like(rng, 30, basis):
            terms = lexical.embed_query(" ".join(rng.choice(words, size=3)))
            ranked = {k: [c.doc_id for c in rank(edge, "c", SearchRequest(["q"], top_k=k),
                                                 "hybrid", query, terms)]
                      for k in (10, 30, 100, 1000)}
            assert ranked[30][:10] == ranked[10]
            assert ranked[100][:30] == ranked[30]
            assert ranked[1000][:100] == ranked[100]
            dense = {k: [c.doc_id for c in rank(edge, "c", SearchRequest(["q"], top_k=k), "dense",
                                                query, None)]
                     for k in (10, 20, 30, 40, 100)}
            assert dense[10] == dense[20][:10] == dense[30][:10]
            assert dense[40] == dense[100][:40]
    finally:
        edge.close()


@pytest.mark.parametrize("quantization", [False, True])
def test_ann_search_agrees_with_the_same_collections_exact_search(tmp_path: Path,
                                                                 quantization: bool) -> None:
    """HNSW (optionally over int8-quantised vectors, rescored) against exact=True on the same
    Edge collection, and exact=True against numpy."""
    rng = np.random.default_rng(7)
    basis = rng.normal(size=(16, 64)).astype(np.float32)
    vectors = _embedding_like(rng, 3000, basis)
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=1000, quantization=quantization)
    try:
        store.ensure_collection("c", _enc(64))
        store.upsert("c", [_point(f"d{i}", 0, v) for i, v in enumerate(vectors)])
        store.wait_indexed("c")
        assert store.index_state("c")["indexed_points"] >= 2000
        recalls = []
        for query in _embedding_like(rng, 40, basis):
            exact = store.search("c", query, 10, with_text=False, exact=True)
            numpy_top = np.argsort(-(vectors @ query))[:10]
            assert [h.doc_id for h in exact] == [f"d{i}" for i in numpy_top]
            ann = store.search("c", query, 10, with_text=False)
            recalls.append(len({h.doc_id for h in ann} & {h.doc_id for h in exact}) / 10)
            for hit in ann:  # rescored with the original vectors: exact cosine
                assert hit.score == pytest.approx(float(vectors[int(hit.doc_id[1:])] @ query), abs=1e-4)
        assert np.mean(recalls) >= 0.95, recalls
    finally:
        store.close()


# Lexical vectors (BM25) and hybrid fusion


BM25 = LexicalParams(k=1.5, b=0.6, avg_len=4.0)


def _bm25_weight(tf: int, length: int, params: LexicalParams = BM25) -> float:
    """Qdrant's BM25 document weight of a term, written out."""
    return tf * (params.k + 1) / (tf + params.k * (1 - params.b + params.b * length / params.avg_len))


def _idf(documents: int, with_term: int) -> float:
    """Qdrant's IDF modifier, written out."""
    return math.log((documents - with_term + 0.5) / (with_term + 0.5) + 1)


def _text_point(doc: str, text: str, vector: np.ndarray, params: LexicalParams = BM25,
                **meta: object) -> ChunkPoint:
    point = _point(doc, 0, vector, **meta)
    point.payload["text"] = text
    return replace(point, sparse=LexicalEncoder(params).embed_documents([text])[0])


def _lexical(store: Store, query: str, limit: int = 10, **filters: object) -> dict[str, float]:
    found = store.lexical_candidates("c", LexicalEncoder(BM25).embed_query(query), limit,
                                     query_filter=parse_filter(filters))
    return {c.doc_id: c.score for c in found}


def test_bm25_scores_are_qdrants_formulas_computed_by_hand(store: Store) -> None:
    store.ensure_collection("c", _enc(3, lexical=BM25.record()))
    corpus = {"a": "zebra zebra quokka", "b": "zebra narwhal narwhal narwhal",
              "c": "quokka okapi", "d": "okapi"}
    store.upsert("c", [_text_point(d, text, _unit(1, i, 0)) for i, (d, text) in enumerate(corpus.items())]
                 + [_point("a", 1, _unit(0, 1, 0), chunks=2)])  # a chunk without lexical vector
    weights = sorted(LexicalEncoder(BM25).embed_documents([corpus["a"]])[0].values)
    assert weights == pytest.approx(sorted([_bm25_weight(2, 3), _bm25_weight(1, 3)]), rel=1e-6)

    # 4 documents (chunk 1 of "a" is not one), 2 of them with "zebra"
    assert _lexical(store, "zebra") == pytest.approx(
        {"a": _idf(4, 2) * _bm25_weight(2, 3), "b": _idf(4, 2) * _bm25_weight(1, 4)}, rel=1e-5)
    both = 2 * _idf(4, 2) * _bm25_weight(1, 2)  # each term once, in a document of two
    assert _lexical(store, "quokka okapi")["c"] == pytest.approx(both, rel=1e-5)

    # a replaced document stops counting for the terms it lost, a deleted one for all
    store.upsert("c", [_text_point("b", "okapi okapi", _unit(1, 1, 0))])
    assert _lexical(store, "zebra") == pytest.approx({"a": _idf(4, 1) * _bm25_weight(2, 3)}, rel=1e-5)
    store.delete_documents("c", ["c"])
    assert _lexical(store, "okapi") == pytest.approx(
        {"b": _idf(3, 2) * _bm25_weight(2, 2), "d": _idf(3, 2) * _bm25_weight(1, 1)}, rel=1e-5)
    assert _lexical(store, "the of and") == {}  # stopwords only: no lexical leg
    assert _lexical(store, "zebra", d="x") == {}  # filters apply


def test_a_collection_records_its_lexical_parameters(store: Store) -> None:
    store.ensure_collection("dense", _enc(3))
    recorded = store.ensure_collection("c", _enc(3, lexical=BM25.record()))
    assert recorded.lexical is not None and LexicalParams.from_record(recorded.lexical) == BM25
    assert store.info("c").encoding.lexical == BM25.record()
    assert store.info("c").to_dict()["lexical"] == BM25.record()
    assert store.info("dense").encoding.lexical is None
    store.upsert("dense", [_point("a", 0, _unit(1, 0, 0))])
    with pytest.raises(CollectionError, match="'dense' has no lexical vectors"):
        store.lexical_candidates("dense", LexicalEncoder(BM25).embed_query("full text"), 5)


def test_sparse_and_fused_rankings_agree_across_engines(tmp_path: Path) -> None:
    """Real English (the standard library's docstrings), queries cut from it: the same
    lexical and fused document lists, in the same order, from both engines."""
    texts = calibration_texts(200)
    rng = np.random.default_rng(5)
    vectors = _embedding_like(rng, len(texts), rng.normal(size=(8, 32)).astype(np.float32))
    points = [_text_point(f"t{i:03d}", text, vectors[i], LexicalParams(), part=i % 3)
              for i, text in enumerate(texts)]
    local = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    edge = EdgeVectorStore(tmp_path / "edge")
    words = [text.split() for text in texts]
    queries = [" ".join(w[3:7]) for w in words[::9]] + ["the of and to", "subprocess pipe timeout"]
    try:
        for store in (local, edge):
            store.ensure_collection("c", _enc(32, lexical=LexicalParams().record()))
            store.upsert("c", points)
        encoder = LexicalEncoder(LexicalParams())
        compared = 0
        for i, query in enumerate(queries):
            vector, terms = vectors[(7 * i) % len(texts)], encoder.embed_query(query)
            query_filter = parse_filter({"part": i % 3}) if i % 4 == 0 else None
            for mode, fusion in (("lexical", "dbsf"), ("hybrid", "dbsf"), ("hybrid", "rrf")):
                request = SearchRequest([query], top_k=20, filter=query_filter, mode=mode,  # type: ignore[arg-type]
                                        fusion=fusion)  # type: ignore[arg-type]
                got = [rank(store, "c", request, request.mode, vector, terms)  # type: ignore[arg-type]
                       for store in (local, edge)]
                assert [c.doc_id for c in got[0]] == [c.doc_id for c in got[1]], (query, mode, fusion)
                for a, b in zip(*got, strict=True):
                    assert a.score == pytest.approx(b.score, rel=1e-4, abs=1e-6)
                compared += len(got[0])
        assert compared > 500
        hybrid = rank(edge, "c", SearchRequest(["the of and to"], top_k=5, mode="hybrid"), "hybrid",
                      vectors[0], encoder.embed_query("the of and to"))
        dense = edge.dense_candidates("c", vectors[0], 5)
        assert [c.doc_id for c in hybrid] == [c.doc_id for c in dense]  # no lexical leg: dense order
    finally:
        local.close()
        edge.close()


def test_a_page_is_the_slice_of_the_deeper_search_in_every_mode(store: Store) -> None:
    """offset 10, top_k 10 is results 11-20 of top_k 20 (and so on down to 1000), documents
    and scores, in each mode and fusion, with and without a filter."""
    texts = calibration_texts(150)
    rng = np.random.default_rng(9)
    chunks = 2  # documents of two chunks: the dense leg groups them
    vectors = _embedding_like(rng, len(texts) * chunks, rng.normal(size=(8, 32)).astype(np.float32))
    store.ensure_collection("c", _enc(32, lexical=LexicalParams().record()))
    heads = [_text_point(f"t{i:03d}", text, vectors[2 * i], LexicalParams(), part=i % 3)
             for i, text in enumerate(texts)]
    for head in heads:
        head.payload["chunks"] = chunks
    store.upsert("c", heads + [_point(f"t{i:03d}", 1, vectors[2 * i + 1], chunks=chunks, part=i % 3)
                               for i in range(len(texts))])
    terms = LexicalEncoder(LexicalParams()).embed_query(" ".join(texts[40].split()[2:8]))
    vector = vectors[17]

    def page(request: SearchRequest) -> list[tuple[str, Any]]:
        found = rank(store, "c", request, request.mode, vector, terms)  # type: ignore[arg-type]
        return [(c.doc_id, pytest.approx(c.score, rel=1e-6)) for c in found]

    for mode, fusion in (("dense", "dbsf"), ("lexical", "dbsf"), ("hybrid", "dbsf"), ("hybrid", "rrf")):
        for query_filter in (None, parse_filter({"part": {"gte": 1}})):
            ask = functools.partial(SearchRequest, ["q"], filter=query_filter, mode=mode, fusion=fusion)
            deep = page(ask(top_k=20))
            assert len(deep) == 20, (mode, fusion)
            assert page(ask(top_k=10, offset=10)) == deep[10:20], (mode, fusion, query_filter)
            assert page(ask(top_k=5, offset=3)) == deep[3:8]
            everything = page(ask(top_k=1000))
            assert page(ask(top_k=10, offset=990)) == everything[990:] == []  # past the end
            tail = len(everything) - 5
            assert page(ask(top_k=10, offset=tail)) == everything[tail:]
    with pytest.raises(InvalidInputError, match=r"offset \+ top_k is 1001, over the limit of 1000"):
        validate_request(SearchRequest(["q"], top_k=10, offset=991))


def test_edge_finds_the_best_documents_whatever_their_chunk_counts(tmp_path: Path) -> None:
    """The first fetch is sized from what earlier searches needed; a search that needs more
    chunks than that (documents of many chunks) still gets its `limit` best documents."""
    rng = np.random.default_rng(8)
    store = EdgeVectorStore(tmp_path / "edge")
    try:
        store.ensure_collection("c", _enc(16))
        owners, points = [], []
        for d in range(300):
            centre = rng.normal(size=16)
            chunks = 1 if d < 200 else 12  # many small documents, then a few long ones
            for c in range(chunks):
                vector = (centre + 0.1 * rng.normal(size=16)).astype(np.float32)
                points.append(_point(f"d{d}", c, vector / np.linalg.norm(vector), chunks=chunks))
                owners.append(d)
        store.upsert("c", points)
        matrix = np.stack([p.vector for p in points])
        for round_no in range(30):
            # first queries near the one-chunk documents (few chunks needed), then near the long ones
            target = round_no % 100 if round_no < 20 else 200 + round_no
            query = matrix[owners.index(target)]
            best: dict[int, float] = {}
            for owner, score in zip(owners, matrix @ query, strict=True):
                best[owner] = max(best.get(owner, -2.0), float(score))
            for limit in (5, 50):
                want = [f"d{o}" for o in sorted(best, key=lambda o: -best[o])[:limit]]
                got = [c.doc_id for c in store.dense_candidates("c", query, limit, exact=True)]
                assert got == want, (round_no, limit)
    finally:
        store.close()
