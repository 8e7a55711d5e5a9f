"""Snapshots, restores and exports with the real model, Redis and stores: a restored snapshot and
a re-ingested export answer every search as the collection did, on both embedded engines; a
snapshot of another model, or a damaged one, is refused with nothing changed; snapshots taken
over HTTP while ingests run hold every batch whole and every document at one version; the
commands do the same from the shell."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bienc import snapshots
from bienc.config.errors import CollectionError, InvalidInputError, StoreUnavailableError
from bienc.config.settings import Settings
from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams
from bienc.ingest.documents import Document, parse_record
from bienc.resources import Resources
from bienc.search.searcher import SearchRequest, search
from bienc.store import snapshot
from bienc.store.filters import parse_filter
from bienc.store.interface import Store
from bienc.store.record import Chunking
from bienc.workers.indexing import encoding_of, index_documents
from tests.conftest import MODEL_CACHE_DIR, TEST_REDIS_URL
from tests.integration.conftest import bienc_env, run_bienc, run_json, write_jsonl
from tests.integration.test_api import _wait_for_job, serve

TOPICS = ["tides", "glaciers", "orchids", "comets", "violins", "harbours", "falcons", "canyons"]
QUERIES = ["Which birds hunt above the canyon?", "comet tails near the sun", "orchids",
           "How do glaciers carve valleys?", "report 17 on violins"]
MODES = ("dense", "lexical", "hybrid")


def _documents(n: int, prefix: str = "d", version: int = 1, sentences: int = 9) -> list[Document]:
    """Documents of a few 64-token chunks each, one topic each, with metadata."""
    docs = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        body = " ".join(f"Note {j} of report {i} describes the {topic} seen near station {j + i}."
                        for j in range(sentences + i % 5))
        docs.append(Document(f"{prefix}{i}", f"{body} Version {version}.", f"Report {i} on {topic}",
                             {"topic": topic, "n": i, "version": version}))
    return docs


@pytest.fixture
def resources(each_engine: Store, encoder: Encoder, redis_db: redis.Redis) -> Resources:
    settings = Settings(_env_file=None, dtype="float32", model_cache_dir=MODEL_CACHE_DIR,  # type: ignore[call-arg]
                        broker_url=TEST_REDIS_URL)
    return Resources(settings, encoder=encoder, store=each_engine, redis_client=redis_db)


def _fill(resources: Resources, name: str, documents: list[Document]) -> None:
    encoding = encoding_of(resources.encoder, Chunking(True, 64, 16), LexicalParams())
    outcome = index_documents(documents, name, resources.encoder, resources.store, encoding)
    assert outcome.failures == {}


def _ranked(hits: list[dict[str, Any]]) -> list[Any]:
    """A result list as compared: each hit as the API shows it, its score to 4 decimals, hits
    of one score in any order (float noise of another batching may reorder a tie)."""
    shown = [{**hit, "score": round(hit["score"], 4), "scores": None} for hit in hits]
    return sorted(shown, key=lambda hit: (-hit["score"], hit["id"]))


def _answers(resources: Resources, name: str) -> list[Any]:
    """Every query in every mode, with and without a filter."""
    answers = []
    for mode in MODES:
        for filters in (None, {"topic": ["comets", "falcons", "orchids"]}):
            request = SearchRequest(QUERIES, top_k=8, mode=mode, filter=parse_filter(filters))
            results = search(resources.store, resources.encoder_for, name, request)
            answers.append([_ranked([hit.to_dict() for hit in hits]) for hits in results.hits])
    return answers


def _take(resources: Resources, name: str, folder: Path) -> Path:
    path = folder / f"{name}{snapshot.SUFFIX}"
    with path.open("wb") as out:
        snapshots.create(resources, name, out, hold=True)
    return path


def _rewrite(path: Path, change: Any) -> Path:
    """The snapshot with its manifest changed by `change` and its sum made again, as a snapshot
    taken elsewhere would be."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members[snapshot.MANIFEST])
    change(manifest)
    members[snapshot.MANIFEST] = json.dumps(manifest).encode()
    members[snapshot.MANIFEST_SUM] = (hashlib.sha256(members[snapshot.MANIFEST]).hexdigest()
                                      + "\n").encode()
    out = path.with_name("rewritten" + snapshot.SUFFIX)
    with tarfile.open(out, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_a_restored_snapshot_answers_every_search_as_the_collection_did(
        resources: Resources, tmp_path: Path) -> None:
    store = resources.store
    _fill(resources, "notes", _documents(40))
    before = _answers(resources, "notes")
    path = _take(resources, "notes", tmp_path)

    restored = snapshots.restore(resources, path, "copy", hold=True)
    assert (restored["collection"], restored["physical"]) == ("copy", "copy@1")
    assert _answers(resources, "copy") == before
    info, copy = store.info("notes"), store.info("copy")
    assert (copy.documents, copy.points, copy.encoding) == (info.documents, info.points, info.encoding)
    assert store.get_document("copy", "d7") == store.get_document("notes", "d7")

    # over the collection itself: what was written since the snapshot is undone
    _fill(resources, "notes", [*_documents(1, prefix="late"), *_documents(2, version=2)])
    store.delete_documents("notes", ["d5"])
    assert _answers(resources, "notes") != before
    restored = snapshots.restore(resources, path, hold=True)
    assert (restored["collection"], restored["physical"]) == ("notes", "notes@2")
    assert store.resolve("notes") == "notes@2" and "notes@1" not in store.list_physical()
    assert _answers(resources, "notes") == before
    assert store.get_document("notes", "late0") is None and store.get_document("notes", "d5")


def test_a_snapshot_of_another_model_is_refused_naming_both_and_nothing_changes(
        resources: Resources, tmp_path: Path) -> None:
    store = resources.store
    _fill(resources, "notes", _documents(6))
    path = _take(resources, "notes", tmp_path)
    weights = resources.encoder.weights
    assert weights

    other_weights = _rewrite(path, lambda m: m["encoding"].update(weights="f" * 64))
    with pytest.raises(CollectionError) as refused:
        snapshots.restore(resources, other_weights, "copy", hold=True)
    assert "f" * 16 in str(refused.value) and weights[:16] in str(refused.value)

    def other(manifest: dict[str, Any]) -> None:
        manifest["encoding"].update(model="other/model-384", source="other/model-384")

    with pytest.raises(CollectionError) as refused:
        snapshots.restore(resources, _rewrite(path, other), "notes", hold=True)
    assert "other/model-384" in str(refused.value)
    assert resources.settings.model in str(refused.value)  # this bienc's own
    assert store.list_physical() == ["notes@1"] and store.resolve("copy") is None


def test_a_damaged_snapshot_or_a_failed_restore_changes_nothing(resources: Resources,
                                                                tmp_path: Path) -> None:
    store = resources.store
    _fill(resources, "notes", _documents(10))
    before = _answers(resources, "notes")
    path = _take(resources, "notes", tmp_path)
    whole = path.read_bytes()
    damaged = tmp_path / "damaged.bienc.tar"
    for data in (whole[: len(whole) // 2], whole[:-600], whole.replace(b"station 4", b"station 5", 1)):
        damaged.write_bytes(data)
        with pytest.raises(InvalidInputError, match="checksum"):
            snapshots.restore(resources, damaged, "notes", hold=True)
    # checksums that hold, over a manifest that claims a document more than the points hold:
    # the points are written, found short, and dropped
    short = _rewrite(path, lambda m: m.update(documents=m["documents"] + 1))
    with pytest.raises(StoreUnavailableError, match="nothing was changed"):
        snapshots.restore(resources, short, "notes", hold=True)
    assert store.list_physical() == ["notes@1"] and store.resolve("notes") == "notes@1"
    assert _answers(resources, "notes") == before
    assert not resources.redis.keys("bienc:holds:*") and not resources.redis.keys("bienc:restoring:*")


def test_an_exported_then_ingested_collection_answers_every_search_alike(
        resources: Resources) -> None:
    _fill(resources, "notes", _documents(30))
    records, cursor, pages = [], None, 0
    while True:
        page, cursor = snapshots.export_page(resources, "notes", cursor, 7)
        records += page
        pages += 1
        if cursor is None:
            break
    assert pages == 5 and len({r["id"] for r in records}) == 30
    assert set(records[0]) == {"id", "title", "text", "metadata"}
    lines = [json.loads(json.dumps(r, ensure_ascii=False)) for r in records]  # as a JSONL file holds them
    _fill(resources, "again", [parse_record(line, 1_000_000) for line in lines])
    assert _answers(resources, "again") == _answers(resources, "notes")
    with pytest.raises(InvalidInputError, match="cursor"):
        snapshots.export_page(resources, "notes", "not-a-cursor", 7)


# Over HTTP, while ingests run


def _snapshot_documents(data: bytes, folder: Path) -> dict[str, dict[str, Any]]:
    """Each document of a snapshot file: its chunk 0's payload, after checking that its chunks
    are all there and of one version."""
    folder.mkdir()
    (folder / "s.bienc.tar").write_bytes(data)
    unpacked = folder / "unpacked"
    unpacked.mkdir()
    manifest = snapshot.read(folder / "s.bienc.tar", unpacked)
    chunks: dict[str, list[dict[str, Any]]] = {}
    for batch in snapshot.points(unpacked, manifest):
        for point in batch:
            chunks.setdefault(point.doc_id, []).append(point.payload)
    heads = {}
    for doc_id, payloads in chunks.items():
        head = next(p for p in payloads if p["chunk"] == 0)
        assert sorted(p["chunk"] for p in payloads) == list(range(head["chunks"])), doc_id
        assert len({p["content_hash"] for p in payloads}) == 1, doc_id
        heads[doc_id] = head
    assert len(heads) == manifest.documents
    return heads


def _as_records(documents: list[Document]) -> list[dict[str, Any]]:
    return [{"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata} for d in documents]


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[httpx.Client]:
    # one job a batch of 6 documents of 16-token chunks, written 2 chunks an upsert (2 forward
    # batches of 1): a batch is dozens of writes with encoding between them, and a snapshot
    # that did not hold the writers would catch one half written
    env = bienc_env(ingest_batch_size="6", encode_batch_size="1", chunk_tokens="16",
                    chunk_overlap="0")
    with serve(tmp_path, env) as running, running.client() as client:
        yield client


def test_snapshots_taken_during_ingests_hold_whole_batches_at_one_version(
        busy_server: httpx.Client, tmp_path: Path) -> None:
    api = busy_server
    base = _documents(30, prefix="b", sentences=4)
    _wait_for_job(api, api.post("/v1/collections/live/documents",
                                json={"documents": _as_records(base)}).json()["job_id"])
    # 10 jobs of one batch each, each document tagged with its job: new documents, and new
    # versions (longer: more chunks) of 6 base documents each
    batches: list[list[Document]] = []
    for job in range(10):
        if job % 2:
            docs = [Document(d.id, d.text + " A longer revised closing paragraph follows." * 6,
                             d.title, {**d.metadata, "version": 2, "job": job})
                    for d in base[job // 2 * 6:job // 2 * 6 + 6]]
        else:
            docs = [Document(d.id, d.text, d.title, {**d.metadata, "job": job})
                    for d in _documents(6, prefix=f"n{job}-", sentences=6)]
        batches.append(docs)
    jobs = [api.post("/v1/collections/live/documents", json={"documents": _as_records(docs)}).json()
            for docs in batches]
    taken: list[bytes] = []
    deadline = time.monotonic() + 600
    while True:
        response = api.post("/v1/collections/live/snapshot")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-tar"
        taken.append(response.content)
        if all(api.get(f"/v1/jobs/{j['job_id']}").json()["queued"] == 0 for j in jobs):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    taken.append(api.post("/v1/collections/live/snapshot").content)  # after the last write

    partial = 0
    for number, data in enumerate(taken):
        heads = _snapshot_documents(data, tmp_path / f"s{number}")
        jobs_in = set()
        for job, docs in enumerate(batches):
            written = [heads.get(d.id, {}).get("metadata", {}).get("job") == job for d in docs]
            assert all(written) or not any(written), (number, job, written)  # whole or absent
            if all(written):
                jobs_in.add(job)
        partial += 0 < len(jobs_in) < len(batches)
    assert len(jobs_in) == len(batches)  # the last one holds them all
    assert partial >= 1, f"no snapshot of {len(taken)} was taken mid-ingest"

    # the last snapshot restores, over HTTP, under another name; an export pages through it
    restored = api.post("/v1/snapshots/restore", params={"as": "copy"}, content=taken[-1],
                        headers={"content-type": "application/octet-stream"})
    assert restored.status_code == 200, restored.text
    live, copy = api.get("/v1/collections/live").json(), api.get("/v1/collections/copy").json()
    assert (copy["documents"], copy["points"]) == (live["documents"], live["points"])
    exported, cursor = [], None
    while True:
        page = api.get("/v1/collections/copy/documents", params={"limit": 9, **(
            {"cursor": cursor} if cursor else {})}).json()
        exported += page["documents"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(exported) == live["documents"] == len({d["id"] for d in exported})
    first = next(d for d in exported if d["id"] == "b3")
    # an export record is what an ingest takes back, without the stored version: the
    # collection it goes into numbers its own writes
    assert first == {k: v for k, v in api.get("/v1/collections/live/documents/b3").json().items()
                     if k not in ("chunks", "version")}
    damaged = api.post("/v1/snapshots/restore", content=taken[-1][:-700])
    assert damaged.status_code == 422 and "checksum" in damaged.json()["detail"]
    assert api.get("/v1/collections/copy").json()["physical"] == "copy@1"
    bad_cursor = api.get("/v1/collections/copy/documents", params={"cursor": "nope"})
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["detail"]


# The commands


def test_the_commands_export_snapshot_and_restore(tmp_path: Path) -> None:
    env = bienc_env()
    write_jsonl(tmp_path / "notes.jsonl", _as_records(_documents(12)))
    assert run_bienc("ingest", "notes.jsonl", "-c", "notes", cwd=tmp_path, env=env).returncode == 0

    exported = run_bienc("export", "notes", cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "exported.jsonl").write_text(exported.stdout)
    assert len(exported.stdout.splitlines()) == 12 and "exported 12 documents" in exported.stderr
    assert run_bienc("ingest", "exported.jsonl", "-c", "again", cwd=tmp_path, env=env).returncode == 0

    created = run_bienc("snapshot", "create", "notes", "--out", "notes.bienc.tar", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    assert "12 documents" in created.stderr and (tmp_path / "notes.bienc.tar").is_file()
    restored = run_bienc("snapshot", "restore", "notes.bienc.tar", "--as", "copy", cwd=tmp_path, env=env)
    assert restored.returncode == 0, restored.stderr
    assert "now copy@1" in restored.stderr

    whole = (tmp_path / "notes.bienc.tar").read_bytes()
    (tmp_path / "cut.bienc.tar").write_bytes(whole[: len(whole) - 3000])
    before = run_json("info", cwd=tmp_path, env=env)
    refused = run_bienc("snapshot", "restore", "cut.bienc.tar", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "checksum" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert run_json("info", cwd=tmp_path, env=env) == before

    answers = [_ranked(run_json("search", "Which birds hunt above the canyon?", "-c", name,
                                cwd=tmp_path, env=env)) for name in ("notes", "again", "copy")]
    assert answers[0] and answers[0] == answers[1] == answers[2]
