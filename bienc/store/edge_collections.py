"""The Edge store's physical collections: their folders, created, opened and removed.

A physical collection is a folder under the store's root holding its record
(collection.json, bienc.store.record) and its parts (bienc.store.parts). It exists exactly
when its collection.json does: that is written (atomically and durably: bienc.store.durable)
before the parts are created and removed before they are deleted, so a crash leaves at worst
a folder without it, which the next `create` clears. The caller (bienc.store.edge) holds its
lock around every call, and stops a collection's build before removing it.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bienc.config.errors import CollectionError, StoreUnavailableError
from bienc.store.base import in_use_error
from bienc.store.builder import dense_config, lexical_config
from bienc.store.durable import fsync_dir, is_io_error, make_dir, write_atomic
from bienc.store.edge_filters import FieldIndexes
from bienc.store.filters import IndexType
from bienc.store.parts import Parts
from bienc.store.record import CollectionEncoding, invalid_name, is_collection_name

log = logging.getLogger(__name__)
META_FILE = "collection.json"
NAMES_KEPT = 1 << 16  # document names an open collection keeps (DocumentNames)


class OpenCollection:
    """An open collection's parts and what this process knows about it."""

    def __init__(self, parts: Parts, encoding: CollectionEncoding, fields: FieldIndexes):
        self.parts = parts
        self.encoding = encoding
        self.fields = fields
        # chunks a search needed per distinct document, by the size of the request (a
        # running estimate: the first fetch of the next search of about that size)
        self.chunks_per_document: dict[int, float] = {}
        self.names = DocumentNames()


class DocumentNames:
    """Document ids by document key ("document-key" point ids, bienc.store.interface), as
    searches have read them: a key names one document id for good (it is a hash of it), so a
    name read once stays true, and a search names the documents it found without reading
    their payloads again (~3.5 us a document from the lexical part). At most NAMES_KEPT are
    kept, the oldest forgotten first (~100 bytes each)."""

    def __init__(self, kept: int = 0) -> None:
        self._kept = kept or NAMES_KEPT
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()

    def get(self, key: int) -> str | None:
        return self._names.get(key)

    def lookup(self, keys: Iterable[int]) -> tuple[dict[int, str], list[int]]:
        """The names known of `keys`, and the keys not known."""
        known, names, missing = self._names, {}, []
        for key in keys:
            name = known.get(key)
            if name is None:
                missing.append(key)
            else:
                names[key] = name
        return names, missing

    def add(self, names: Mapping[int, str]) -> None:
        with self._lock:
            self._names.update(names)
            excess = len(self._names) - self._kept
            if excess > 0:  # insertion order: the oldest first
                for key in list(itertools.islice(self._names, excess + self._kept // 8)):
                    del self._names[key]

    def __len__(self) -> int:
        return len(self._names)


class Collections:
    """The physical collections under `root`, and those this process has open.
    `dense_settings` gives bienc.store.builder.dense_config's arguments for an encoding."""

    def __init__(self, root: Path, location: str, indexing_threshold: int,
                 dense_settings: Callable[[CollectionEncoding], dict[str, Any]],
                 indexed_fields: Mapping[str, IndexType], retry_s: float):
        self._root = root
        self._retry_s = retry_s
        self._indexed_fields = dict(indexed_fields)
        self._location = location
        self._indexing_threshold = indexing_threshold
        self._dense_settings = dense_settings
        self.open: dict[str, OpenCollection] = {}

    def folder(self, physical: str) -> Path:
        if not is_collection_name(physical, physical=True):
            raise invalid_name(physical)
        return self._root / physical

    def exists(self, physical: str) -> bool:
        return (self.folder(physical) / META_FILE).is_file()

    def list_physical(self) -> list[str]:
        return sorted(p.name for p in self._root.iterdir()
                      if is_collection_name(p.name, physical=True) and (p / META_FILE).is_file())

    def get(self, physical: str) -> tuple[OpenCollection, bool]:
        """The open collection (True: opened just now, loading its parts), which exists."""
        collection = self.open.get(physical)
        if collection is not None:
            return collection, False
        folder = self.folder(physical)
        meta = json.loads((folder / META_FILE).read_text())
        encoding = CollectionEncoding.from_record(physical, self._location, meta)
        settings = self._dense_settings(encoding)
        lexical = lexical_config() if encoding.lexical is not None else None
        fields = FieldIndexes(self._indexed_fields)
        parts = self._edge("open the collection", Parts, folder,
                           lambda: dense_config(**settings, indexing=False), lexical,
                           self._indexing_threshold, fields.create_on, self._retry_s)
        try:
            fields.load(parts)
        except Exception as exc:  # filtering still works, only slower
            log.warning("could not index the declared fields of %s: %s", physical, exc)
        collection = OpenCollection(parts, encoding, fields)
        self.open[physical] = collection
        return collection, True

    def _edge(self, what: str, fn: Any, *args: Any) -> Any:
        """Call Edge, turning its 'WAL is locked' error into the ConfigError of a busy store."""
        try:
            return fn(*args)
        except Exception as exc:
            if "WouldBlock" in str(exc):  # another process holds the shard's WAL
                raise in_use_error(self._location) from exc
            if is_io_error(exc):  # the disk's fault: tried again later
                raise StoreUnavailableError(f"cannot {what} at {self._location}: {exc}") from exc
            raise CollectionError(f"cannot {what} at {self._location}: {exc}") from exc

    def create(self, physical: str, encoding: CollectionEncoding) -> None:
        """Write the record of a new physical collection (its parts are created when it is
        first opened), clearing what a crash left of one of that name."""
        folder = self.folder(physical)
        if folder.exists():  # left by a crash before collection.json was written
            self._close(physical)
            shutil.rmtree(folder)
        make_dir(folder)
        write_atomic(folder / META_FILE, json.dumps(encoding.record()))

    def remove(self, physical: str) -> None:
        """Close and delete an existing physical collection: its record first."""
        self._close(physical)
        folder = self.folder(physical)
        (folder / META_FILE).unlink()
        fsync_dir(folder)  # gone for good before the rest goes
        shutil.rmtree(folder)

    def _close(self, physical: str) -> None:
        collection = self.open.pop(physical, None)
        if collection is not None:
            collection.parts.close()
