"""The heavy objects of a process (encoder, store, Redis), built on first use and shared.

Entry points and workers ask `get_resources()`; tests and the embedded runtime may install
their own with `set_resources()` to choose what is injected.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING

import redis

from bienc.config.errors import CollectionError, ModelLoadError
from bienc.config.settings import Settings, get_settings
from bienc.encoding.lexical import lexical_params
from bienc.encoding.plan import model_identity
from bienc.queue.broker import redis_url
from bienc.queue.jobs import JobTracker
from bienc.queue.reindex import ReindexRegistry
from bienc.queue.versions import Versions
from bienc.queue.webhooks import queue_delivery
from bienc.store.factory import open_store
from bienc.store.interface import Store
from bienc.store.record import Chunking, CollectionEncoding, check_model

if TYPE_CHECKING:  # numpy and torch: only for processes that encode (not `bienc ingest`)
    from bienc.encoding.encoder import Encoder


class Resources:
    """Lazily built, thread-safe holders of the encoders, the store and the job tracker.

    `encoder` is the settings' model, which new collections get; `encoder_for` the model a
    collection records, loaded on first use and kept with at most BIENC_MAX_MODELS others
    (least recently used first out)."""

    def __init__(self, settings: Settings, *, encoder: Encoder | None = None,
                 store: Store | None = None, redis_client: redis.Redis | None = None):
        self.settings = settings
        self._encoder = encoder
        self._others: OrderedDict[tuple[str, str], Encoder] = OrderedDict()
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

    def default_encoding(self) -> CollectionEncoding:
        """What a new collection records under these settings (loads the settings' model)."""
        encoder, settings = self.encoder, self.settings
        lexical = lexical_params(settings)
        return CollectionEncoding(
            model=encoder.identity, dimension=encoder.dimension, encoding=encoder.encoding,
            source=encoder.source, weights=encoder.weights,
            chunking=Chunking(settings.chunking, settings.chunk_tokens, settings.chunk_overlap),
            lexical=lexical.record() if lexical is not None else None)

    def encoder_for(self, collection: str, recorded: CollectionEncoding) -> Encoder:
        """The model collection `collection` records, at its precision: CollectionError when
        it cannot be loaded here or is not the one that filled it (check_model)."""
        settings = self.settings
        source = recorded.source or (settings.model if model_identity(settings.model) == recorded.model
                                     else recorded.model)
        try:
            encoder = self.model(source, recorded.encoding)
        except ModelLoadError as exc:
            raise CollectionError(
                f"collection {collection!r} is encoded with model {recorded.model!r} "
                f"({recorded.encoding or 'its precision'}), which cannot be loaded here: {exc}"
            ) from exc
        check_model(collection, recorded, encoder.identity, encoder.dimension, encoder.weights)
        return encoder

    def model(self, source: str, encoding: str = "") -> Encoder:
        """Model `source` ("" encoding: the settings' backend and precision), loaded on first
        use; ModelLoadError when it cannot be."""
        key = (source, encoding)
        with self._lock:
            if self._is_default(source, encoding):
                return self.encoder
            if key in self._others:
                self._others.move_to_end(key)
                return self._others[key]
            from bienc.encoding.encoder import load_encoder

            encoder = load_encoder(self.settings, source, encoding)
            self._others[key] = encoder
            while self._others and len(self._others) + (self._encoder is not None) > self.settings.max_models:
                self._others.popitem(last=False)
            return encoder

    def _is_default(self, source: str, encoding: str) -> bool:
        """Whether the settings' model at its precision is the one asked for."""
        if source != self.settings.model:
            return False
        if self._encoder is not None:
            made = self._encoder.encoding
        else:
            from bienc.encoding.plan import planned_encoding

            made = planned_encoding(self.settings)
        return not encoding or encoding == made

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
        """The job tracker; a job with a callback URL has its webhook queued as it ends."""
        return JobTracker(self.redis, self.settings.job_ttl_s,
                          notify=partial(queue_delivery, self.settings))

    @property
    def reindexes(self) -> ReindexRegistry:
        # on the embedded queue every writer and every reindex step runs on this machine
        return ReindexRegistry(self.redis, self.settings.lease_s, local=not self.settings.broker_url)

    @property
    def versions(self) -> Versions:
        """Documents' versions: the sequences, the tombstones, the locks of writes."""
        return Versions(self.redis, self.settings.tombstone_retention_s)

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
