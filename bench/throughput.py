"""Encoder throughput on SciFact documents, side by side in one run: the seed's way
(`SentenceTransformer.encode`, fp32, batch 32, title + text cut at 256 tokens) against bienc's
encoder in each precision, for one window per document and for bienc's chunking.

    python bench/throughput.py --documents 1000

Prints docs/s and the ratio to the seed's way. End-to-end figures (through Redis and a
worker) come from bench/scifact.py.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from core.encoder import load_encoder, resolve_model_location
from core.settings import Settings
from ingest.documents import Document
from ingest.readers import read_path
from workers.indexing import ChunkingParams, chunk_documents

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=1000)
    args = parser.parse_args()
    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.documents) if isinstance(d, Document)]
    texts = [f"{d.title} {d.text}" if d.title else d.text for d in docs]

    from sentence_transformers import SentenceTransformer

    seed_model = SentenceTransformer(resolve_model_location("all-MiniLM-L6-v2"), device="cpu")
    seed_model.encode(texts[:32], batch_size=32)  # warm-up
    started = time.perf_counter()
    seed_model.encode(texts, batch_size=32)
    seed = len(docs) / (time.perf_counter() - started)
    print(f"{'variant':<34} {'docs/s':>7} {'x seed':>7}")
    print(f"{'seed: ST.encode fp32, 1 window':<34} {seed:7.1f} {1.0:7.2f}")
    for dtype in ("float32", "bfloat16"):
        encoder = load_encoder(Settings(qdrant_path=":memory:", dtype=dtype))
        for name, params in (("1 window", ChunkingParams(256, 0, enabled=False)),
                             ("chunks 128/32", ChunkingParams(128, 32))):
            encoder.encode_documents(texts[:32])
            started = time.perf_counter()
            chunked = chunk_documents(docs, encoder, params)
            encoder.encode_documents([c.text for chunks in chunked for c in chunks])
            rate = len(docs) / (time.perf_counter() - started)
            print(f"{'bienc ' + dtype + ', ' + name:<34} {rate:7.1f} {rate / seed:7.2f}", flush=True)


if __name__ == "__main__":
    main()
