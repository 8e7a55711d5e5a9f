"""The Edge store's builder thread: runs index jobs in builder processes, one at a time, and
swaps each result in.

Edge builds HNSW in `optimize()`, holding Python's GIL for the whole build (qdrant-edge-py
0.9.0: a 10k-point build stalled every thread of the process for 2-5 s), so the searching
process never calls it: a builder process (bienc.store.builder) indexes a copy of a sealed part
or merges indexed parts (bienc.store.parts.plan_job), and this thread swaps the result in.

A build that fails (the builder exits non-zero: out of memory, disk full; or the swap fails)
leaves the parts as they were and is tried again later, twice as late after each failure in a
row (Parts.build_failed), not at once in a loop; `bienc info` and /metrics show the failures.
A builder is started from this thread, and dies with this process (bienc.store.builder).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from bienc.config.crash import crash_point
from bienc.store.edge_collections import OpenCollection
from bienc.store.parts import Parts
from bienc.store.parts_files import PARTS_DIR, BuildCancelled, Job
from bienc.store.record import CollectionEncoding

log = logging.getLogger(__name__)

_IDLE_S = 5.0  # how often an idle builder thread looks for work anyway
_RELEASE_WAIT_S = 60.0  # how long dropping a collection waits for its build to stop


class Indexer:
    """Runs the index jobs of the `collections` open now (physical name, collection) in
    builder processes, one at a time, from a thread; swaps each result in when it is done.
    `dense_settings` gives a collection's dense_config arguments, `graph` the builder's rule for
    a large part's graph (bienc.store.builder.graph_links). `busy` is clear while it has
    nothing to do."""

    def __init__(self, collections: Callable[[], list[tuple[str, OpenCollection]]],
                 dense_settings: Callable[[CollectionEncoding], dict[str, Any]],
                 graph: Mapping[str, int]):
        self._collections = collections
        self._dense_settings = dense_settings
        self._graph = dict(graph)  # the builder spec's "graph" (bienc.store.builder)
        self._wake = threading.Event()
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.busy = threading.Event()
        self._settle: set[str] = set()  # physical collections to take as idle now
        self._lock = threading.Lock()  # so that no wake is missed between a pass and `busy`
        self._working = threading.Condition()  # guards `_current` and `_process`
        self._current: Parts | None = None  # the collection a job is being done for

    def wake(self, settle: str | None = None) -> None:
        """Look for work now (`settle`: and take that physical collection as idle)."""
        with self._lock:
            if settle is not None:
                self._settle.add(settle)
            self.busy.set()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bienc-builder", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        with self._working:
            process = self._process
            if self._current is not None:
                self._current.closed = True  # a copy in progress stops at its next file
        if process is not None and process.poll() is None:
            process.terminate()  # its work is lost, not the index: the parts stay as they were
        if self._thread is not None:
            self._thread.join(timeout=60)

    def release(self, parts: Parts) -> None:
        """Stop any build of `parts` (a collection about to be dropped) and return once none
        runs: the copy stops at its next file, a builder is killed, nothing is swapped in."""
        parts.closed = True
        with self._working:
            if self._current is parts and self._process is not None:
                self._process.kill()
            if not self._working.wait_for(lambda: self._current is not parts, _RELEASE_WAIT_S):
                log.error("the build of %s did not stop within %.0f s", parts.folder, _RELEASE_WAIT_S)

    def _run(self) -> None:
        while not self._stopping:
            try:
                worked = self._one_job()
            except BuildCancelled as exc:  # the collection was closed: nothing went wrong
                log.info("index build stopped: %s", exc)
                worked = False
            except Exception:  # the parts stay as they were; try again later
                log.exception("an index job failed")
                worked = False
                time.sleep(_IDLE_S)
            if worked:
                continue
            with self._lock:
                if self._wake.is_set():  # woken during the pass: another pass first
                    self._wake.clear()
                    continue
                self.busy.clear()
            self._wake.wait(self._next_look())

    def _next_look(self) -> float:
        """Seconds until the next pass: _IDLE_S, or sooner when a failed build's retry is due."""
        waits = [w for _, c in self._collections() if (w := c.parts.retry_in()) is not None]
        return min([_IDLE_S, *(w + 0.05 for w in waits)])

    def _one_job(self) -> bool:
        for physical, collection in self._collections():
            parts = collection.parts
            settle = physical in self._settle
            with self._working:
                self._current = parts
            try:
                job = parts.next_job(parts.folder / PARTS_DIR, now=settle)
                if job is not None:
                    self.busy.set()
                    self._build(physical, collection, job)
                    return True
            finally:
                with self._working:
                    self._current = None
                    self._working.notify_all()
            if settle:
                self._settle.discard(physical)
        return False

    def _build(self, physical: str, collection: OpenCollection, job: Job) -> None:
        """Run the builder on `job` and swap its result in; a failure is counted (backoff)."""
        parts = collection.parts
        started = time.perf_counter()
        config = None if job.kind == "compact" else self._dense_settings(collection.encoding)
        spec = {"kind": job.kind, "copies": [str(c) for c in job.copies], "target": str(job.folder),
                "config": config, "graph": self._graph, "parent": os.getpid()}
        with self._working:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bienc.store.builder", json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        crash_point("indexer.started")
        _, errors = self._process.communicate()
        with self._working:
            code, self._process = self._process.returncode, None
        if code != 0 or self._stopping or parts.closed:
            parts.abandon(job)
            if not (self._stopping or parts.closed):
                reason = f"the builder exited with status {code}: " + \
                    errors.decode(errors="replace").strip()[-1000:]
                self._failed(physical, parts, job, reason)
            return
        try:
            parts.install(job)
        except Exception as exc:
            if not parts.closed:
                self._failed(physical, parts, job, f"swapping it in failed: {type(exc).__name__}: {exc}")
            return
        log.info("%s %s of %s into %s in %.1f s", job.kind, job.sources, physical, job.target,
                 time.perf_counter() - started)

    @staticmethod
    def _failed(physical: str, parts: Parts, job: Job, reason: str) -> None:
        parts.build_failed(reason)
        log.error("the %s of %s of %s failed (%d in a row; next try in %.0f s): %s", job.kind,
                  job.sources, physical, parts.build.failures, parts.retry_in() or 0.0, reason)
