"""SciFact's chunks encoded once: the benchmarks that need bienc's default chunk vectors read
them from bench/out (keyed by the encoder, its precision, the chunking and the documents)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from bienc.encoding.encoder import Encoder
from bienc.ingest.documents import Document
from bienc.store.record import Chunking
from bienc.workers.indexing import chunk_documents

ROOT = Path(__file__).resolve().parent.parent


def encoded_chunks(encoder: Encoder, docs: list[Document], params: Chunking
                   ) -> tuple[list[Any], np.ndarray]:
    chunked = chunk_documents(docs, encoder, params)
    """The documents' chunks and their vectors, one row per chunk in order."""
    key = hashlib.sha256(f"{encoder.identity}|{encoder.encoding}|{params.fingerprint()}|"
                         f"{len(docs)}".encode()).hexdigest()[:16]
    cache = ROOT / "bench" / "out" / f"scifact-chunks-{key}.npy"
    if cache.exists():
        return chunked, np.load(cache)
    started = time.perf_counter()
    vectors = encoder.encode_documents([c.text for chunks in chunked for c in chunks])
    print(f"encoded {len(vectors)} chunks of {len(docs)} documents in "
          f"{time.perf_counter() - started:.0f} s ({encoder.encoding})", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return chunked, vectors
