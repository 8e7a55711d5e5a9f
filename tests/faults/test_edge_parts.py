"""The embedded store's parts layer under faults: a writer (tests/faults/edge_writer.py) runs in
a subprocess that a named crash point (BIENC_CRASH_AT, bienc.config.crash) kills with SIGKILL;
the store is then reopened here and checked as a user would after a restart:

    * every acknowledged document is there once, at its newest version (the batch in flight
      at the kill is delivered again, as the queue does, and then it is too);
    * no chunk is left of an older version (an orphan would knock its document out);
    * no part folder is lost, none is left half made, none is quarantined;
    * dense and lexical searches answer, and find each document by its own vectors;
    * writes are not held: the rest of the batches are written, and the builder indexes.

Crash points of the store (bienc.store.parts, bienc.store.edge_indexer, bienc.store.builder):

    parts.copy               after the first file of a build's source is copied
    parts.install.renamed    a built part renamed into parts/ and caught up, not yet in the
                             manifest (between the swap and the manifest save); with
                             ":raise", a swap that fails
    parts.install.saved      the manifest names the new part, the old ones not yet removed
    parts.upsert.between     a document's old points deleted from a sealed part, its new ones
                             not yet written to the active part (an upsert spanning parts)
    parts.seal.created       the active part sealed and its successor's folder made, not
                             yet in the manifest
    indexer.started          the parent, just after it started a builder
    builder.build            the builder, before it optimizes (it exits non-zero)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bienc.api_metrics import IndexBuildsCollector
from bienc.store.edge import EdgeVectorStore
from bienc.store.parts_files import MANIFEST, PARTS_DIR, QUARANTINE
from tests.conftest import skip_unless_strict
from tests.faults import edge_writer as writer
from tests.unit.test_edge_parts import builder_processes

ROOT = Path(__file__).resolve().parents[2]
PHYSICAL = "c@1"


def _env(crash_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BIENC_CRASH_AT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if crash_at is not None:
        env["BIENC_CRASH_AT"] = crash_at
    return env


def _writer(root: Path, *args: str, crash_at: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.faults.edge_writer", str(root), *args],
                          cwd=ROOT, env=_env(crash_at), capture_output=True, text=True,
                          timeout=timeout)


def _killed_at(root: Path, point: str) -> None:
    done = _writer(root, crash_at=point)
    assert done.returncode == -signal.SIGKILL, \
        f"the writer was not killed at {point}: exit {done.returncode}\n{done.stderr[-3000:]}"


def _manifest(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / PHYSICAL / MANIFEST).read_text()))


def _versions(done: set[int]) -> dict[str, int]:
    """Each document's newest version among the batches `done`."""
    newest: dict[str, int] = {}
    for batch in writer.batches():
        if batch.number in done:
            for doc_id in batch.doc_ids:
                newest[doc_id] = batch.version
    return newest


def _points_by_document(store: EdgeVectorStore) -> dict[str, list[tuple[int, str, bool]]]:
    found: dict[str, list[tuple[int, str, bool]]] = defaultdict(list)

    def sink(points: Any) -> None:
        for p in points:
            found[p.doc_id].append((p.chunk_no, p.payload["content_hash"], p.sparse is not None))

    store.read_points(writer.COLLECTION, sink)
    return found


def check(store: EdgeVectorStore, expected: dict[str, int], in_flight: set[str] = frozenset(),
          big: set[str] = frozenset()) -> None:
    """Every document of `expected` once at its version (those `in_flight` may be anything
    consistent), no other document, no orphan chunk, and searches find each one."""
    found = _points_by_document(store)
    assert set(found) - set(in_flight) == set(expected) - set(in_flight)
    for doc_id, version in expected.items():
        if doc_id in in_flight:
            continue
        chunks = sorted(found[doc_id])
        n = writer.chunks_of(doc_id, version)
        assert chunks == [(c, writer.content_hash(doc_id, version), c == 0) for c in range(n)], \
            (doc_id, version, chunks)
    if not in_flight:
        assert store.info(writer.COLLECTION).points == sum(len(v) for v in found.values())
    for doc_id, version in sorted(expected.items())[::7]:
        if doc_id in in_flight:
            continue
        hits = store.search(writer.COLLECTION, writer.vector(doc_id, version, 0), 1)
        assert [h.doc_id for h in hits] == [doc_id]
        head = writer.document_points(doc_id, version, (1 << 20) if doc_id in big else 0)[0]
        assert head.sparse is not None
        assert doc_id in {c.doc_id for c in store.lexical_candidates(writer.COLLECTION, head.sparse, 10)}


def check_folders(root: Path) -> None:
    """The manifest's parts are all there; nothing half made is left, nothing quarantined."""
    manifest = _manifest(root)
    parts_dir = root / PHYSICAL / PARTS_DIR
    named = set(manifest["parts"]) | {manifest["lexical"]}
    assert {p.name for p in parts_dir.iterdir()} == named
    assert not (root / PHYSICAL / QUARANTINE).exists()


def finish(root: Path) -> None:
    """As a restarted service: redeliver the batch in flight and write the rest, then check
    that all is there and the builder is not wedged."""
    done, _ = writer.read_ledger(root)
    store = writer.open_store(root)
    try:
        acknowledged = _versions(done)
        started = time.monotonic()
        for batch in writer.batches():
            if batch.number not in done:
                writer.write_batch(store, batch)
        assert time.monotonic() - started < 30, "writes were held"
        store.wait_indexed(writer.COLLECTION, timeout_s=120)
        check(store, _versions({b.number for b in writer.batches()}))
        state = store.info(writer.COLLECTION).index or {}
        assert state["indexed_parts"] >= 1 and state["build_failures"] == 0
        assert acknowledged  # the crash came after some batches were acknowledged
    finally:
        store.close()
    check_folders(root)


def reopen_and_check(root: Path) -> None:
    """After the crash, before anything is written again: the acknowledged batches are there."""
    done, in_flight = writer.read_ledger(root)
    flying = {d for b in writer.batches() if b.number in in_flight for d in b.doc_ids}
    store = writer.open_store(root)
    try:
        check(store, _versions(done), flying)
    finally:
        store.close()
    check_folders(root)


@pytest.mark.parametrize("point", ["parts.copy", "parts.install.renamed", "parts.install.saved",
                                   "parts.upsert.between", "parts.seal.created"])
def test_a_kill_at_each_crash_point_loses_nothing(tmp_path: Path, point: str) -> None:
    root = tmp_path / "edge"
    _killed_at(root, point)
    reopen_and_check(root)
    finish(root)


def test_a_kill_between_the_swap_and_the_manifest_leaves_the_old_parts_named(tmp_path: Path) -> None:
    """The built part was renamed in but the manifest never named it: the old parts stay, the
    built one (recorded as "building") is removed, not quarantined."""
    root = tmp_path / "edge"
    _killed_at(root, "parts.install.renamed")
    manifest = _manifest(root)
    building = manifest["building"]
    assert building and (root / PHYSICAL / PARTS_DIR / building).is_dir()
    assert building not in manifest["parts"]
    reopen_and_check(root)
    assert not (root / PHYSICAL / PARTS_DIR / building).exists()


def test_a_builder_dies_with_its_parent(tmp_path: Path) -> None:
    """The parent is killed right after it started a builder: the builder dies too, before it
    writes its result (an orphan would finish and rename its work into parts/)."""
    root = tmp_path / "edge"
    _killed_at(root, "indexer.started")
    deadline = time.monotonic() + 30
    while builder_processes(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not builder_processes(root)
    target = root / PHYSICAL / PARTS_DIR / f".{_manifest(root)['building']}"
    assert not target.exists(), "the orphaned builder finished its build"
    reopen_and_check(root)
    finish(root)


def test_a_failing_builder_is_retried_with_backoff_and_shown(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A builder that exits non-zero (here: killed, as the OOM killer would) leaves the parts as
    they were; the next try waits twice as long each time, `info` and /metrics say so, and a
    build that succeeds again clears it."""
    monkeypatch.setenv("BIENC_CRASH_AT", "builder.build")  # the builders this store starts
    store = writer.open_store(tmp_path / "edge", build_retry_s=2.0)
    try:
        for batch in writer.batches()[:6]:
            writer.write_batch(store, batch)
        time.sleep(5)
        status = store.info(writer.COLLECTION).to_dict()["index"]
        # tries at about 0, 2 and 6 s: an immediate loop would have run a builder a second
        assert 1 <= status["build_failures"] <= 2, status
        assert "exited with status -9" in status["last_build_error"]
        assert 0 < status["next_build_retry_s"] <= 4
        assert status["indexed_parts"] == 0 and status["unindexed_points"] > 0
        registry = CollectorRegistry()
        registry.register(IndexBuildsCollector(store.index_builds))
        metrics = generate_latest(registry).decode()
        failures = status["build_failures"]
        assert f'bienc_index_build_failures{{collection="{PHYSICAL}"}} {failures:.1f}' in metrics
        assert f'bienc_index_build_retry_seconds{{collection="{PHYSICAL}"}}' in metrics
        check(store, _versions(set(range(6))))
        monkeypatch.delenv("BIENC_CRASH_AT")
        _wait_for(store, lambda s: s["indexed_parts"] >= 1, "the build was not tried again")
        store.wait_indexed(writer.COLLECTION)
        status = store.info(writer.COLLECTION).to_dict()["index"]
        assert status["build_failures"] == 0 and status["last_build_error"] is None
        check(store, _versions(set(range(6))))
    finally:
        store.close()
    check_folders(tmp_path / "edge")


def _wait_for(store: EdgeVectorStore, ready: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = dict(store.info(writer.COLLECTION).to_dict()["index"])
        if ready(status):
            return status
        assert time.monotonic() < deadline, f"{what}: {status}"
        time.sleep(0.2)


def test_a_swap_that_fails_leaves_the_parts_as_they_were_and_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while a built part is swapped in (here: raised just before the manifest would
    name it) abandons that build, counts as a failure, and the next build runs: no job is
    left set for ever."""
    monkeypatch.setenv("BIENC_CRASH_AT", "parts.install.renamed:raise")  # in this process
    store = writer.open_store(tmp_path / "edge", build_retry_s=1.0)
    try:
        for batch in writer.batches()[:6]:
            writer.write_batch(store, batch)
        status = _wait_for(store, lambda s: s["build_failures"] >= 1, "no failed swap")
        assert "InjectedFault" in status["last_build_error"] and status["indexed_parts"] == 0
        check(store, _versions(set(range(6))))
        monkeypatch.delenv("BIENC_CRASH_AT")
        _wait_for(store, lambda s: s["indexed_parts"] >= 1, "no build after the failed swap")
        store.wait_indexed(writer.COLLECTION)
        assert store.info(writer.COLLECTION).to_dict()["index"]["build_failures"] == 0
        check(store, _versions(set(range(6))))
    finally:
        store.close()
    check_folders(tmp_path / "edge")


def test_a_file_size_limit_is_a_store_outage_retried_not_a_poison_document(tmp_path: Path) -> None:
    """Edge's I/O error ("File too large (os error 27)" under RLIMIT_FSIZE, as ENOSPC would)
    raises StoreUnavailableError, which the task retries, instead of failing the documents as
    if they were at fault; the write tried again once there is room loses nothing."""
    root = tmp_path / "edge"
    first = writer.batches()[:6]
    store = writer.open_store(root)
    for batch in first:
        writer.write_batch(store, batch)
    store.close()
    done = _writer(root, "--once", "big", "--fsize", str(1 << 16))
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["raised"] == "StoreUnavailableError", outcome
    assert "os error 27" in outcome["message"] and "tried again later" in outcome["message"]
    store = writer.open_store(root)  # the retry, with room again
    try:
        big = writer.big_batch()
        writer.write_batch(store, big)
        expected = {**_versions({b.number for b in first}), **dict.fromkeys(big.doc_ids, 3)}
        check(store, expected, big=set(big.doc_ids))
    finally:
        store.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 MiB tmpfs (CI runs as root), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        skip_unless_strict(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_refuses_writes_for_a_retry_instead_of_crashing(small_disk: Path) -> None:
    """Edge writes through memory maps: on a full disk a write kills the process (SIGBUS)
    mid-write. The store refuses writes once less than its reserve is free (an outage: the
    batch is retried, no document fails), and takes them again once there is room."""
    root = small_disk / "edge"
    store = writer.open_store(root, min_free_mb=16)
    writer.write_batch(store, writer.batches()[0])
    store.close()
    ballast = small_disk / "ballast"
    done = _writer(root, "--once", "1", "--min-free-mb", "16", "--fill", str(ballast))
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["raised"] == "StoreUnavailableError", outcome
    assert "MiB of disk free, less than the 16 MiB" in outcome["message"]
    ballast.unlink()
    store = writer.open_store(root, min_free_mb=16)  # the retry, with room again
    try:
        writer.write_batch(store, writer.batches()[1])
        check(store, _versions({0, 1}))
    finally:
        store.close()
