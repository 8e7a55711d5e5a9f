"""The Edge store's parts (bienc.store.parts) as a user depends on them: folders nobody named are
kept aside, a shard is not closed under a search, a dropped collection's build stops first,
the lexical part is compacted, payload indexes outlive merges, disk trouble is an outage."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from bienc.config.errors import StoreUnavailableError
from bienc.store import parts as parts_module
from bienc.store.edge import EdgeVectorStore
from bienc.store.filters import parse_filter
from bienc.store.interface import ChunkPoint
from bienc.store.parts_files import MANIFEST, PARTS_DIR, QUARANTINE
from bienc.store.record import Chunking, CollectionEncoding

DIMENSION = 8
LEXICAL = {"kind": "bm25", "k": 1.2, "b": 0.75, "avg_len": 4.0}


def _encoding(lexical: bool = False) -> CollectionEncoding:
    return CollectionEncoding(model="m", dimension=DIMENSION, chunking=Chunking(True, 64, 8),
                              lexical=LEXICAL if lexical else None)


def _points(first: int, count: int, lexical: bool = False, **meta: object) -> list[ChunkPoint]:
    rng = np.random.default_rng(first)
    return [ChunkPoint(f"d{i}", 0, rng.normal(size=DIMENSION).astype(np.float32),
                       {"doc_id": f"d{i}", "chunk": 0, "chunks": 1, "content_hash": "h",
                        "title": "", "text": f"document {i}", "metadata": dict(meta)},
                       qe.SparseVector([i % 50, 50 + i % 7], [1.0, 1.0]) if lexical else None)
            for i in range(first, first + count)]


def _manifest(root: Path) -> dict[str, object]:
    return dict(json.loads((root / "c@1" / MANIFEST).read_text()))


def builder_processes(root: Path) -> list[int]:
    """Builder processes working under `root` now (their command line names its folders)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "bienc.store.builder" in command and str(root) in command:
            found.append(int(entry.name))
    return found


def test_a_folder_no_manifest_names_is_quarantined_and_what_a_crash_left_is_removed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "edge"
    store = EdgeVectorStore(root)
    store.ensure_collection("c", _encoding())
    store.upsert("c", _points(0, 10))
    store.close()
    parts = root / "c@1" / PARTS_DIR
    stray = parts / "p99"  # a person's copy, a manifest restored from a backup...
    stray.mkdir()
    (stray / "data").write_text("keep me")
    (parts / ".p7.copy").mkdir()  # a builder's work
    manifest = _manifest(root)
    (root / "c@1" / MANIFEST).write_text(json.dumps({**manifest, "building": "p8", "retired": ["p5"]}))
    (parts / "p8").mkdir()  # a build renamed in, never named: its sources are
    (parts / "p5").mkdir()  # a part swapped out before its folder went

    with caplog.at_level(logging.WARNING, logger="bienc.store.parts"):
        store = EdgeVectorStore(root)
        assert store.count_documents("c") == 10
        store.close()
    kept = list((root / "c@1" / QUARANTINE).iterdir())
    assert [p.name.split(".")[0] for p in kept] == ["p99"]
    assert (kept[0] / "data").read_text() == "keep me"
    assert "moved to" in caplog.text and "p99" in caplog.text
    assert sorted(p.name for p in parts.iterdir()) == ["p1"]


def test_writes_go_on_while_a_build_copies_its_sources(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A build copies its sources (about 9 GB at a million chunks) without holding writes up:
    a write and a delete made during the copy return at once, and the part built from the
    copy has them (the sources' journal)."""
    copying, go_on = threading.Event(), threading.Event()
    real_copy = shutil.copy2

    def slow_disk(source: str, target: Path) -> object:  # each file waits until told
        copying.set()
        go_on.wait(30)
        return real_copy(source, target)

    monkeypatch.setattr(shutil, "copy2", slow_disk)
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=100)
    try:
        store.ensure_collection("c", _encoding())
        store.upsert("c", _points(0, 100))  # sealed: its build starts with a copy
        assert copying.wait(30), "no copy started"
        written = threading.Event()

        def write() -> None:
            store.upsert("c", _points(100, 10))
            store.delete_documents("c", ["d5"])
            written.set()

        threading.Thread(target=write, daemon=True).start()
        assert written.wait(5), "the writes waited for the copy"
        go_on.set()
        store.wait_indexed("c")
        assert store.index_state("c")["indexed_points"] == 99
        assert store.count_documents("c") == 109 and store.get_document("c", "d5") is None
    finally:
        go_on.set()
        store.close()


def test_a_shard_swapped_out_is_closed_only_once_the_searches_on_it_are_done(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    store = EdgeVectorStore(root, indexing_threshold=100)
    try:
        store.ensure_collection("c", _encoding())
        parts = store._collection("c").parts
        store.upsert("c", _points(0, 150))
        with parts._held() as searching:  # what a search holds while it runs
            # two builds swap parts out under it: the first part sealed, then its index
            store.wait_indexed("c")
            store.upsert("c", _points(150, 150))
            store.wait_indexed("c")
            assert not {p.name for p in searching} & set(parts.parts)
            query = qe.QueryRequest(limit=5, query=qe.Query.Nearest([1.0] * DIMENSION))
            assert sum(len(p.shard.query(query)) for p in searching) > 0
            assert all((root / "c@1" / PARTS_DIR / p.name).is_dir() for p in searching)
        assert not any((root / "c@1" / PARTS_DIR / p.name).exists() for p in searching)
        assert store.count_documents("c") == 300
    finally:
        store.close()


def test_closing_a_collection_waits_for_the_search_on_it(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "edge")
    store.ensure_collection("c", _encoding())
    store.upsert("c", _points(0, 20))
    parts = store._collection("c").parts
    released = threading.Event()
    answers: list[int] = []

    def search() -> None:
        with parts._held() as held:
            released.wait(5)
            query = qe.QueryRequest(limit=5, query=qe.Query.Nearest([1.0] * DIMENSION))
            answers.append(sum(len(p.shard.query(query)) for p in held))

    reader = threading.Thread(target=search)
    reader.start()
    time.sleep(0.1)
    threading.Timer(0.3, released.set).start()
    assert store.delete_collection("c")  # a reindex's switch drops the old collection so
    reader.join()
    assert answers == [5]
    store.close()


def test_dropping_a_collection_stops_its_build_first(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    store = EdgeVectorStore(root, indexing_threshold=2000)
    try:
        store.ensure_collection("c", _encoding())
        store.upsert("c", _points(0, 2000))  # sealed: a builder starts
        deadline = time.monotonic() + 30
        while not builder_processes(root):
            assert time.monotonic() < deadline, "no builder started"
            time.sleep(0.01)
        assert store.delete_collection("c")
        assert not builder_processes(root)  # not left writing in a folder being removed
        time.sleep(0.5)
        assert not (root / "c@1").exists()
        store.ensure_collection("c", _encoding())  # the name is usable again at once
        store.upsert("c", _points(0, 5))
        assert store.count_documents("c") == 5
    finally:
        store.close()


def _segments_bytes(folder: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in (folder / "segments").rglob("*") if f.is_file())


def _ranked(store: EdgeVectorStore, query: qe.SparseVector) -> list[tuple[float, str]]:
    """Lexical results, equal scores in a fixed order (results with equal scores may come
    in any order)."""
    return sorted((-round(c.score, 4), c.doc_id) for c in store.lexical_candidates("c", query, 100))


def test_the_lexical_part_is_compacted_once_it_holds_as_many_deleted_slots_as_points(
        tmp_path: Path) -> None:
    """Edge never reuses the slots of deleted points; the builder rewrites the lexical part
    without them, and lexical search answers the same."""
    root = tmp_path / "edge"
    store = EdgeVectorStore(root, indexing_threshold=100)
    try:
        store.ensure_collection("c", _encoding(lexical=True))
        for first in range(0, 600, 100):
            store.upsert("c", _points(first, 100, lexical=True))
        store.wait_indexed("c")
        old = root / "c@1" / PARTS_DIR / "lexical"
        before = _segments_bytes(old)
        query = qe.SparseVector([3, 52], [1.0, 1.0])
        store.delete_documents("c", [f"d{i}" for i in range(100, 600)])
        ranked = _ranked(store, query)
        assert _manifest(root)["lexical"] == "lexical"
        store.wait_indexed("c")
        name = str(_manifest(root)["lexical"])
        assert name != "lexical" and not old.exists()
        assert _segments_bytes(root / "c@1" / PARTS_DIR / name) < before
        assert _ranked(store, query) == ranked
        store.upsert("c", _points(600, 10, lexical=True))  # and it takes writes
        assert "d605" in {c.doc_id for c in store.lexical_candidates(
            "c", qe.SparseVector([605 % 50], [1.0]), 50)}
        ranked = _ranked(store, query)
    finally:
        store.close()
    again = EdgeVectorStore(root)
    try:
        assert _ranked(again, query) == ranked
    finally:
        again.close()


def test_an_index_made_by_a_search_outlives_merges(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    store = EdgeVectorStore(root, indexing_threshold=100)
    try:
        store.ensure_collection("c", _encoding(lexical=True))
        store.upsert("c", _points(0, 150, lexical=True, lang="en"))
        store.search("c", np.ones(DIMENSION, dtype=np.float32), 3,
                     query_filter=parse_filter({"lang": "en"}))  # indexes metadata.lang
        for first in range(150, 600, 150):
            store.upsert("c", _points(first, 150, lexical=True, lang="de"))
            store.wait_indexed("c")
        parts = store._collection("c").parts
        assert parts.build.failures == 0 and len(parts.parts) >= 2
        for shard in [*(p.shard for p in parts.parts.values()), parts.lexical]:
            assert shard is not None
            schema = shard.info().payload_schema
            assert schema["metadata.lang"].data_type == qe.PayloadSchemaType.Keyword
        assert store.count_documents("c", parse_filter({"lang": "en"})) == 150
    finally:
        store.close()


def test_a_nearly_full_disk_refuses_writes_as_an_outage(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    free_mb = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / 2**20
    store = EdgeVectorStore(root, min_free_mb=free_mb + 1024)
    try:
        with pytest.raises(StoreUnavailableError, match="free some space"):
            store.ensure_collection("c", _encoding())
    finally:
        store.close()
    store = EdgeVectorStore(root)
    try:
        store.ensure_collection("c", _encoding())
        store.upsert("c", _points(0, 3))
        assert store.count_documents("c") == 3
    finally:
        store.close()


def test_points_are_found_the_moment_they_are_written_after_a_seal(tmp_path: Path) -> None:
    """Searches and reads skip the active part while it holds nothing. Right after a seal
    (a new, empty active part), the sealed points are found and read, and so is the first
    point written to the new part, at once."""
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=100)
    try:
        store.ensure_collection("c", _encoding())
        sealed = _points(0, 100)
        store.upsert("c", sealed)
        for point in (sealed[7], _points(100, 1)[0]):
            if point.doc_id == "d100":
                store.upsert("c", [point])
            found = store.dense_candidates("c", point.vector, 1, exact=True)
            assert [c.doc_id for c in found] == [point.doc_id]
            assert [h.text for h in store.fetch_hits("c", found)] == [point.payload["text"]]
    finally:
        store.close()


def _graph_links(part_folder: Path) -> set[int]:
    """The links per node of the HNSW graphs in an Edge part's folder (its segments' own
    records of their index)."""
    links = set()
    for record in part_folder.glob("segments/*/segment.json"):
        index = json.loads(record.read_text())["config"]["vector_data"][""]["index"]
        if index["type"] == "hnsw":
            links.add(index["options"]["m"])
    return links


def test_a_part_that_grows_large_gets_a_graph_with_more_links(tmp_path: Path) -> None:
    """A part of `large_part` points or more is indexed with `hnsw_m_large` links per node (a
    large graph finds fewer true neighbours at the same candidate list); smaller ones keep
    `hnsw_m`. The results are those of exact search either way."""
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=100, hnsw_m=4,
                            hnsw_m_large=12, large_part=250)
    try:
        store.ensure_collection("c", _encoding())
        points = _points(0, 400)
        for start in range(0, 400, 100):
            store.upsert("c", points[start:start + 100])
        store.wait_indexed("c")
        parts = store._collection("c").parts
        sizes = {name: part.shard.info().points_count for name, part in parts.parts.items()}
        built = {name: _graph_links(parts._part_dir(name)) for name in sizes}
        assert any(sizes[name] >= 250 for name in sizes), sizes
        for name, links in built.items():
            if sizes[name]:
                assert links == {12 if sizes[name] >= 250 else 4}, (name, sizes[name], links)
        for point in points[::50]:
            assert [c.doc_id for c in store.dense_candidates("c", point.vector, 1)] == [point.doc_id]
    finally:
        store.close()


def test_each_part_is_searched_with_the_candidate_list_of_its_own_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search walks each part's graph with the candidate list its size calls for
    (interface.hnsw_ef): a part bigger than `ef_reference` points a longer one than a small
    part; the results are those of exact search."""
    store = EdgeVectorStore(tmp_path / "edge", indexing_threshold=100, ef_reference=200)
    try:
        store.ensure_collection("c", _encoding())
        points = _points(0, 1100)
        store.upsert("c", points[:1000])
        store.wait_indexed("c")
        store.upsert("c", points[1000:])  # a tenth of the first part: it stays a part of its own
        store.wait_indexed("c")
        parts = store._collection("c").parts
        sizes = sorted(p.points for p in parts.parts.values() if p.state == "indexed")
        assert sizes == [100, 1000], sizes
        asked: list[int] = []
        params = store.search_params
        monkeypatch.setattr(store, "search_params", lambda documents, exact=False, points=0: (
            asked.append(points), params(documents, exact, points))[1])
        for point in points[::100]:
            asked.clear()
            found = store.dense_candidates("c", point.vector, 5)
            assert sorted(asked) == sizes
            exact = store.dense_candidates("c", point.vector, 5, exact=True)
            assert [c.doc_id for c in found] == [c.doc_id for c in exact]
        efs = [params(5, points=n).hnsw_ef for n in sizes]
        assert efs[0] is not None and efs[1] is not None and efs[0] < efs[1], efs
    finally:
        store.close()


def test_a_part_the_manifest_could_not_name_takes_no_point_until_it_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk is full as a write seals the active part: the manifest, which a restart
    reads, cannot name the new one. That write fails; its retry, once there is room, names
    the new part first and then writes to it, so that every point written is in a part the
    manifest names (a restart sets aside a part it does not name, with its points)."""
    root = tmp_path / "edge"
    real_write = parts_module.write_atomic
    full = {"manifests": 1}

    def full_disk(path: Path, text: str) -> None:
        if path.name == MANIFEST and full["manifests"]:
            full["manifests"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, text)

    store = EdgeVectorStore(root, indexing_threshold=100)
    try:
        store.ensure_collection("c", _encoding())
        points = _points(0, 100)
        monkeypatch.setattr(parts_module, "write_atomic", full_disk)
        with pytest.raises(StoreUnavailableError):
            store.upsert("c", points)  # fills the active part, which is sealed
        store.upsert("c", _points(100, 5))  # another write, once there is room
        parts = store._collection("c").parts
        holding = {name for name, part in parts.parts.items() if part.shard.info().points_count}
        named = set(json.loads((parts.folder / MANIFEST).read_text())["parts"])
        assert holding <= named, (holding, named)  # as a restart would find them now
        store.upsert("c", points)  # the queue delivers the failed write again
        assert store.count_documents("c") == 105
    finally:
        store.close()
    reopened = EdgeVectorStore(root)
    try:
        assert reopened.count_documents("c") == 105
    finally:
        reopened.close()
