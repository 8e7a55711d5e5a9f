"""Snapshot files and exports at the store: points read from one engine and written into either
give the same searches; a file that is truncated or altered anywhere is refused; a half-replaced
document is kept at one version; export pages cover every document once, in one order on both
engines."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from bienc.config.errors import InvalidInputError
from bienc.encoding.lexical import LexicalEncoder, LexicalParams
from bienc.store import snapshot
from bienc.store.edge import EdgeVectorStore
from bienc.store.interface import ChunkPoint
from bienc.store.qdrant import VectorStore
from bienc.store.record import Chunking, CollectionEncoding

Store = VectorStore | EdgeVectorStore
DIMENSION = 16
LEXICAL = LexicalParams()
ENCODING = CollectionEncoding(model="m", dimension=DIMENSION, encoding="openvino/int8",
                              weights="ab" * 32, chunking=Chunking(True, 128, 16),
                              lexical=LEXICAL.record())
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]


def _open(engine: str, folder: Path) -> Store:
    if engine == "edge":
        return EdgeVectorStore(folder / "edge")
    return VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)


@pytest.fixture(params=["edge", "qdrant-local"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def source(engine: str, tmp_path: Path) -> Iterator[Store]:
    """A collection 'c' of 60 documents of 1-4 chunks, with metadata and lexical vectors."""
    store = _open(engine, tmp_path / "source")
    store.ensure_collection("c", ENCODING)
    store.upsert("c", _documents(range(60)))
    yield store
    store.close()


def _documents(numbers: Any, version: str = "v1") -> list[ChunkPoint]:
    rng = np.random.default_rng(7)
    lexical = LexicalEncoder(LEXICAL)
    points = []
    for n in numbers:
        chunks = 1 + n % 4
        text = " ".join([*(WORDS[(n * k) % len(WORDS)] for k in range(1, 3 + n % 9)), f"doc{n}"])
        sparse = next(iter(lexical.embed_documents([text])))
        for chunk in range(chunks):
            payload: dict[str, Any] = {"doc_id": f"doc-{n}", "chunk": chunk, "chunks": chunks,
                                       "title": f"Title {n}", "content_hash": f"{version}-{n}",
                                       "metadata": {"n": n, "even": n % 2 == 0, "tag": "é✓"}}
            if chunk == 0:
                payload["text"] = text
            vector = rng.normal(size=DIMENSION).astype(np.float32)
            points.append(ChunkPoint(f"doc-{n}", chunk, vector / np.linalg.norm(vector), payload,
                                     sparse if chunk == 0 else None))
    return points


def _snapshot(store: Store, folder: Path, name: str = "c") -> tuple[Path, snapshot.Manifest]:
    work = folder / "work"
    work.mkdir(parents=True)
    writer = snapshot.PointsWriter(work, DIMENSION)
    store.read_points(name, writer.add)
    documents, points = writer.finish()
    path = folder / f"c{snapshot.SUFFIX}"
    with path.open("wb") as out:
        manifest = snapshot.write(out, work, "points", name, store.resolve(name) or name,
                                  store.describe(name), documents, points)
    return path, manifest


def _searches(store: Store, name: str) -> list[Any]:
    rng = np.random.default_rng(11)
    lexical = LexicalEncoder(LEXICAL)
    answers: list[Any] = []
    for _ in range(5):
        query = rng.normal(size=DIMENSION).astype(np.float32)
        answers.append([(c.doc_id, c.chunk, round(c.score, 5))
                        for c in store.dense_candidates(name, query, 20, exact=True)])
    for words in ("alpha beta", "kappa", "sigma theta zeta"):
        query = lexical.embed_query(words)
        found = store.lexical_candidates(name, query, 20)
        answers.append(sorted((-round(c.score, 4), c.doc_id) for c in found))  # ties in any order
    chosen = store.dense_candidates(name, np.ones(DIMENSION, np.float32), 10, exact=True)
    answers.append([{**h.to_dict(), "score": round(h.score, 5)}
                    for h in store.fetch_hits(name, chosen)])
    return answers


@pytest.mark.parametrize("into", ["edge", "qdrant-local"])
def test_a_snapshot_restored_into_either_engine_searches_the_same(source: Store, into: str,
                                                                   tmp_path: Path) -> None:
    path, made = _snapshot(source, tmp_path / "snap")
    assert (made.documents, made.points) == (60, sum(1 + n % 4 for n in range(60)))
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    manifest = snapshot.read(path, unpacked)
    assert manifest == made and manifest.encoding == ENCODING
    target = _open(into, tmp_path / "target")
    try:
        target.ensure_collection("copy@1", manifest.encoding)
        for batch in snapshot.points(unpacked, manifest, batch=50):
            target.upsert("copy@1", batch)
        info = target.info("copy@1")
        assert (info.documents, info.points) == (manifest.documents, manifest.points)
        assert target.describe("copy@1") == ENCODING
        assert _searches(target, "copy@1") == _searches(source, "c")
        assert target.get_document("copy@1", "doc-5") == source.get_document("c", "doc-5")
    finally:
        target.close()


def test_a_document_caught_mid_replacement_is_kept_at_one_version(source: Store,
                                                                 tmp_path: Path) -> None:
    # doc-3 had 4 chunks; a re-ingest wrote its 2 new ones (a document's chunks are written
    # in one upsert) and died before deleting the old chunks 2 and 3
    rewritten = [p for p in _documents([3], version="v2") if p.chunk_no < 2]
    rewritten = [ChunkPoint(p.doc_id, p.chunk_no, p.vector, {**p.payload, "chunks": 2}, p.sparse)
                 for p in rewritten]
    source.upsert("c", rewritten)
    _, manifest = _snapshot(source, tmp_path / "snap")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    kept = [p for batch in snapshot.points(unpacked, snapshot.read(tmp_path / "snap" / "c.bienc.tar",
                                                                    unpacked))
            for p in batch]
    by_doc: dict[str, list[ChunkPoint]] = {}
    for point in kept:
        by_doc.setdefault(point.doc_id, []).append(point)
    assert sorted(p.chunk_no for p in by_doc["doc-3"]) == [0, 1]
    assert {p.payload["content_hash"] for p in by_doc["doc-3"]} == {"v2-3"}
    for doc_id, points in by_doc.items():  # every document whole and at one version
        head = next(p for p in points if p.chunk_no == 0)
        assert sorted(p.chunk_no for p in points) == list(range(head.payload["chunks"])), doc_id
        assert len({p.payload["content_hash"] for p in points}) == 1, doc_id
    assert manifest.points == len(kept) == source.info("c").points - 2
    assert manifest.documents == len(by_doc) == 60


def _members(path: Path) -> dict[str, tuple[int, int]]:
    """Each member's (offset of its data, size) in the file."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


def _refused(path: Path, tmp_path: Path) -> str:
    folder = tmp_path / f"unpack-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    with pytest.raises(InvalidInputError) as refused:
        snapshot.read(path, folder)
    message = str(refused.value)
    assert "checksum" in message and "nothing was changed" in message, message
    return message


def test_a_truncated_or_altered_snapshot_is_refused_with_a_checksum_error(source: Store,
                                                                          tmp_path: Path) -> None:
    path, _ = _snapshot(source, tmp_path / "snap")
    whole = path.read_bytes()
    members = _members(path)
    damaged = tmp_path / "damaged.bienc.tar"
    cuts = [1, 511, 512, len(whole) // 3, len(whole) // 2, len(whole) - 2000, len(whole) - 1]
    for cut in cuts:  # truncated anywhere
        damaged.write_bytes(whole[:cut])
        _refused(damaged, tmp_path)
    for member, (offset, size) in members.items():  # one byte changed in any member
        for at in (offset, offset + size // 2, offset + size - 1):
            altered = bytearray(whole)
            altered[at] ^= 0x01
            damaged.write_bytes(bytes(altered))
            named = snapshot.MANIFEST if member == snapshot.MANIFEST_SUM else member
            assert f"checksum mismatch on {named}" in _refused(damaged, tmp_path)
    damaged.write_bytes(b"")
    _refused(damaged, tmp_path)
    damaged.write_bytes(b"not a snapshot at all\n" * 100)
    _refused(damaged, tmp_path)


def test_a_snapshot_with_a_member_of_its_own_or_a_member_missing_is_refused(
        source: Store, tmp_path: Path) -> None:
    path, _ = _snapshot(source, tmp_path / "snap")
    with tarfile.open(path) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]

    def repack(members: dict[str, bytes]) -> Path:
        out = tmp_path / "repacked.bienc.tar"
        with tarfile.open(out, "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out

    assert "../escape" in _refused(repack({**contents, "../escape": b"x"}), tmp_path)
    for missing in contents:
        _refused(repack({n: d for n, d in contents.items() if n != missing}), tmp_path)
    # a manifest rewritten with its sum made again still has to match the members
    manifest = json.loads(contents[snapshot.MANIFEST])
    manifest["points"] += 1
    raw = json.dumps(manifest).encode()
    forged = {**contents, snapshot.MANIFEST: raw,
              snapshot.MANIFEST_SUM: hashlib.sha256(raw).hexdigest().encode() + b"\n"}
    folder = tmp_path / "forged"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match=r"not the \d+ of \d+ 16-d vectors"):
        snapshot.read(repack(forged), folder)


def test_export_pages_cover_every_document_once_in_one_order_on_both_engines(tmp_path: Path) -> None:
    stores = [_open(engine, tmp_path / engine) for engine in ("edge", "qdrant-local")]
    try:
        orders = []
        for store in stores:
            store.ensure_collection("c", ENCODING)
            store.upsert("c", _documents(range(45)))
            for size in (1, 4, 45, 100):
                seen, after = [], None
                while True:
                    page, after = store.documents_page("c", after, size)
                    assert len(page) <= size
                    seen += [p["doc_id"] for p in page]
                    if after is None:
                        break
                assert sorted(seen) == sorted(f"doc-{n}" for n in range(45))
                assert len(seen) == len(set(seen))
                orders.append(seen)
            # a page starting at a deleted document's place, and a document written between pages
            page, after = store.documents_page("c", None, 10)
            assert after is not None
            first_of_next = store.documents_page("c", after, 1)[0][0]["doc_id"]
            store.delete_documents("c", [first_of_next])
            store.upsert("c", _documents([100]))
            rest, cursor = [], after
            while cursor is not None:
                more, cursor = store.documents_page("c", cursor, 7)
                rest += [p["doc_id"] for p in more]
            assert first_of_next not in rest and not set(rest) & {p["doc_id"] for p in page}
            head = page[0]
            assert set(head) >= {"doc_id", "title", "text", "metadata"}
        assert all(order == orders[0] for order in orders)
    finally:
        for store in stores:
            store.close()
