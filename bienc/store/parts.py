"""One physical Qdrant Edge collection as several shards ("parts"), so that HNSW is built in
another process, never in the one that searches.

Qdrant Edge builds HNSW in `optimize()` and opens a shard in `load()`, both holding Python's
GIL for their whole run (qdrant-edge-py 0.9.0, measured: a 10k-point build stalled every
thread of the process for 2-5 s; loading a 100k-point shard, ~150 ms). So a collection is:

    active     one plain shard that takes every write, searched by brute force; at
               `threshold` points (or IDLE_SEAL, once the collection is idle) it is sealed
               and a new active part begins
    sealed     a full plain shard, still searched by brute force, until its index is built
    indexed    a shard whose HNSW a builder process built (one segment), searched by HNSW
    lexical    the documents' BM25 vectors (chunk 0 of each document), in a shard of their
               own, so that IDF counts every document once (Edge computes it per shard)

A builder process (bienc.store.builder) works on a copy of the parts it is given: it indexes
a sealed part, or merges parts into one (plan_job), and the parent swaps the result in: it
loads the new shard (a short stall: ~1.5 us a point), applies to it the deletes made to the
old parts since their copy was taken (the journal), and drops the old parts. A
point id is in one part at most: a write to the active part deletes the id from the others.

Layout of the collection's folder::

    parts.json       {"active": "p7", "next": 8, "parts": {"p3": {"state": "indexed", ...}, ...}}
    parts/p3/        an EdgeShard
    parts/lexical/   the lexical shard (collections with lexical vectors)

A collection written by an older bienc (one `shard/` folder) is read as one indexed part.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as qe

log = logging.getLogger(__name__)

MANIFEST = "parts.json"
PARTS_DIR = "parts"
LEXICAL_PART = "lexical"
LEGACY_SHARD = "shard"
ABSORB = 2.0  # a build takes in the indexed parts up to this many times its sealed points
IDLE_S = 10.0  # after this long without writes, a collection's parts are merged (plan_job)
IDLE_RATIO = 4
IDLE_SEAL = 1000  # an idle collection's active part is sealed (and indexed) from this size
# An indexed part is searched exactly when it holds fewer than this many points per point
# asked for: brute force costs the part's size, HNSW about the candidates it keeps (ef, at
# least the points asked for) times the graph's degree, and its recall falls as a request
# asks for more of its candidates. Measured (bench/search_latency.py --ef-sweep, one
# 100,000-point part, 400 points asked for): exact search 28 ms with recall 1, HNSW 25 ms
# with 0.994 at ef 2048 and 15 ms with 0.956 at ef 512.
EXACT_RATIO = 250


def plan_job(sealed: dict[str, int], indexed: dict[str, int], idle: bool) -> list[str]:
    """Which parts the builder turns into one indexed part next (by name), or [].

    Sealed parts first, all of them together, taking in the indexed parts no bigger than
    ABSORB times their points: so a part is rebuilt only into a part about three times
    bigger, each point about log(N / threshold) times in all, and the sizes of the parts
    grow geometrically (a few parts at any size). Once the collection is idle (no writes for
    IDLE_S), the indexed parts are merged so that a search visits as few HNSW graphs as it
    can: all into one when the smaller ones hold at least 1/IDLE_RATIO of the biggest (so a
    big part is rebuilt only once the collection grew by that much since), else the smaller
    ones into one (two graphs then)."""
    if sealed:
        budget = ABSORB * sum(sealed.values())
        return sorted(sealed) + sorted(n for n, size in indexed.items() if size <= budget)
    if not idle or len(indexed) < 2:
        return []
    by_size = sorted(indexed, key=lambda n: (indexed[n], n))
    rest = by_size[:-1]
    if IDLE_RATIO * sum(indexed[n] for n in rest) >= indexed[by_size[-1]]:
        return sorted(indexed)
    return sorted(rest) if len(rest) > 1 else []


@dataclass
class Part:
    name: str
    shard: qe.EdgeShard
    state: str  # active, sealed, indexed
    points: int = 0  # when it was indexed (for the choice of exact search)
    # operations applied to this part while a builder works on a copy of it
    journal: list[qe.UpdateOperation] | None = None


@dataclass
class Job:
    """A builder's work: index one sealed part, or merge indexed ones, into `target`."""

    kind: str  # "index" or "merge"
    sources: list[str]
    target: str
    folder: Path  # where the builder writes the target shard
    copies: list[Path] = field(default_factory=list)  # the sources' folders, as copied


class Parts:
    """The parts of one physical collection, under its folder. Thread-safe: writes (and a
    job's copying and journal replay) take turns on `write_lock`; a read takes a snapshot of
    the shards under a short lock and queries them without one, so that no search waits for
    a write, a copy or a swap. A swapped-out shard is closed at the next swap (or close), when
    no read can still be using it."""

    def __init__(self, folder: Path, dense_config: Callable[[], qe.EdgeConfig],
                 lexical_config: qe.EdgeConfig | None, threshold: int,
                 field_indexes: Callable[[qe.EdgeShard], None]):
        self.folder = folder
        self._dense_config = dense_config
        self._lexical_config = lexical_config
        self._threshold = threshold
        self._field_indexes = field_indexes  # creates a new shard's payload indexes
        self.parts: dict[str, Part] = {}
        self.lexical: qe.EdgeShard | None = None
        self.active = ""
        self._next = 1
        self.active_points = 0
        self.job: Job | None = None
        self.write_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self.last_write = time.monotonic()
        self._retired: list[tuple[qe.EdgeShard, Path]] = []  # swapped out, to close and delete
        self._load()

    # Manifest and folders

    def _part_dir(self, name: str) -> Path:
        return self.folder / (LEGACY_SHARD if name == LEGACY_SHARD else f"{PARTS_DIR}/{name}")

    def _load(self) -> None:
        manifest_file = self.folder / MANIFEST
        if manifest_file.is_file():
            manifest = json.loads(manifest_file.read_text())
            self._next = int(manifest["next"])
            states = {n: str(p["state"]) for n, p in manifest["parts"].items()}
            self.active = str(manifest["active"])
        elif (self.folder / LEGACY_SHARD).is_dir():  # one shard, by an older bienc
            states = {LEGACY_SHARD: "indexed"}
        else:
            states = {}
        parts_dir = self.folder / PARTS_DIR
        for leftover in parts_dir.iterdir() if parts_dir.is_dir() else []:
            # a builder's work a crash interrupted, or a part swapped out before the crash
            if leftover.name not in states and leftover.name != LEXICAL_PART:
                shutil.rmtree(leftover, ignore_errors=True)
        for name, state in states.items():
            shard = qe.EdgeShard.load(str(self._part_dir(name)), self._dense_config())
            self.parts[name] = Part(name, shard, state, shard.info().points_count)
        if self.active not in self.parts:
            self._new_active()
        self.active_points = self.parts[self.active].shard.info().points_count
        if self._lexical_config is not None:
            path = self.folder / PARTS_DIR / LEXICAL_PART
            self.lexical = qe.EdgeShard.load(str(path), self._lexical_config) if path.is_dir() \
                else self._create(path, self._lexical_config)
        self._save()

    def _create(self, path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
        path.parent.mkdir(parents=True, exist_ok=True)
        shard = qe.EdgeShard.create(str(path), config)
        self._field_indexes(shard)
        return shard

    def _new_active(self) -> None:
        name = f"p{self._next}"
        self._next += 1
        self.parts[name] = Part(name, self._create(self._part_dir(name), self._dense_config()), "active")
        self.active = name
        self.active_points = 0

    def _save(self) -> None:
        manifest = {"active": self.active, "next": self._next,
                    "parts": {n: {"state": p.state} for n, p in self.parts.items()}}
        tmp = self.folder / f".{MANIFEST}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, self.folder / MANIFEST)

    def close(self) -> None:
        with self.write_lock, self._state_lock:
            for part in self.parts.values():
                part.shard.flush()
                part.shard.close()
            if self.lexical is not None:
                self.lexical.flush()
                self.lexical.close()
            self._close_retired()
            self.parts.clear()

    # Writes

    def _apply(self, part: Part, operation: qe.UpdateOperation) -> None:
        self.last_write = time.monotonic()
        part.shard.update(operation)
        if part.journal is not None:
            part.journal.append(operation)

    def upsert(self, points: list[qe.Point], sparse: list[qe.Point]) -> bool:
        """Write dense points to the active part (deleting their ids from the others) and
        lexical ones to the lexical part. Seals the active part once it is full; returns
        whether it did (a builder has work)."""
        with self.write_lock:
            ids: list[qe.PointId] = [p.id for p in points]
            for part in list(self.parts.values()):
                if part.name != self.active and ids:
                    held = [r.id for r in part.shard.retrieve(ids, False, False)]
                    if held:
                        self._apply(part, qe.UpdateOperation.delete_points(held))
            self.last_write = time.monotonic()
            if points:
                self.parts[self.active].shard.update(qe.UpdateOperation.upsert_points(points))
                self.active_points += len(points)
            if sparse and self.lexical is not None:
                self.lexical.update(qe.UpdateOperation.upsert_points(sparse))
            if self.active_points < self._threshold:
                return False
            self._seal()
            return True

    def _seal(self) -> None:
        self.parts[self.active].shard.flush()
        with self._state_lock:
            self.parts[self.active].state = "sealed"
            self._new_active()
        self._save()

    def update_all(self, operation: qe.UpdateOperation, lexical: bool = True) -> None:
        """A delete or an index that concerns every part (and the lexical one)."""
        with self.write_lock:
            for part in list(self.parts.values()):
                self._apply(part, operation)
            if lexical and self.lexical is not None:
                self.lexical.update(operation)

    def ensure_field_index(self, field_name: str, schema: qe.PayloadSchemaType) -> None:
        """A payload index of type `schema` on `field_name` in every part that lacks one of
        that type (and in the lexical part)."""
        with self.write_lock:
            for part in list(self.parts.values()):
                if not _has_index(part.shard, field_name, schema):
                    self._apply(part, qe.UpdateOperation.create_field_index(field_name, schema))
            if self.lexical is not None and not _has_index(self.lexical, field_name, schema):
                self.lexical.update(qe.UpdateOperation.create_field_index(field_name, schema))

    def drop_field_index(self, field_name: str) -> None:
        """No payload index on `field_name` in any part."""
        with self.write_lock:
            for part in list(self.parts.values()):
                if field_name in part.shard.info().payload_schema:
                    self._apply(part, qe.UpdateOperation.delete_field_index(field_name))
            if self.lexical is not None and field_name in self.lexical.info().payload_schema:
                self.lexical.update(qe.UpdateOperation.delete_field_index(field_name))

    # Reads

    @property
    def dense(self) -> list[qe.EdgeShard]:
        """The dense parts' shards now (a snapshot: a swap does not close them under a read)."""
        with self._state_lock:
            return [p.shard for p in self.parts.values()]

    def query(self, request: qe.QueryRequest, exact: qe.QueryRequest) -> list[Any]:
        """The best `request.limit` points over every dense part, best first: `request` on
        the indexed parts big enough for HNSW to pay (EXACT_RATIO), `exact` (the same request
        with exact search) on the others."""
        with self._state_lock:
            parts = [(p.shard, p.state == "indexed" and p.points >= EXACT_RATIO * request.limit)
                     for p in self.parts.values()]
        found: list[Any] = []
        for shard, by_index in parts:
            found.extend(shard.query(request if by_index else exact))
        found.sort(key=lambda p: -p.score)
        return found[:request.limit]

    def retrieve(self, ids: list[qe.PointId], fields: Any) -> list[Any]:
        records: list[Any] = []
        for shard in self.dense:
            records.extend(shard.retrieve(ids, fields, False))
        return records

    def count(self, request: qe.CountRequest) -> int:
        return sum(shard.count(request) for shard in self.dense)

    def scroll(self, request_for: Callable[[Any], qe.ScrollRequest]) -> Iterator[Any]:
        """Every record a scroll request selects, part after part, while no job swaps parts
        (so that no record is missed or seen twice)."""
        with self.write_lock:
            for shard in self.dense:
                offset: Any = None
                while True:
                    records, offset = shard.scroll(request_for(offset))
                    yield from records
                    if offset is None:
                        break

    def page(self, request: qe.ScrollRequest) -> list[Any]:
        """The first `request.limit` records a scroll request selects over every dense part,
        in point-id order (each part scrolls in that order, and a point is in one part): so a
        page that starts where the last one stopped (`request.offset`) misses none and repeats
        none, whatever the parts. Writes and swaps wait meanwhile."""
        with self.write_lock:
            records = [r for shard in self.dense for r in shard.scroll(request)[0]]
        records.sort(key=lambda r: str(r.id))
        return records[:request.limit]

    def read_all(self, limit: int, sink: Callable[[list[Any], list[Any]], None]) -> None:
        """Every dense point with its vector and payload, `limit` at a time, each page handed
        to `sink` with the lexical part's records (and vectors) of the page's points that
        have one; all as of one moment: writes and swaps wait until it returns."""
        with self.write_lock:
            for shard in self.dense:
                offset: Any = None
                while True:
                    records, offset = shard.scroll(qe.ScrollRequest(
                        offset=offset, limit=limit, with_payload=True, with_vector=True))
                    heads = [r.id for r in records if (r.payload or {}).get("chunk") == 0]
                    lexical = self.lexical.retrieve(heads, False, True) \
                        if self.lexical is not None and heads else []
                    sink(records, lexical)
                    if offset is None:
                        break

    # Building

    def state(self) -> dict[str, int]:
        """How many parts are indexed, and how many points each kind of part holds."""
        with self._state_lock:
            parts = list(self.parts.values())
        points = {p.name: p.shard.info().points_count for p in parts}
        return {"indexed_parts": sum(p.state == "indexed" for p in parts),
                "indexed_points": sum(points[p.name] for p in parts if p.state == "indexed"),
                "unindexed_points": sum(points[p.name] for p in parts if p.state != "indexed")}

    def next_job(self, work: Path, now: bool = False) -> Job | None:
        """The builder's next work on this collection (plan_job), its sources copied and
        journalled from now on; None when there is none (or one is running). `now`: take the
        collection for idle. Writes wait while the sources are copied; searches do not."""
        with self.write_lock:
            return self._next_job(work, now)

    def _next_job(self, work: Path, now: bool) -> Job | None:
        if self.job is not None:
            return None
        idle = now or time.monotonic() - self.last_write >= IDLE_S
        if idle and self.active_points >= IDLE_SEAL:  # so that an idle collection is all in HNSW
            self._seal()
        sizes = {n: p.shard.info().points_count for n, p in self.parts.items()}
        sources = plan_job({n: sizes[n] for n, p in self.parts.items() if p.state == "sealed"},
                           {n: sizes[n] for n, p in self.parts.items() if p.state == "indexed"},
                           idle)
        if not sources:
            return None
        kind = "index" if len(sources) == 1 and self.parts[sources[0]].state == "sealed" else "merge"
        target = f"p{self._next}"
        self._next += 1
        self._save()
        job = Job(kind, sources, target, work / f".{target}")
        for name in sources:
            part = self.parts[name]
            part.shard.flush()
            copy = work / f".{name}.copy"
            shutil.copytree(self._part_dir(name), copy)
            job.copies.append(copy)
            part.journal = []
        self.job = job
        return job

    def install(self, job: Job) -> None:
        """Swap a finished job's shard in for its sources: load it, replay what the sources
        were told since their copy, drop them."""
        final = self._part_dir(job.target)
        try:
            os.replace(job.folder, final)
            shard = qe.EdgeShard.load(str(final), self._dense_config())
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            self.abandon(job)
            raise
        with self.write_lock:  # no write lands on the sources between the replay and the swap
            for name in job.sources:
                for operation in self.parts[name].journal or []:
                    shard.update(operation)
            with self._state_lock:
                self._close_retired()  # swapped out a job ago: no read is left on them
                self._retired = [(self.parts.pop(name).shard, self._part_dir(name))
                                 for name in job.sources]
                self.parts[job.target] = Part(job.target, shard, "indexed",
                                              shard.info().points_count)
            self._save()
            self._discard(job)

    def _close_retired(self) -> None:
        for shard, folder in self._retired:
            shard.close()
            shutil.rmtree(folder, ignore_errors=True)
        self._retired = []

    def abandon(self, job: Job) -> None:
        """Forget a job that failed: its sources stay as they were."""
        with self.write_lock:
            for name in job.sources:
                if name in self.parts:
                    self.parts[name].journal = None
            shutil.rmtree(job.folder, ignore_errors=True)
            self._discard(job)

    def _discard(self, job: Job) -> None:
        for copy in job.copies:
            shutil.rmtree(copy, ignore_errors=True)
        self.job = None



def _has_index(shard: qe.EdgeShard, field_name: str, schema: qe.PayloadSchemaType) -> bool:
    info = shard.info().payload_schema.get(field_name)
    return info is not None and info.data_type == schema
