"""The HTTP API in-process over an injected runtime: the real model, the in-memory store and
the test Redis database (no worker runs, so accepted batches stay queued)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from bienc.api import create_app
from bienc.api_errors import describe_validation_errors
from bienc.api_requests import parse_documents
from bienc.config.errors import InvalidInputError, StoreUnavailableError
from bienc.config.settings import Settings
from bienc.config.topology import Role, decide
from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams
from bienc.ingest.documents import Document
from bienc.resources import Resources
from bienc.runtime import Runtime
from bienc.store.interface import ChunkPoint
from bienc.store.qdrant import VectorStore
from bienc.store.record import Chunking
from bienc.workers.indexing import encoding_of, index_documents
from tests.api_fuzz import fuzz
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import OTHER_MODELS


def _runtime(encoder: Encoder, **overrides: Any) -> Runtime:
    settings = Settings(_env_file=None, broker_url=TEST_REDIS_URL, qdrant_path=":memory:",  # type: ignore[call-arg]
                        embedded_store="qdrant-local", **overrides)
    store = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    # a serving process whose workers run elsewhere: accepted batches stay in the queue
    topology = replace(decide(settings, Role.SERVE), runs_worker=False)
    return Runtime(Resources(settings, encoder=encoder, store=store), topology)


@pytest.fixture
def runtime(redis_db: redis.Redis, encoder: Encoder) -> Runtime:
    return _runtime(encoder, api_max_documents=5, api_max_request_bytes=20_000)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as test_client:
        yield test_client


def _index(runtime: Runtime, collection: str, docs: dict[str, str]) -> None:
    """Write documents straight into the store, as a worker would."""
    encoder = runtime.resources.encoder
    store = runtime.resources.store
    store.ensure_collection(collection, encoding_of(encoder, Chunking(True, 128, 16)))
    vectors = encoder.encode_documents(list(docs.values()))
    store.upsert(collection, [
        ChunkPoint(doc_id, 0, vector, {"doc_id": doc_id, "chunk": 0, "chunks": 1, "text": text,
                                       "title": None, "metadata": {"n": i}, "content_hash": "h"})
        for i, ((doc_id, text), vector) in enumerate(zip(docs.items(), vectors, strict=True))
    ])


def _queue_depth(redis_db: redis.Redis) -> int:
    return int(redis_db.llen("bienc.ingest"))


# Ingest


def test_ingest_is_accepted_and_queued(client: TestClient, redis_db: redis.Redis) -> None:
    docs = [{"id": "a", "text": "first"}, {"id": 7, "text": "second", "title": "T",
                                            "metadata": {"lang": "en"}}, {"id": "a", "text": "again"}]
    response = client.post("/v1/collections/notes/documents", json={"documents": docs})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 1)
    job = client.get(f"/v1/jobs/{body['job_id']}")
    assert job.status_code == 200
    assert (job.json()["state"], job.json()["total"], job.json()["queued"]) == ("queued", 2, 2)
    assert _queue_depth(redis_db) == 1
    metrics = client.get("/metrics").text
    assert "bienc_documents_accepted_total 2.0" in metrics
    assert "bienc_queue_depth 1.0" in metrics


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"id": "ok", "text": "fine"}, {"id": "x", "text": "  "}], "documents[1]: field 'text' is empty"),
        ([{"text": "no id"}], "documents[0]: missing field 'id'"),
        ([{"id": "x", "text": "t", "body": "?"}], "documents[0]: unknown field 'body'"),
        ([{"id": True, "text": "t"}], "documents[0]: field 'id' must be a string or integer"),
        ([{"id": "x", "text": 5}], "documents[0]: field 'text' must be a string"),
        ([{"id": "x", "text": "t", "metadata": [1]}], "documents[0]: field 'metadata' must be an object"),
        ([{"id": "x", "text": "t", "version": -2}], "documents[0]: field 'version' must be an integer"),
        (["just text"], "documents[0]: expected a JSON object"),
        ([], "field 'documents' is empty"),
    ],
)
def test_a_bad_document_rejects_the_whole_request(client: TestClient, redis_db: redis.Redis,
                                                  documents: list[Any], message: str) -> None:
    response = client.post("/v1/collections/notes/documents", json={"documents": documents})
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert _queue_depth(redis_db) == 0
    assert not redis_db.keys("bienc:job:*")


def test_values_json_cannot_carry_are_refused() -> None:
    for record, field in (({"id": "x", "text": "t", "metadata": {"v": float("inf")}}, "metadata"),
                          ({"id": "x\ud800", "text": "t"}, "id"),
                          ({"id": "x", "text": "t", "metadata": {"a": {"b": {"c": []}}} | {
                              "deep": json.loads("[" * 40 + "]" * 40)}}, "metadata")):
        with pytest.raises(InvalidInputError, match=f"documents\\[0\\]: field '{field}'"):
            parse_documents([record], max_text_chars=100)


def test_too_many_documents_or_bytes_is_413(client: TestClient, redis_db: redis.Redis) -> None:
    six = [{"id": str(i), "text": "t"} for i in range(6)]
    response = client.post("/v1/collections/notes/documents", json={"documents": six})
    assert response.status_code == 413
    assert "6 items, over the limit of 5" in response.json()["detail"]
    assert "BIENC_API_MAX_DOCUMENTS" in response.json()["detail"]
    big = {"documents": [{"id": "1", "text": "x" * 30_000}]}
    response = client.post("/v1/collections/notes/documents", json=big)
    assert response.status_code == 413
    assert "over the limit of 20000 bytes" in response.json()["detail"]
    chunked = client.post("/v1/collections/notes/documents",  # no Content-Length: counted
                          content=iter([json.dumps(big).encode()[:15_000]] * 2),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert _queue_depth(redis_db) == 0


def test_text_over_max_text_chars_is_named(redis_db: redis.Redis, encoder: Encoder) -> None:
    with TestClient(create_app(_runtime(encoder, max_text_chars=10))) as client:
        response = client.post("/v1/collections/c/documents",
                               json={"documents": [{"id": "1", "text": "x" * 11}]})
    assert response.status_code == 422
    assert "documents[0]: field 'text' has 11 characters" in response.json()["detail"]


@pytest.mark.parametrize("name", ["bad name", ".hidden", "x" * 300, "new%0A"])
def test_invalid_collection_name_is_422(client: TestClient, name: str) -> None:
    response = client.post(f"/v1/collections/{name}/documents",
                           json={"documents": [{"id": "1", "text": "t"}]})
    assert response.status_code == 422
    assert "collection name" in response.json()["detail"]


# Search


def test_search_ranks_and_reports_timings(client: TestClient, runtime: Runtime) -> None:
    _index(runtime, "s", {"paris": "eiffel tower paris", "berlin": "berlin wall germany",
                          "rome": "colosseum rome italy"})
    response = client.post("/v1/collections/s/search",
                           json={"queries": ["paris eiffel", "germany berlin"], "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [hits[0]["id"] for hits in body["results"]] == ["paris", "berlin"]
    assert all(len(hits) == 2 for hits in body["results"])
    assert body["results"][0][0]["text"] == "eiffel tower paris"
    assert body["timings_ms"]["total"] >= body["timings_ms"]["encode"] > 0
    single = client.post("/v1/collections/s/search",
                         json={"query": "rome", "top_k": 1, "with_text": False, "filter": {"n": 2}})
    assert [h["id"] for h in single.json()["results"][0]] == ["rome"]
    assert single.json()["results"][0][0]["text"] is None
    metrics = client.get("/metrics").text
    assert "bienc_search_requests_total 2.0" in metrics
    assert "bienc_search_seconds_count 2.0" in metrics
    assert "bienc_encode_seconds_count 2.0" in metrics


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "a", "top_k": 0}, "field 'top_k': Input should be greater than or equal to 1"),
        ({"query": "a", "top_k": 1001}, "field 'top_k'"),
        ({"query": "a", "top_k": "5"}, "field 'top_k': Input should be a valid integer"),
        ({"query": "a", "top_k": True}, "field 'top_k'"),
        ({"query": "a", "queries": ["b"]}, "exactly one of 'query'"),
        ({}, "exactly one of 'query'"),
        ({"query": "a", "k": 3}, "field 'k': Extra inputs are not permitted"),
        ({"queries": []}, "field 'queries'"),
        ({"queries": ["ok", 3]}, "field 'queries[1]'"),
        ({"query": "   "}, "query 0 is empty"),
        ({"query": "a", "score_threshold": 2}, "score_threshold in dense mode is a cosine"),
        ({"query": "a", "mode": "semantic"},
         "field 'mode': Input should be 'dense', 'lexical' or 'hybrid'"),
        ({"query": "a", "mode": "hybrid", "fusion": "max"},
         "field 'fusion': Input should be 'dbsf' or 'rrf'"),
        ({"query": "a", "filter": {"n": {"gt": "soon"}}}, "field 'filter': filter 'n': 'soon' is not a date"),
        ({"query": "a", "top_k": 10, "offset": 995},
         "offset + top_k is 1005, over the limit of 1000 (MAX_TOP_K)"),
        ({"query": "x" * 10_001}, "longer than"),
    ],
)
def test_invalid_search_is_422(client: TestClient, runtime: Runtime, body: dict[str, Any],
                               message: str) -> None:
    _index(runtime, "s", {"d": "text"})
    response = client.post("/v1/collections/s/search", json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_invalid_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/collections/s/search", content=b"{nope",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


def test_missing_collection_is_404_and_another_models_is_409(client: TestClient,
                                                            runtime: Runtime) -> None:
    assert client.post("/v1/collections/none/search", json={"query": "a"}).status_code == 404
    assert client.get("/v1/collections/none").status_code == 404
    runtime.resources.store.ensure_collection("wide", OTHER_MODELS)
    response = client.post("/v1/collections/wide/search", json={"query": "a"})
    assert response.status_code == 409
    assert "other/model-768" in response.json()["detail"]


def test_modes_on_collections_with_and_without_lexical_vectors(client: TestClient,
                                                              runtime: Runtime) -> None:
    _index(runtime, "dense", {"paris": "eiffel tower paris", "rome": "colosseum rome italy"})
    plain = client.post("/v1/collections/dense/search", json={"query": "paris"})
    assert plain.status_code == 200 and plain.json()["mode"] == "dense"
    assert "fusion" not in plain.json() and "scores" not in plain.json()["results"][0][0]
    refused = client.post("/v1/collections/dense/search", json={"query": "paris", "mode": "hybrid"})
    assert refused.status_code == 409
    assert "'dense' has no lexical vectors" in refused.json()["detail"]

    documents = [Document("paris", "The Eiffel Tower stands in Paris."),
                 Document("brca", "Carriers of BRCA1 mutations face a raised risk."),
                 Document("rome", "The Colosseum stands in Rome.")]
    encoder = runtime.resources.encoder
    index_documents(documents, "both", encoder, runtime.resources.store,
                    encoding_of(encoder, Chunking(True, 128, 16), LexicalParams()))
    hybrid = client.post("/v1/collections/both/search", json={"query": "BRCA1", "top_k": 2})
    assert hybrid.status_code == 200, hybrid.text
    body = hybrid.json()
    assert (body["mode"], body["fusion"]) == ("hybrid", "dbsf")
    assert body["results"][0][0]["id"] == "brca"
    assert set(body["results"][0][0]["scores"]) == {"dense", "lexical"}
    lexical = client.post("/v1/collections/both/search",
                          json={"query": "the of and", "mode": "lexical"}).json()
    assert (lexical["mode"], lexical["results"]) == ("lexical", [[]])
    stopwords = client.post("/v1/collections/both/search",
                            json={"query": "the of and", "mode": "hybrid", "fusion": "rrf"}).json()
    dense = client.post("/v1/collections/both/search",
                        json={"query": "the of and", "mode": "dense"}).json()
    assert [h["id"] for h in stopwords["results"][0]] == [h["id"] for h in dense["results"][0]]
    assert client.get("/v1/collections/both").json()["lexical"] == LexicalParams().record()


# Collections and documents


def test_collections_documents_and_deletes(client: TestClient, runtime: Runtime) -> None:
    _index(runtime, "c", {"a": "alpha", "b": "beta"})
    listing = client.get("/v1/collections").json()["collections"]
    assert [(c["name"], c["documents"]) for c in listing] == [("c", 2)]
    assert client.get("/v1/collections/c").json()["model"] == runtime.resources.encoder.identity
    doc = client.get("/v1/collections/c/documents/a")
    assert doc.status_code == 200
    assert doc.json() == {"id": "a", "title": None, "text": "alpha", "metadata": {"n": 0}, "chunks": 1,
                          "version": 0}  # written without a version
    assert client.get("/v1/collections/c/documents/zzz").status_code == 404
    assert client.delete("/v1/collections/c/documents/a").status_code == 200
    assert client.delete("/v1/collections/c/documents/a").status_code == 404
    assert client.get("/v1/collections/c/documents/a").status_code == 404
    assert client.get("/v1/collections/nope/documents/a").status_code == 404
    assert client.delete("/v1/collections/c").status_code == 200
    assert client.delete("/v1/collections/c").status_code == 404
    assert client.get("/v1/jobs/no-such-job").status_code == 404


def test_a_deleted_document_is_not_brought_back_by_an_older_write(client: TestClient,
                                                                   runtime: Runtime) -> None:
    """Deletes by id are versioned (bienc.queue.versions): a write older than the delete,
    arriving after it, is superseded; a newer one brings the document back."""
    encoder, store, versions = runtime.resources.encoder, runtime.resources.store, runtime.resources.versions
    encoding = encoding_of(encoder, Chunking(True, 128, 16))

    def write(doc_id: str, text: str, version: int) -> tuple[int, int, int]:
        outcome = index_documents([Document(doc_id, text, version=version)], "c", encoder, store,
                                  encoding, versions=versions)
        return outcome.indexed, outcome.skipped, outcome.superseded

    def stored(doc_id: str) -> tuple[str, int] | None:
        found = client.get(f"/v1/collections/c/documents/{doc_id}")
        return (found.json()["text"], found.json()["version"]) if found.status_code == 200 else None

    assert write("a", "first", 5) == write("b", "bee", 5) == (1, 0, 0)  # the clients' versions
    kept = client.delete("/v1/collections/c/documents/a?version=4")
    assert kept.status_code == 409 and "newer version than this delete's version 4" in kept.text
    assert client.delete("/v1/collections/c/documents/a?version=6").status_code == 200
    assert write("a", "first", 5) == (0, 0, 1)  # a late redelivery: still deleted
    assert write("a", "changed", 6) == (0, 0, 1)  # as old as the delete: still deleted
    assert stored("a") is None
    assert write("a", "back", 7) == (1, 0, 0) and stored("a") == ("back", 7)
    assert write("a", "back", 9) == (0, 1, 0) and stored("a") == ("back", 9)  # unchanged: newer
    assert write("a", "between", 8) == (0, 0, 1) and stored("a") == ("back", 9)

    accepted_before = versions.assign("c", 1)  # a write accepted before the next delete...
    assert client.delete("/v1/collections/c/documents/b").status_code == 200  # (no version)
    assert write("b", "bee", accepted_before) == (0, 0, 1)  # ...and written after it
    assert stored("b") is None
    assert client.delete("/v1/collections/c/documents/b?version=-1").status_code == 422
    assert client.delete("/v1/collections/c").status_code == 200  # its tombstones go with it
    assert versions.tombstones("c", ["a", "b"]) == {}


# Operations, keys, errors


def test_health_ready_and_store_outage(client: TestClient, runtime: Runtime,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "reasons": []}

    def down(*_: Any, **__: Any) -> Any:
        raise StoreUnavailableError("Qdrant at :memory: did not answer (test)")

    monkeypatch.setattr(runtime.resources.store, "list_collections", down)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and "did not answer" in ready.json()["reasons"][0]
    listing = client.get("/v1/collections")
    assert listing.status_code == 503 and "did not answer" in listing.json()["detail"]


def test_api_key_is_required_when_set(redis_db: redis.Redis, encoder: Encoder) -> None:
    with TestClient(create_app(_runtime(encoder, api_key="s3cret-admin-key-0123"))) as client:
        assert client.get("/v1/collections").status_code == 401
        wrong = client.get("/v1/collections", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
        assert client.get("/v1/jobs/x", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.get("/v1/collections",
                          headers={"Authorization": "Bearer s3cret-admin-key-0123"}).status_code == 200
        assert client.get("/v1/collections",
                          headers={"X-API-Key": "s3cret-admin-key-0123"}).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert client.get(open_path).status_code == 200, open_path


def test_unexpected_errors_are_json_500(client: TestClient, runtime: Runtime,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.resources.store, "list_collections", broken)
    no_raise = TestClient(client.app, raise_server_exceptions=False)
    response = no_raise.get("/v1/collections")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (RuntimeError); see the server log"}


def test_validation_errors_read_as_one_sentence() -> None:
    errors = [{"type": "missing", "loc": ("body", "documents", 3, "text"), "msg": "Field required"},
              {"type": "missing", "loc": ("body",), "msg": "Field required"}]
    assert describe_validation_errors(errors) == (
        "field 'documents[3].text': Field required; request body: Field required")


def test_openapi_lists_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/v1/collections/{collection}/documents", "/v1/jobs", "/v1/jobs/{job_id}",
        "/v1/collections/{collection}/search", "/v1/collections", "/v1/collections/{collection}",
        "/v1/collections/{collection}/documents/{doc_id}", "/healthz", "/readyz", "/metrics",
    }


def test_fuzz_in_process_never_answers_5xx(runtime: Runtime) -> None:
    _index(runtime, "s", {"a": "alpha beta", "b": "gamma delta"})
    app = create_app(runtime)
    with TestClient(app):  # runs the lifespan
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        report = fuzz(schema, lambda case: case.call(), max_examples=40, timeout_s=30,
                      existing={"collection": "s", "doc_id": "a"})
    print(f"\nin-process fuzz: {report.summary()}")
    assert not report.failures, "\n".join(report.failures[:20])
    assert len(report.operations()) == 21
    assert any(op.startswith("POST") and status == 202 for op, _, status in report.statuses)
    assert any("search" in op and status == 200 for op, _, status in report.statuses)


def test_a_full_queue_answers_429_with_retry_after(redis_db: redis.Redis, encoder: Encoder) -> None:
    runtime = _runtime(encoder, max_queued_documents=100, ingest_batch_size=10)
    docs = {"documents": [{"id": str(i), "text": f"document {i}"} for i in range(40)]}
    with TestClient(create_app(runtime)) as client:
        assert client.post("/v1/collections/c/documents", json=docs).status_code == 202
        assert client.post("/v1/collections/c/documents", json=docs).status_code == 202
        refused = client.post("/v1/collections/c/documents", json=docs)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "30"
        assert "BIENC_MAX_QUEUED_DOCUMENTS" in refused.json()["detail"]
    assert redis_db.llen("bienc.ingest") == 8  # the refused request queued nothing


def test_a_body_nested_too_deeply_is_a_client_error(client: TestClient) -> None:
    body = '{"documents": [{"id": "1", "text": "x", "metadata": {"a": ' + "[" * 9000 + "]" * 9000 + "}}]}"
    response = client.post("/v1/collections/c/documents", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert "body" in response.json()["detail"]
