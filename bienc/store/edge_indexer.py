"""The Edge store's builder thread: runs index jobs in builder processes, one at a time, and
swaps each result in.

Edge builds HNSW in `optimize()`, holding Python's GIL for the whole build (qdrant-edge-py
0.9.0: a 10k-point build stalled every thread of the process for 2-5 s), so the searching
process never calls it: a builder process (bienc.store.builder) indexes a copy of a sealed part
or merges indexed parts (bienc.store.parts.plan_job), and this thread swaps the result in.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bienc.store.edge_collections import OpenCollection
from bienc.store.parts import PARTS_DIR
from bienc.store.record import CollectionEncoding

log = logging.getLogger(__name__)

_IDLE_S = 5.0  # how often an idle builder thread looks for work anyway


class Indexer:
    """Runs the index jobs of the `collections` open now (physical name, collection) in
    builder processes, one at a time, from a thread; swaps each result in when it is done.
    `dense_settings` gives a collection's dense_config arguments. `busy` is clear while it has
    nothing to do."""

    def __init__(self, collections: Callable[[], list[tuple[str, OpenCollection]]],
                 dense_settings: Callable[[CollectionEncoding], dict[str, Any]]):
        self._collections = collections
        self._dense_settings = dense_settings
        self._wake = threading.Event()
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.busy = threading.Event()
        self._settle: set[str] = set()  # physical collections to take as idle now
        self._lock = threading.Lock()  # so that no wake is missed between a pass and `busy`

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
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # its work is lost, not the index: the parts stay as they were
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stopping:
            try:
                worked = self._one_job()
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
            self._wake.wait(_IDLE_S)

    def _one_job(self) -> bool:
        for physical, collection in self._collections():
            parts = collection.parts
            settle = physical in self._settle
            job = parts.next_job(parts.folder / PARTS_DIR, now=settle)
            if job is None:
                if settle:
                    self._settle.discard(physical)
                continue
            self.busy.set()
            started = time.perf_counter()
            spec = {"kind": job.kind, "copies": [str(c) for c in job.copies],
                    "target": str(job.folder), "config": self._dense_settings(collection.encoding)}
            self._process = subprocess.Popen([sys.executable, "-m", "bienc.store.builder",
                                              json.dumps(spec)], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, errors = self._process.communicate()
            code, self._process = self._process.returncode, None
            if code != 0 or self._stopping:
                parts.abandon(job)
                if not self._stopping:
                    log.error("indexing %s of %s failed (exit %s): %s", job.sources, physical,
                              code, errors.decode(errors="replace")[-2000:])
                return not self._stopping
            parts.install(job)
            log.info("%s %s of %s into %s in %.1f s", job.kind, job.sources, physical, job.target,
                     time.perf_counter() - started)
            return True
        return False
