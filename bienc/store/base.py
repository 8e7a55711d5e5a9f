"""What the engines share: the Store methods that are the same whatever the engine, written once
over the few each engine provides (as qdrant-client's QdrantBase is the one interface of its
local and remote engines)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bienc.config.errors import CollectionError, ConfigError
from bienc.store.filters import MetadataFilter
from bienc.store.interface import Candidate, Hit, SparseVector, resolved

if TYPE_CHECKING:
    import numpy as np


def in_use_error(location: str) -> ConfigError:
    """An embedded store's folder is held by another process."""
    return ConfigError(
        f"the embedded store {location} is open in another process (a running "
        "`bienc worker` or `bienc serve`?). Stop it first, or run a Qdrant server and set "
        "BIENC_QDRANT_URL so that processes can share it."
    )


class StoreBase(ABC):
    """The engine-independent part of bienc.store.interface.Store. `_lock` makes a method's
    calls one step where the engine needs that (a no-op where it does not)."""

    location: str
    _lock: AbstractContextManager[Any]

    @abstractmethod
    def resolve(self, name: str) -> str | None: ...
    @abstractmethod
    def drop_physical(self, physical: str) -> bool: ...
    @abstractmethod
    def _collection(self, name: str) -> Any:
        """The collection `name` stands for, or CollectionNotFoundError."""
    @abstractmethod
    def first_chunks(self, name: str, doc_ids: Iterable[str],
                     fields: list[str] | None = None) -> dict[str, dict[str, Any]]: ...
    @abstractmethod
    def dense_candidates(self, name: str, vector: np.ndarray, limit: int, *,
                         query_filter: MetadataFilter | None = None,
                         score_threshold: float | None = None,
                         exact: bool = False) -> list[Candidate]:
        """The `limit` best documents by cosine, each with its best chunk, best first.
        `exact` skips the HNSW graph (and quantisation) and scores every point; else the
        graph is walked with a candidate list that grows with `limit` (hnsw_ef)."""
    @abstractmethod
    def fetch_hits(self, name: str, chosen: Sequence[Candidate], with_text: bool = True
                   ) -> list[Hit]: ...
    @abstractmethod
    def _lexical_candidates(self, name: str, query: SparseVector, limit: int,
                            query_filter: MetadataFilter | None,
                            score_threshold: float | None) -> list[Candidate]:
        """lexical_candidates of a query with tokens."""

    def _physical(self, name: str) -> str:
        return resolved(self, name)

    def delete_collection(self, name: str) -> bool:
        """Drop `name` (its alias, if it is one, and the physical collection); False when it
        did not exist."""
        with self._lock:
            physical = self.resolve(name)
            if physical is None:
                return False
            return self.drop_physical(physical)

    def get_document(self, name: str, doc_id: str) -> dict[str, Any] | None:
        """Chunk 0's payload of a document: its full text, title and metadata."""
        with self._lock:
            self._collection(name)
            return self.first_chunks(name, [doc_id]).get(doc_id)

    def index_builds(self) -> dict[str, dict[str, Any]]:
        """The index builds of the collections open in this process, by physical collection
        (bienc.store.parts.BuildStatus.to_dict): only the embedded store builds its own; a
        Qdrant server's are its business."""
        return {}

    def server_snapshot(self, physical: str, into: Path) -> bool:
        """Write the engine's own snapshot of `physical` to `into` and return True, where the
        engine is a Qdrant server whose snapshot holds the whole collection; else False (the
        caller reads the points instead: read_points)."""
        return False

    def restore_server_snapshot(self, physical: str, source: Path, checksum: str) -> None:
        """Recover physical collection `physical` from a server's own snapshot file."""
        raise CollectionError(
            f"this snapshot is a Qdrant server's own, and the store at {self.location} is not a "
            "Qdrant server: restore it into a bienc that uses one (BIENC_QDRANT_URL), or take a "
            "portable snapshot there (`bienc snapshot create NAME --portable`)")

    def lexical_candidates(self, name: str, query: SparseVector, limit: int, *,
                           query_filter: MetadataFilter | None = None,
                           score_threshold: float | None = None) -> list[Candidate]:
        """The `limit` best documents by BM25 (their lexical vectors, IDF over the documents
        held now), best first; none for a query without tokens."""
        if not query.indices:
            return []
        return self._lexical_candidates(name, query, limit, query_filter, score_threshold)

    def search(self, name: str, vector: np.ndarray, top_k: int, *,
               query_filter: MetadataFilter | None = None, score_threshold: float | None = None,
               with_text: bool = True, exact: bool = False) -> list[Hit]:
        """The `top_k` best documents by cosine of their best chunk, best first (a dense
        search: dense_candidates, then fetch_hits)."""
        chosen = self.dense_candidates(name, vector, top_k, query_filter=query_filter,
                                       score_threshold=score_threshold, exact=exact)
        return self.fetch_hits(name, chosen, with_text)
