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
a sealed part, merges parts into one (plan_job), or compacts the lexical part (rewrites it
without the slots its deleted points leave, which Edge never reclaims), and the parent swaps
the result in: it loads the new shard (a short stall: ~1.5 us a point), applies to it the
operations made on the old parts since their copy began (the journal), checks that it holds
as many points as they do, and retires them. A point id is in one part at most: a write to
the active part deletes the id from the others.

The copy is taken without the write lock: a source takes only deletes and payload-index
changes meanwhile (the lexical part also upserts), each journalled from before the copy began
and replayed on the result, so a file copied before or after a change ends the same; index
changes, whose files a copy could catch half made, wait for the copy (`_copying`).

Reads hold a reference on the shards they use (`_held`): a swapped-out or closed shard is
closed when its last reader lets go, never under a running search.

Crash safety, the manifest and the folders: bienc.store.parts_files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from bienc.config.crash import crash_point
from bienc.config.errors import StoreUnavailableError
from bienc.store.builder import scratch_of
from bienc.store.durable import fsync_dir, make_dir, write_atomic
from bienc.store.parts_files import (
    LEGACY_SHARD,
    LEXICAL_PART,
    MANIFEST,
    PARTS_DIR,
    BuildStatus,
    Job,
    Part,
    clear_leftovers,
    copy_tree,
    has_index,
)

log = logging.getLogger(__name__)

ABSORB = 2.0  # a build takes in the indexed parts up to this many times its sealed points
IDLE_S = 10.0  # after this long without writes, a collection's parts are merged (plan_job)
IDLE_RATIO = 4
IDLE_SEAL = 1000  # an idle collection's active part is sealed (and indexed) from this size
# An indexed part is searched through its graph when a request asks for no more points
# than the search's `ef` (the graph's candidate list: then the first n points of a deeper
# request are those of a request for n, the same list cut shorter, so a hybrid search's
# tiers agree with each other), and otherwise exactly when it holds fewer than this many
# points per point asked for: brute force costs the part's size, HNSW about the candidates
# it keeps (ef, at least the points asked for) times the graph's degree, and its recall
# falls as a request asks for more of its candidates. Measured (bench/search_latency.py
# --ef-sweep, one 100,000-point part, 400 points asked for): exact search 28 ms with recall
# 1, HNSW 25 ms with 0.994 at ef 2048 and 15 ms with 0.956 at ef 512.
EXACT_RATIO = 250
RETRY_BASE_S = 30.0  # a failed build is tried again after this long, twice as long each time
RETRY_MAX_S = 3600.0  # a failing build is retried at most this far apart
CLOSE_WAIT_S = 60.0  # closing waits this long for the reads still running on a collection


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


class Parts:
    """The parts of one physical collection, under its folder. Thread-safe: writes (and a
    job's journal replay and swap) take turns on `write_lock`; a read holds a reference on
    the shards it queries, taken under a short lock, so that no search waits for a write, a
    copy or a swap, and no shard is closed under a search."""

    def __init__(self, folder: Path, dense_config: Callable[[], qe.EdgeConfig],
                 lexical_config: qe.EdgeConfig | None, threshold: int,
                 field_indexes: Callable[[qe.EdgeShard], None], retry_s: float = RETRY_BASE_S):
        self.folder = folder
        self._dense_config = dense_config
        self._lexical_config = lexical_config
        self._threshold = threshold
        self._field_indexes = field_indexes  # creates a new shard's payload indexes
        self._retry_s = retry_s
        self.parts: dict[str, Part] = {}
        self.lexical_part: Part | None = None
        self.active = ""
        self._next = 1
        self.active_points = 0
        self._unnamed_active = False  # a seal made the active part but could not name it
        self.job: Job | None = None
        self.build = BuildStatus()
        self.closed = False
        self.write_lock = threading.RLock()
        self._copying = threading.Lock()  # held while a job's sources are copied
        self._state_lock = threading.Lock()
        self._released = threading.Condition(self._state_lock)
        self._retiring: set[str] = set()  # parts retired whose shard is not closed yet
        self._retired_folders: set[str] = set()  # swapped out, folder not deleted yet
        self._lexical_dead = 0  # lexical points deleted since it was last rewritten
        self.last_write = time.monotonic()
        self._load()

    # Manifest and folders

    def _part_dir(self, name: str) -> Path:
        return self.folder / (LEGACY_SHARD if name == LEGACY_SHARD else f"{PARTS_DIR}/{name}")

    def _load(self) -> None:
        manifest_file = self.folder / MANIFEST
        manifest: dict[str, Any] = {}
        if manifest_file.is_file():
            manifest = json.loads(manifest_file.read_text())
            states = {n: str(p["state"]) for n, p in manifest["parts"].items()}
            self._next = int(manifest["next"])
            self.active = str(manifest["active"])
        elif (self.folder / LEGACY_SHARD).is_dir():  # one shard, by an older bienc
            states = {LEGACY_SHARD: "indexed"}
        else:
            states = {}
        lexical = str(manifest.get("lexical", LEXICAL_PART))
        build = manifest.get("build") or {}
        self.build = BuildStatus(int(build.get("failures", 0)), str(build.get("error", "")),
                                 build.get("failed_at"))  # a start tries again at once
        self._lexical_dead = int(manifest.get("lexical_dead", 0))
        clear_leftovers(self.folder, set(states) | {lexical}, manifest.get("building"),
                        set(manifest.get("retired", [])), self._next)
        for name, state in states.items():
            shard = qe.EdgeShard.load(str(self._part_dir(name)), self._dense_config())
            self.parts[name] = Part(name, shard, state, shard.info().points_count)
        if self.active not in self.parts:
            self._new_active()
        self.active_points = self.parts[self.active].shard.info().points_count
        if self._lexical_config is not None:
            path = self._part_dir(lexical)
            if "lexical" in manifest and not path.is_dir():
                log.error("the lexical part %s of %s is missing: lexical search starts empty",
                          path, self.folder)
            shard = qe.EdgeShard.load(str(path), self._lexical_config) if path.is_dir() \
                else self._create(lexical, self._lexical_config)
            self.lexical_part = Part(lexical, shard, "lexical")
        self._save()

    def _create(self, name: str, config: qe.EdgeConfig) -> qe.EdgeShard:
        path = self._part_dir(name)
        make_dir(path.parent)
        shard = qe.EdgeShard.create(str(path), config)
        self._field_indexes(shard)
        shard.flush()
        fsync_dir(path.parent)  # the folder is named in the manifest next
        return shard

    def _new_active(self) -> None:
        name = f"p{self._next}"
        self._next += 1
        self.parts[name] = Part(name, self._create(name, self._dense_config()), "active")
        self.active = name
        self.active_points = 0

    def _manifest(self, states: dict[str, str], lexical: str | None) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "active": self.active, "next": self._next, "parts": {n: {"state": s} for n, s in states.items()},
            "building": self.job.target if self.job is not None else None,
            "retired": sorted(self._retired_folders), "build": self.build.record(),
            "lexical_dead": self._lexical_dead}
        if lexical is not None:
            manifest["lexical"] = lexical
        return manifest

    def _save(self, manifest: dict[str, Any] | None = None) -> None:
        if manifest is None:
            manifest = self._manifest({n: p.state for n, p in self.parts.items()},
                                      self.lexical_part.name if self.lexical_part else None)
        write_atomic(self.folder / MANIFEST, json.dumps(manifest))

    def _check_open(self) -> None:
        if self.closed:
            raise StoreUnavailableError(f"the collection at {self.folder} was closed (dropped, "
                                        "or the store closed); try again")

    def close(self) -> None:
        """Flush and close every part, once the reads running on it are done (a build in
        progress is dropped: the caller stops the builder first)."""
        self.closed = True
        with self.write_lock:
            try:
                if self.parts:
                    self._save()
            except OSError as exc:  # what it records is also rebuilt at the next load
                log.warning("could not save %s: %s", self.folder / MANIFEST, exc)
            with self._state_lock:
                live = [*self.parts.values(), *([self.lexical_part] if self.lexical_part else [])]
                self.parts.clear()
                self.lexical_part = None
            self._retire(live, "closed")
            with self._released:
                if not self._released.wait_for(lambda: not self._retiring, CLOSE_WAIT_S):
                    log.error("closing %s: reads still hold %s after %.0f s", self.folder,
                              sorted(self._retiring), CLOSE_WAIT_S)

    # Reads

    @contextmanager
    def _held(self, lexical: bool = False, filled: bool = False) -> Iterator[list[Part]]:
        """The dense parts (or the lexical one) now, none of them closed until released;
        `filled`: without the active part while it holds no point (a search or a read of
        ids skips it: reading 1,750 ids in an empty part took 1.8 ms)."""
        with self._state_lock:
            held = [self.lexical_part] if lexical and self.lexical_part else \
                [] if lexical else [p for p in self.parts.values() if not filled
                                    or p.name != self.active or self.active_points]
            for part in held:
                part.readers += 1
        try:
            yield held
        finally:
            done = []
            with self._state_lock:
                for part in held:
                    part.readers -= 1
                    if part.retired and part.readers == 0:
                        done.append(part)
            for part in done:
                self._dispose(part)

    def _retire(self, parts: list[Part], how: str) -> None:
        """Parts taken out of the collection (the caller removed them from `parts`): each
        closed now, or by its last reader."""
        with self._state_lock:
            for part in parts:
                part.retired = how
                self._retiring.add(part.name)
                if how == "swapped":
                    self._retired_folders.add(part.name)
            idle = [p for p in parts if p.readers == 0]
        for part in idle:
            self._dispose(part)

    def _dispose(self, part: Part) -> None:
        try:
            if part.retired == "closed":
                part.shard.flush()
            part.shard.close()
        except Exception:  # the others are closed all the same
            log.exception("closing part %s of %s failed", part.name, self.folder)
        if part.retired == "swapped":
            shutil.rmtree(self._part_dir(part.name), ignore_errors=True)
        with self._released:
            self._retiring.discard(part.name)
            self._retired_folders.discard(part.name)
            self._released.notify_all()

    @property
    def lexical(self) -> qe.EdgeShard | None:
        """The lexical part's shard now (for a look; a search uses query_lexical)."""
        return self.lexical_part.shard if self.lexical_part is not None else None

    def query(self, request: Callable[[int], qe.QueryRequest], exact: qe.QueryRequest
              ) -> list[Any]:
        """The best `exact.limit` points over every dense part, best first: on an indexed
        part where HNSW pays (EXACT_RATIO), `request(points)`, the graph search for a part of
        that many points (its candidate list grows with it: bienc.store.interface.hnsw_ef);
        on the others `exact` (the same search, exact)."""
        found: list[Any] = []
        limit = exact.limit
        with self._held(filled=True) as held:
            for part in held:
                asked = exact
                if part.state == "indexed":
                    graph = request(part.points)
                    ef = graph.params.hnsw_ef if graph.params is not None else None
                    if (ef is not None and limit <= ef) or part.points >= EXACT_RATIO * limit:
                        asked = graph
                found.extend(part.shard.query(asked))
        found.sort(key=lambda p: -p.score)
        return found[:limit]

    def query_lexical(self, request: qe.QueryRequest) -> list[Any]:
        with self._held(lexical=True) as held:
            return held[0].shard.query(request) if held else []

    def retrieve_lexical(self, ids: list[qe.PointId], fields: Any) -> list[Any]:
        """Records of `ids` in the lexical part (chunk 0 of documents; none without one)."""
        with self._held(lexical=True) as held:
            return held[0].shard.retrieve(ids, fields, False) if held and ids else []

    def retrieve(self, ids: list[qe.PointId], fields: Any) -> list[Any]:
        with self._held(filled=True) as held:
            return [r for part in held for r in part.shard.retrieve(ids, fields, False)]

    def count(self, request: qe.CountRequest) -> int:
        with self._held() as held:
            return sum(part.shard.count(request) for part in held)

    def schemas(self) -> list[dict[str, Any]]:
        """The payload indexes of each dense part."""
        with self._held() as held:
            return [part.shard.info().payload_schema for part in held]

    def _dense(self) -> list[qe.EdgeShard]:
        """The dense shards, for a caller holding `write_lock` (no swap, no close meanwhile)."""
        return [p.shard for p in self.parts.values()]

    def scroll(self, request_for: Callable[[Any], qe.ScrollRequest]) -> Iterator[Any]:
        """Every record a scroll request selects, part after part, while no job swaps parts
        (so that no record is missed or seen twice)."""
        with self.write_lock:
            for shard in self._dense():
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
            records = [r for shard in self._dense() for r in shard.scroll(request)[0]]
        records.sort(key=lambda r: str(r.id))
        return records[:request.limit]

    def read_all(self, limit: int, sink: Callable[[list[Any], list[Any]], None]) -> None:
        """Every dense point with its vector and payload, `limit` at a time, each page handed
        to `sink` with the lexical part's records (and vectors) of the page's points that
        have one; all as of one moment: writes and swaps wait until it returns."""
        with self.write_lock:
            lexical = self.lexical
            for shard in self._dense():
                offset: Any = None
                while True:
                    records, offset = shard.scroll(qe.ScrollRequest(
                        offset=offset, limit=limit, with_payload=True, with_vector=True))
                    heads = [r.id for r in records if (r.payload or {}).get("chunk") == 0]
                    sink(records, lexical.retrieve(heads, False, True)
                         if lexical is not None and heads else [])
                    if offset is None:
                        break

    # Writes

    def _apply(self, part: Part, operation: qe.UpdateOperation) -> None:
        part.shard.update(operation)
        if part.journal is not None:
            part.journal.append(operation)

    def upsert(self, points: list[qe.Point], sparse: list[qe.Point]) -> bool:
        """Write lexical points to the lexical part, then dense points to the active part
        (deleting their ids from the others): chunk 0's dense point is what says a document
        is written, so it comes last. Seals the active part once it is full; returns whether
        it did (a builder has work)."""
        with self.write_lock:
            self._check_open()
            self.last_write = time.monotonic()
            if self._unnamed_active:  # named before it takes a point, or the write fails
                self._save()
                self._unnamed_active = False
            if sparse and self.lexical_part is not None:
                self._apply(self.lexical_part, qe.UpdateOperation.upsert_points(sparse))
            ids: list[qe.PointId] = [p.id for p in points]
            for part in list(self.parts.values()):
                if part.name != self.active and ids:
                    held = [r.id for r in part.shard.retrieve(ids, False, False)]
                    if held:
                        self._apply(part, qe.UpdateOperation.delete_points(held))
                        crash_point("parts.upsert.between")
            if points:  # counted first: a read skips the active part while it counts none
                self.active_points += len(points)
                self.parts[self.active].shard.update(qe.UpdateOperation.upsert_points(points))
            if self.active_points < self._threshold:
                return False
            self._seal()
            return True

    def _seal(self) -> None:
        self.parts[self.active].shard.flush()
        with self._state_lock:
            self.parts[self.active].state = "sealed"
            self._new_active()
        crash_point("parts.seal.created")  # the new active part's folder is made, not named
        # a failed save (a full disk) leaves the manifest without the new part: a restart
        # would set aside the points written to it, so it takes none until it is named
        self._unnamed_active = True
        self._save()
        self._unnamed_active = False

    def update_all(self, operation: qe.UpdateOperation, lexical: bool = True) -> None:
        """A delete that concerns every part (and the lexical one)."""
        with self.write_lock:
            self._check_open()
            self.last_write = time.monotonic()
            for part in list(self.parts.values()):
                self._apply(part, operation)
            if lexical and self.lexical_part is not None:
                before = self.lexical_part.shard.info().points_count
                self._apply(self.lexical_part, operation)
                self._lexical_dead += max(0, before - self.lexical_part.shard.info().points_count)

    def ensure_field_index(self, field_name: str, schema: qe.PayloadSchemaType) -> None:
        """A payload index of type `schema` on `field_name` in every part that lacks one of
        that type (and in the lexical part). Waits for a copy in progress (whose files could
        catch the index half made)."""
        with self._copying, self.write_lock:
            self._check_open()
            for part in self._all_parts():
                if not has_index(part.shard, field_name, schema):
                    self._apply(part, qe.UpdateOperation.create_field_index(field_name, schema))

    def drop_field_index(self, field_name: str) -> None:
        """No payload index on `field_name` in any part."""
        with self._copying, self.write_lock:
            self._check_open()
            for part in self._all_parts():
                if field_name in part.shard.info().payload_schema:
                    self._apply(part, qe.UpdateOperation.delete_field_index(field_name))

    def _all_parts(self) -> list[Part]:
        return [*self.parts.values(), *([self.lexical_part] if self.lexical_part else [])]

    # Building

    def state(self) -> dict[str, int]:
        """How many parts are indexed, and how many points each kind of part holds."""
        with self._held() as held:
            points = {p.name: p.shard.info().points_count for p in held}
            return {"indexed_parts": sum(p.state == "indexed" for p in held),
                    "indexed_points": sum(points[p.name] for p in held if p.state == "indexed"),
                    "unindexed_points": sum(points[p.name] for p in held if p.state != "indexed")}

    def retry_in(self) -> float | None:
        """Seconds until a failed build may be tried again; None when none failed."""
        return max(0.0, self.build.retry_at - time.monotonic()) if self.build.failures else None

    def next_job(self, work: Path, now: bool = False) -> Job | None:
        """The builder's next work on this collection (plan_job, else a compaction of the
        lexical part), its sources copied and journalled from before the copy; None when
        there is none, one is running, or a failed one waits for its retry. `now`: take the
        collection for idle. Writes go on while the sources are copied."""
        with self._copying:
            with self.write_lock:
                job = self._plan(work, now)
            if job is None:
                return None
            try:
                for name in job.sources:
                    copy = work / f".{name}.copy"
                    job.copies.append(copy)
                    copy_tree(self._part_dir(name), copy, lambda: self.closed)
            except BaseException:
                self.abandon(job)
                raise
        return job

    def _plan(self, work: Path, now: bool) -> Job | None:
        if self.job is not None or self.closed or time.monotonic() < self.build.retry_at:
            return None
        idle = now or time.monotonic() - self.last_write >= IDLE_S
        if idle and self.active_points >= IDLE_SEAL:  # so that an idle collection is all in HNSW
            self._seal()
        sizes = {n: p.shard.info().points_count for n, p in self.parts.items()}
        sources = plan_job({n: sizes[n] for n, p in self.parts.items() if p.state == "sealed"},
                           {n: sizes[n] for n, p in self.parts.items() if p.state == "indexed"},
                           idle)
        kind = "index" if len(sources) == 1 and self.parts[sources[0]].state == "sealed" else "merge"
        if not sources and self._lexical_wasteful():
            sources, kind = [self.lexical_part.name], "compact"  # type: ignore[union-attr]
        if not sources:
            return None
        target = f"p{self._next}"
        self._next += 1
        job = self.job = Job(kind, sources, target, work / f".{target}")
        try:
            for name in sources:
                part = self._source(name)
                part.shard.flush()  # the copy starts from what the files hold
                part.journal = []
            self._save()  # `next` and `building`: a crash from here on leaves nothing behind
        except BaseException:
            self.abandon(job)
            raise
        return job

    def _lexical_wasteful(self) -> bool:
        """Whether the lexical part holds as many slots of deleted points as live points (and
        at least `threshold`): Edge never reuses them, and they slow every lexical search."""
        if self.lexical_part is None:
            return False
        live = self.lexical_part.shard.info().points_count
        return self._lexical_dead >= max(self._threshold, live)

    def _source(self, name: str) -> Part:
        if self.lexical_part is not None and name == self.lexical_part.name:
            return self.lexical_part
        return self.parts[name]

    def install(self, job: Job) -> None:
        """Swap a finished job's shard in for its sources: load it, replay what the sources
        were told since their copy began, check it holds what they hold, name it in the
        manifest (the step that commits), retire them. A failure before the manifest names
        it leaves the sources as they were (the job is abandoned) and is raised."""
        final = self._part_dir(job.target)
        shard: qe.EdgeShard | None = None
        committed = False
        try:
            self._check_open()
            os.replace(job.folder, final)
            fsync_dir(final.parent)
            shard = qe.EdgeShard.load(str(final), self._lexical_config if job.kind == "compact"
                                      else self._dense_config())
            with self.write_lock:  # no write lands on the sources between the replay and the swap
                self._check_open()
                sources = [self._source(name) for name in job.sources]
                self._catch_up(job, shard, sources)
                crash_point("parts.install.renamed")
                self._commit(job)
                committed = True
                self._swap(job, shard, sources)
        except BaseException:
            if not committed:
                if shard is not None:
                    shard.close()
                shutil.rmtree(final, ignore_errors=True)
                self.abandon(job)
            raise
        self._retire(sources, "swapped")
        for copy in job.copies:
            shutil.rmtree(copy, ignore_errors=True)

    def _catch_up(self, job: Job, shard: qe.EdgeShard, sources: list[Part]) -> None:
        """Replay the sources' journals on the new shard; give it every payload index they
        have now; check that it holds exactly their points."""
        for part in sources:
            for operation in part.journal or []:
                shard.update(operation)
        wanted = {name: index.data_type for part in sources
                  for name, index in part.shard.info().payload_schema.items()}
        made = shard.info().payload_schema
        for name, kind in wanted.items():
            if name not in made or made[name].data_type != kind:
                shard.update(qe.UpdateOperation.create_field_index(name, kind))
        expected = sum(p.shard.info().points_count for p in sources)
        built = shard.info().points_count
        if built != expected:
            raise RuntimeError(f"the {job.kind} of {job.sources} built {built} points where the "
                               f"sources hold {expected}: it is dropped and built again later")
        shard.flush()

    def _commit(self, job: Job) -> None:
        """Name the new part in the manifest in place of its sources, the sources as retired."""
        compact = job.kind == "compact"
        states = {n: p.state for n, p in self.parts.items() if n not in job.sources}
        if not compact:
            states[job.target] = "indexed"
        lexical = job.target if compact else self.lexical_part.name if self.lexical_part else None
        self.job, self.build = None, BuildStatus()
        self._retired_folders.update(job.sources)
        try:
            self._save(self._manifest(states, lexical))
        except BaseException:
            self.job = job
            self._retired_folders.difference_update(job.sources)
            raise

    def _swap(self, job: Job, shard: qe.EdgeShard, sources: list[Part]) -> None:
        """The committed job in memory: its part in, its sources out (retired by the caller)."""
        new = Part(job.target, shard, "lexical" if job.kind == "compact" else "indexed",
                   shard.info().points_count)
        with self._state_lock:
            if job.kind == "compact":
                self.lexical_part = new
                self._lexical_dead = 0
            else:
                for name in job.sources:
                    del self.parts[name]
                self.parts[job.target] = new
        for part in sources:
            part.journal = None
        crash_point("parts.install.saved")

    def abandon(self, job: Job) -> None:
        """Forget a job that failed or was cancelled: its sources stay as they were."""
        with self.write_lock:
            for name in job.sources:
                part = self.parts.get(name) or (self.lexical_part if self.lexical_part and
                                                self.lexical_part.name == name else None)
                if part is not None:
                    part.journal = None
            shutil.rmtree(job.folder, ignore_errors=True)
            shutil.rmtree(scratch_of(job.folder), ignore_errors=True)
            for copy in job.copies:
                shutil.rmtree(copy, ignore_errors=True)
            if self.job is job:
                self.job = None

    def build_failed(self, error: str) -> None:
        """Count a failed build and put the next one off: twice as long after each failure
        in a row, from `retry_s` up to RETRY_MAX_S."""
        with self.write_lock:
            failures = self.build.failures + 1
            delay = min(RETRY_MAX_S, self._retry_s * 2 ** min(failures - 1, 30))
            self.build = BuildStatus(failures, error[-1000:], time.time(), time.monotonic() + delay)
            if self.closed:
                return
            try:
                self._save()
            except OSError as exc:  # the count is kept in memory all the same
                log.warning("could not save %s: %s", self.folder / MANIFEST, exc)
