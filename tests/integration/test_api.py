"""The HTTP API over real HTTP: a `bienc serve` process on the embedded default (its own Redis,
its own store, the in-process worker, the real model), shared by the tests of this module; and
one over the machine's Redis with a Celery worker consuming it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.api_fuzz import fuzz
from tests.conftest import TEST_REDIS_URL
from tests.integration.conftest import BIENC, bienc_env, create_other_models_collection, stop_gracefully

API_KEY = "test-admin-key-0123456789"
READ_KEY = "test-read-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ALLOWED_ORIGIN = "http://front-end.test:8080"
MAX_DOCUMENTS = 50
MAX_REQUEST_BYTES = 200_000
FUZZ_REQUEST_TIMEOUT_S = 30.0
FUZZ_EXAMPLES = int(os.environ.get("BIENC_TEST_FUZZ_EXAMPLES", "40"))  # per operation and pass

SHORT = [
    {"id": "paris", "text": "Paris is the capital of France.", "metadata": {"group": "a"}},
    {"id": "eiffel", "text": "The Eiffel Tower is in Paris.", "metadata": {"group": "b"}},
    {"id": "berlin", "text": "Berlin is the capital of Germany.", "metadata": {"group": "a"}},
    {"id": "python", "text": "Python is a programming language.", "title": "Software",
     "metadata": {"group": "b"}},
    {"id": "penguins", "text": "Penguins live in the southern hemisphere.", "metadata": {"group": "a"}},
]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(workdir: Path, env: dict[str, str], ready_path: str = "/readyz") -> Iterator[Server]:
    """A real `bienc serve` process on a free loopback port, answering 200 at `ready_path`."""
    port = _free_port()
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen([*BIENC, "serve", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"bienc serve exited {process.returncode}:\n"
                            f"{(workdir / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}{ready_path}", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("bienc serve was not ready in 180 s")
            time.sleep(0.25)
        yield Server(url, process, workdir)
    finally:
        stop_gracefully(process)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("serve")
    create_other_models_collection(workdir / ".bienc")
    env = bienc_env(api_key=API_KEY, read_api_key=READ_KEY, cors_origins=ALLOWED_ORIGIN,
                    api_max_documents=str(MAX_DOCUMENTS),
                    api_max_request_bytes=str(MAX_REQUEST_BYTES))
    with serve(workdir, env) as running:
        yield running


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(headers=AUTH) as client:
        yield client


def _wait_for_job(api: httpx.Client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["queued"] == 0 and status["state"] not in ("queued", "running", "retrying"):
            return status  # (an open job, as a delete's, has nothing queued before it plans)
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def test_ingest_search_get_and_delete(api: httpx.Client, long_document: dict[str, Any]) -> None:
    documents = [{"id": "paris", "text": "an older version, replaced below"}, *SHORT, long_document]
    accepted = api.post("/v1/collections/geo/documents", json={"documents": documents})
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert (body["accepted"], body["duplicates"]) == (len(SHORT) + 1, 1)
    status = _wait_for_job(api, body["job_id"])
    assert (status["state"], status["indexed"], status["failed"]) == ("completed", len(SHORT) + 1, 0)

    found = api.post("/v1/collections/geo/search",
                     json={"queries": ["Where is the Eiffel Tower located?",
                                       "hummingbirds navigate by polarised light"], "top_k": 3})
    assert found.status_code == 200, found.text
    results = found.json()["results"]
    assert results[0][0]["id"] == "eiffel" and results[0][0]["text"] == "The Eiffel Tower is in Paris."
    long_hit = next(hit for hit in results[1] if hit["id"] == "long-1")  # found by its last chunk
    assert "polarised light" in long_hit["snippet"] and long_hit["text"] == long_document["text"]
    timings = found.json()["timings_ms"]
    assert timings["total"] >= timings["encode"] > 0
    filtered = api.post("/v1/collections/geo/search",
                        json={"query": "capital city", "filter": {"group": "a"}, "with_text": False})
    assert {h["id"] for h in filtered.json()["results"][0]} <= {"paris", "berlin", "penguins"}

    document = api.get("/v1/collections/geo/documents/python")
    assert document.status_code == 200
    assert (document.json()["title"], document.json()["metadata"]) == ("Software", {"group": "b"})
    assert api.get("/v1/collections/geo/documents/paris").json()["text"] == SHORT[0]["text"]
    info = api.get("/v1/collections/geo").json()
    assert info["documents"] == len(SHORT) + 1 and info["points"] > info["documents"]
    assert "geo" in {c["name"] for c in api.get("/v1/collections").json()["collections"]}

    assert api.delete("/v1/collections/geo/documents/eiffel").status_code == 200
    assert api.get("/v1/collections/geo/documents/eiffel").status_code == 404
    assert api.delete("/v1/collections/geo/documents/eiffel").status_code == 404
    again = api.post("/v1/collections/geo/search", json={"query": "Eiffel Tower", "top_k": 10})
    assert "eiffel" not in {h["id"] for h in again.json()["results"][0]}

    assert api.delete("/v1/collections/geo").status_code == 200
    assert api.get("/v1/collections/geo").status_code == 404
    assert api.delete("/v1/collections/geo").status_code == 404


NOTES = [{"id": f"n{i:02d}", "text": f"Field note {i}: the {'penguins' if i % 2 else 'volcanoes'} "
          f"of the southern islands, season {i}.",
          "metadata": {"kind": "penguin" if i % 2 else "volcano", "year": 2000 + i,
                       "seen": f"2024-{1 + i % 12:02d}-15T12:00:00Z"}} for i in range(30)]


def test_a_page_is_the_slice_of_the_deeper_search_in_every_mode(api: httpx.Client) -> None:
    accepted = api.post("/v1/collections/pages/documents", json={"documents": NOTES})
    _wait_for_job(api, accepted.json()["job_id"])
    for mode in ("dense", "lexical", "hybrid"):
        for extra in ({}, {"filter": {"year": {"gte": 2004}}}, {"fusion": "rrf"}):
            ask = {"query": "penguins of the southern islands", "mode": mode, "with_text": False, **extra}
            deep = api.post("/v1/collections/pages/search", json={**ask, "top_k": 20}).json()
            page = api.post("/v1/collections/pages/search", json={**ask, "top_k": 10, "offset": 10})
            assert page.status_code == 200 and page.json()["offset"] == 10
            want = [(h["id"], pytest.approx(h["score"], rel=1e-6)) for h in deep["results"][0][10:20]]
            assert [(h["id"], h["score"]) for h in page.json()["results"][0]] == want, (mode, extra)
    too_deep = api.post("/v1/collections/pages/search", json={"query": "x", "top_k": 10, "offset": 991})
    assert too_deep.status_code == 422
    assert "offset + top_k is 1001, over the limit of 1000" in too_deep.json()["detail"]


def test_delete_by_filter_counts_first_then_deletes_as_a_job(api: httpx.Client) -> None:
    accepted = api.post("/v1/collections/purge/documents", json={"documents": NOTES})
    _wait_for_job(api, accepted.json()["job_id"])
    purge = {"kind": "penguin", "year": {"gte": 2010}, "not": {"seen": {"lt": "2024-03-01"}}}
    # odd i from 11 to 29, without those seen in January or February (i % 12 in (0, 1)): 13, 25
    gone = {f"n{i:02d}" for i in range(11, 30, 2)} - {"n13", "n25"}
    dry = api.post("/v1/collections/purge/delete", json={"filter": purge, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"collection": "purge", "matched": len(gone), "dry_run": True}
    assert api.get("/v1/collections/purge").json()["documents"] == 30  # nothing deleted

    accepted = api.post("/v1/collections/purge/delete", json={"filter": purge})
    assert accepted.status_code == 202, accepted.text
    status = _wait_for_job(api, accepted.json()["job_id"])
    assert (status["kind"], status["state"], status["deleted"], status["total"]) == \
        ("delete", "completed", len(gone), len(gone))
    info = api.get("/v1/collections/purge").json()
    assert (info["documents"], info["points"]) == (30 - len(gone), 30 - len(gone))
    for mode in ("lexical", "dense"):
        hits = api.post("/v1/collections/purge/search", json={
            "query": "penguins of the southern islands", "mode": mode, "top_k": 30,
            "filter": {"kind": "penguin"}, "with_text": False}).json()["results"][0]
        assert {h["id"] for h in hits} == {f"n{i:02d}" for i in range(1, 30, 2)} - gone, mode
    again = api.post("/v1/collections/purge/delete", json={"filter": purge, "dry_run": True})
    assert again.json()["matched"] == 0

    for body, named in (({"filter": {"year": {"gtt": 1}}}, "field 'filter': filter 'year': unknown operator"),
                        ({"filter": {}}, "filter"), ({"filter": {"a": 1}, "dryrun": True}, "dryrun"),
                        ({"dry_run": True}, "filter")):
        refused = api.post("/v1/collections/purge/delete", json=body)
        assert refused.status_code == 422 and named in refused.json()["detail"], refused.text
    for dry_run in (True, False):
        missing = api.post("/v1/collections/nowhere/delete", json={"filter": {"a": 1}, "dry_run": dry_run})
        assert missing.status_code == 404, missing.text


def test_each_bad_request_gets_its_code(server: Server, api: httpx.Client) -> None:
    bad = api.post("/v1/collections/geo2/documents",
                   json={"documents": [SHORT[0], SHORT[1], SHORT[2], {"id": "x", "text": ""}]})
    assert bad.status_code == 422
    assert bad.json() == {"detail": "documents[3]: field 'text' is empty"}
    assert api.get("/v1/collections/geo2").status_code == 404  # nothing was queued or created

    many = [{"id": str(i), "text": "t"} for i in range(MAX_DOCUMENTS + 1)]
    too_many = api.post("/v1/collections/geo2/documents", json={"documents": many})
    assert too_many.status_code == 413 and "api_max_documents" in too_many.json()["detail"]
    huge = {"documents": [{"id": "1", "text": "x" * (MAX_REQUEST_BYTES + 1)}]}
    too_big = api.post("/v1/collections/geo2/documents", json=huge)
    assert too_big.status_code == 413 and "api_max_request_bytes" in too_big.json()["detail"]

    assert api.get("/v1/jobs/0123456789abcdef").status_code == 404
    assert api.post("/v1/collections/nowhere/search", json={"query": "x"}).status_code == 404
    assert api.get("/v1/collections/nowhere/documents/1").status_code == 404
    assert api.post("/v1/collections/geo2/search", json={"query": "x", "top_k": 0}).status_code == 422
    assert api.post("/v1/collections/bad name/search", json={"query": "x"}).status_code == 422

    wide = api.post("/v1/collections/wide/search", json={"query": "x"})
    assert wide.status_code == 409 and "other/model-768" in wide.json()["detail"]
    wide_ingest = api.post("/v1/collections/wide/documents", json={"documents": [SHORT[0]]})
    assert wide_ingest.status_code == 409

    with server.client() as anonymous:
        assert anonymous.get("/v1/collections").status_code == 401
        assert anonymous.post("/v1/collections/geo2/search", json={"query": "x"}).status_code == 401
        wrong = anonymous.get("/v1/collections", headers={"X-API-Key": "wrong"})
        assert wrong.status_code == 401 and "detail" in wrong.json()
        assert anonymous.get("/v1/collections", headers={"X-API-Key": API_KEY}).status_code == 200
        assert anonymous.get("/healthz").status_code == 200


def test_health_readiness_and_metrics(server: Server) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {"ready": True, "reasons": []}
        metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200
    for name in ("bienc_documents_accepted_total", "bienc_search_requests_total",
                 "bienc_search_seconds_bucket", "bienc_encode_seconds_count", "bienc_queue_depth"):
        assert name in metrics.text, name
    accepted = next(line for line in metrics.text.splitlines()
                    if line.startswith("bienc_documents_accepted_total"))
    assert float(accepted.split()[-1]) >= len(SHORT) + 1


def test_an_over_limit_body_is_answered_413_to_a_client_that_sends_it_whole(server: Server) -> None:
    """http.client (under urllib and requests) sends the whole body before reading, with no
    `Expect: 100-continue`: it must read the 413, not a reset connection."""
    host, port = server.url.removeprefix("http://").split(":")
    path = "/v1/collections/big/documents"
    headers = {**AUTH, "Content-Type": "application/json"}
    body = b'{"documents": [' + b" " * (MAX_REQUEST_BYTES * 10) + b"]}"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    for chunked in (False, True):  # by Content-Length, and a chunked body growing past the limit
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            if chunked:
                connection.request("POST", path, body=chunks(), headers=headers, encode_chunked=True)
            else:
                connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            detail = json.loads(response.read())["detail"]
        finally:
            connection.close()
        assert response.status == 413, (chunked, detail)
        assert str(MAX_REQUEST_BYTES) in detail and "BIENC_API_MAX_REQUEST_BYTES" in detail
    request = urllib.request.Request(server.url + path, data=body, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


_FILTER_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
_FILTER_KEYS = st.text(max_size=20) | st.from_regex(r"[A-Za-z0-9_.$\[\]\"-]{1,12}", fullmatch=True)


def test_filters_are_answered_200_or_422_naming_the_key_never_5xx(server: Server,
                                                                 api: httpx.Client) -> None:
    accepted = api.post("/v1/collections/filtered/documents", json={"documents": SHORT})
    _wait_for_job(api, accepted.json()["job_id"])
    statuses: Counter[int] = Counter()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(_FILTER_KEYS, _FILTER_VALUES, min_size=1, max_size=3))
    @example({"group": "a"})  # valid ones, whatever the generator's run draws
    @example({"group": ["a", "b"], "missing.key": 3})
    def check(query_filter: dict[str, Any]) -> None:
        response = api.post("/v1/collections/filtered/search",
                            json={"query": "capital city", "filter": query_filter})
        statuses[response.status_code] += 1
        assert response.status_code in (200, 422), (query_filter, response.text)
        if response.status_code == 422:
            assert "filter" in response.json()["detail"], response.text

    check()
    print(f"\nfilters against bienc serve: {dict(statuses)}")
    assert statuses[200] and statuses[422]  # both kinds were generated
    response = api.post("/v1/collections/filtered/search",
                        json={"query": "x", "filter": {"$where": "1"}})
    assert response.status_code == 422 and "'$where'" in response.json()["detail"]
    hits = api.post("/v1/collections/filtered/search",
                    json={"query": "capital city", "filter": {"group": "b"}}).json()["results"][0]
    assert hits and {h["id"] for h in hits} <= {"eiffel", "python"}


# Access: every route, every kind of key, over real HTTP

_MATRIX_REQUESTS = {  # one request per operation of the OpenAPI schema, on its own collection
    ("get", "/healthz"): ("public", {}), ("get", "/readyz"): ("public", {}),
    ("get", "/metrics"): ("public", {}),
    ("post", "/v1/collections/{collection}/documents"): ("admin", {"json": {"documents": SHORT}}),
    ("post", "/v1/collections/{collection}/files"): (
        "admin", {"files": [("files", ("notes.md", b"# Notes\nThe capital of Peru is Lima.\n"))]}),
    ("get", "/v1/jobs"): ("read", {}), ("get", "/v1/jobs/{job_id}"): ("read", {}),
    ("post", "/v1/collections/{collection}/search"): ("read", {"json": {"query": "capital"}}),
    ("get", "/v1/collections"): ("read", {}),
    ("get", "/v1/collections/{collection}"): ("read", {}),
    ("get", "/v1/collections/{collection}/documents/{doc_id}"): ("read", {}),
    ("post", "/v1/collections/{collection}/reindex"): ("admin", {"json": {"chunk_tokens": 64}}),
    ("post", "/v1/collections/{collection}/reindex/resume"): ("admin", {}),
    ("post", "/v1/collections/{collection}/reindex/abort"): ("admin", {}),
    ("post", "/v1/jobs/{job_id}/cancel"): ("admin", {}),
    ("post", "/v1/collections/{collection}/delete"): (
        "admin", {"json": {"filter": {"group": "none of them"}}}),
    ("get", "/v1/collections/{collection}/documents"): ("read", {}),
    ("post", "/v1/collections/{collection}/snapshot"): ("admin", {}),
    ("post", "/v1/snapshots/restore"): ("admin", {"content": b"not a snapshot"}),
    ("delete", "/v1/collections/{collection}/documents/{doc_id}"): ("admin", {}),
    ("delete", "/v1/collections/{collection}"): ("admin", {}),
}


def test_every_route_answers_each_key_as_its_level_says(server: Server) -> None:
    operations = {(method, path) for path, item in
                  httpx.get(f"{server.url}/openapi.json", timeout=10).json()["paths"].items()
                  for method in item}
    assert operations == set(_MATRIX_REQUESTS)  # a new route must be added here, with its level
    keys = {"none": {}, "wrong": {"X-API-Key": "wrong-key-0123456789"},
            "read": {"Authorization": f"Bearer {READ_KEY}"}, "admin": {"X-API-Key": API_KEY}}
    fill = {"collection": "matrix", "job_id": "0" * 32, "doc_id": "paris"}
    answers = {}
    with server.client() as client, server.client(headers=AUTH) as admin:
        for (method, path), (level, body) in _MATRIX_REQUESTS.items():  # admin writes last
            for key_name, headers in keys.items():
                response = client.request(method.upper(), path.format(**fill), headers=headers, **body)
                answers[(method, path, key_name)] = response.status_code
                if key_name == "admin" and method == "post" and path.endswith("/documents"):
                    # reads find it indexed
                    _wait_for_job(admin, response.json()["job_id"])
                if level == "public":
                    assert response.status_code == 200, (method, path, key_name, response.text)
                elif key_name in ("none", "wrong"):
                    assert response.status_code == 401, (method, path, key_name, response.text)
                    assert response.headers["www-authenticate"] == "Bearer"
                elif level == "admin" and key_name == "read":
                    assert response.status_code == 403, (method, path, response.text)
                    assert "admin" in response.json()["detail"]
                else:
                    assert response.status_code not in (401, 403), (method, path, key_name, response.text)
        print(f"\naccess matrix: {len(answers)} requests")
        # no key, right or wrong, shows up in the log, an answer or the metrics
        metrics = client.get("/metrics").text
    log = (server.workdir / "serve.log").read_text()
    for key in (API_KEY, READ_KEY, keys["wrong"]["X-API-Key"]):
        assert key not in log and key not in metrics


def test_a_browser_page_of_an_allowed_origin_may_search(server: Server) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with server.client() as client:
        allowed = client.options("/v1/collections/geo/search",
                                 headers={"Origin": ALLOWED_ORIGIN, **preflight})
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers  # keys are headers
        refused = client.options("/v1/collections/geo/search",
                                 headers={"Origin": "http://elsewhere.test", **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        search = client.post("/v1/collections/geo/search", json={"query": "x"},
                             headers={"Origin": ALLOWED_ORIGIN, "Authorization": f"Bearer {READ_KEY}"})
        assert search.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_serving_a_network_without_a_key_is_refused_unless_opted_out(tmp_path: Path) -> None:
    port = str(_free_port())
    refused = subprocess.run([*BIENC, "serve", "--host", "0.0.0.0", "--port", port], cwd=tmp_path,
                             env=bienc_env(), capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1 and "BIENC_API_KEY" in refused.stderr, refused.stderr
    assert "BIENC_ALLOW_ANONYMOUS=true" in refused.stderr and "Traceback" not in refused.stderr
    # opted out: it starts, and says so; stopped once it has (the warning comes before it listens)
    log = tmp_path / "anonymous.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*BIENC, "serve", "--host", "0.0.0.0", "--port", port], cwd=tmp_path,
                                   env=bienc_env(allow_anonymous="true"), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while "no API key" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            stop_gracefully(process)
    assert "BIENC_ALLOW_ANONYMOUS=true" in log.read_text()


# Fuzzing: requests generated from the server's own OpenAPI schema, valid and invalid, plus
# valid ones aimed at an existing collection. Runs last: it creates and deletes collections.


def test_fuzz_never_answers_5xx(server: Server, api: httpx.Client) -> None:
    accepted = api.post("/v1/collections/fuzzed/documents", json={"documents": SHORT})
    _wait_for_job(api, accepted.json()["job_id"])
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    report = fuzz(schema, lambda case: case.call(base_url=server.url, headers=AUTH,
                                                 timeout=FUZZ_REQUEST_TIMEOUT_S),
                  max_examples=FUZZ_EXAMPLES, timeout_s=FUZZ_REQUEST_TIMEOUT_S,
                  existing={"collection": "fuzzed", "doc_id": "paris"})
    print(f"\nfuzz against bienc serve: {report.summary()}")
    assert not report.failures, "\n".join(report.failures[:20])
    assert len(report.operations()) == 21
    assert any("search" in op and status == 200 for op, _, status in report.statuses)
    assert any(op.startswith("POST") and status == 202 for op, _, status in report.statuses)
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert server.process.poll() is None


def test_the_same_api_over_redis_and_a_celery_worker(tmp_path: Path, redis_db: redis.Redis) -> None:
    """With BIENC_BROKER_URL and no Qdrant server, `bienc serve` owns the embedded store and
    runs the Celery worker that consumes the shared Redis queue."""
    env = bienc_env(broker_url=TEST_REDIS_URL)
    with serve(tmp_path, env) as running, running.client() as client:
        accepted = client.post("/v1/collections/r/documents", json={"documents": SHORT})
        assert accepted.status_code == 202, accepted.text
        assert redis_db.exists(f"bienc:job:{accepted.json()['job_id']}")  # job state in that Redis
        status = _wait_for_job(client, accepted.json()["job_id"])
        assert (status["indexed"], status["failed"]) == (len(SHORT), 0)
        hits = client.post("/v1/collections/r/search",
                           json={"query": "Where is the Eiffel Tower?", "top_k": 3}).json()
        assert hits["results"][0][0]["id"] == "eiffel"
        assert client.delete("/v1/collections/r/documents/eiffel").status_code == 200
        assert client.get("/v1/collections/r").json()["documents"] == len(SHORT) - 1
