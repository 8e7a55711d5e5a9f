"""Opening the store the topology names: a Qdrant server, Qdrant Edge or qdrant-client's
local mode (on disk or in memory). Engines are imported only here, and only the one used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bienc.config.settings import Settings
from bienc.config.topology import store_kind, store_location
from bienc.store.base import in_use_error
from bienc.store.interface import Store


def open_store(settings: Settings) -> Store:
    """Connect to the configured Qdrant server, or open the embedded store."""
    kind = store_kind(settings)
    location = store_location(settings, kind)
    ann: dict[str, Any] = {
        "hnsw_m": settings.hnsw_m, "hnsw_ef_construct": settings.hnsw_ef_construct,
        "search_ef": settings.hnsw_ef, "ef_per_document": settings.hnsw_ef_per_document,
        "quantization": settings.quantization == "int8",
        "oversampling": settings.quantization_oversampling,
        "indexed_fields": settings.indexed_field_types,
    }
    if kind == "edge":
        from bienc.store.edge import EdgeVectorStore

        return EdgeVectorStore(Path(location), hnsw_m_large=settings.hnsw_m_large, **ann)
    from qdrant_client import QdrantClient

    from bienc.store.qdrant import VectorStore

    if kind == "server":
        client = QdrantClient(url=location, api_key=settings.qdrant_api_key,
                              timeout=settings.qdrant_timeout_s)
    elif kind == "memory":
        client = QdrantClient(location=":memory:")
    else:
        try:
            client = QdrantClient(path=location)
        except RuntimeError as exc:  # portalocker: another process holds the folder
            raise in_use_error(location) from exc
    return VectorStore(client, location, remote=kind == "server", api_key=settings.qdrant_api_key,
                       timeout_s=settings.qdrant_timeout_s,
                       shard_number=settings.shard_number,
                       replication_factor=settings.replication_factor, **ann)
