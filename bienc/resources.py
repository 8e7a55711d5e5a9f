"""The heavy objects of a process (encoder, store, Redis), built on first use and shared.

Entry points and workers ask `get_resources()`; tests and the embedded runtime may install
their own with `set_resources()` to choose what is injected.
"""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING

import redis

from bienc.config.settings import Settings, get_settings
from bienc.queue.broker import redis_url
from bienc.queue.jobs import JobTracker
from bienc.store.factory import open_store
from bienc.store.interface import Store

if TYPE_CHECKING:  # numpy and torch: only for processes that encode (not `bienc ingest`)
    from bienc.encoding.encoder import Encoder


class Resources:
    """Lazily built, thread-safe holders of the encoder, the store and the job tracker."""

    def __init__(self, settings: Settings, *, encoder: Encoder | None = None,
                 store: Store | None = None, redis_client: redis.Redis | None = None):
        self.settings = settings
        self._encoder = encoder
        self._store = store
        self._redis = redis_client
        self._lock = threading.RLock()

    @property
    def encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                from bienc.encoding.encoder import load_encoder

                self._encoder = load_encoder(self.settings)
            return self._encoder

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings)
            return self._store

    @property
    def redis(self) -> redis.Redis:
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(redis_url(self.settings))
            return self._redis

    @property
    def jobs(self) -> JobTracker:
        return JobTracker(self.redis, self.settings.job_ttl_s)

    @property
    def has_encoder(self) -> bool:
        return self._encoder is not None

    @property
    def has_store(self) -> bool:
        return self._store is not None

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


_current: Resources | None = None
_current_lock = threading.Lock()


def get_resources() -> Resources:
    global _current
    with _current_lock:
        if _current is None:
            _current = Resources(get_settings())
        return _current


def set_resources(resources: Resources | None) -> None:
    global _current
    with _current_lock:
        _current = resources


def close_resources() -> None:
    """Release the current process's store, if one was opened (call before exit)."""
    with _current_lock:
        if _current is not None:
            _current.close()


def settle_heap() -> None:
    """Call once a long-running process has loaded what it keeps (model, store, libraries):
    moves those objects (~0.5M) out of the garbage collector's sight. Otherwise every full
    collection walks them all, 250 ms here, and lands on whichever request triggers it:
    measured at 100k points, top-1000 p99 345 -> 99 ms and top-10 p99 17.8 -> 14.4 ms."""
    gc.collect()
    gc.freeze()
