"""Chunking choices on SciFact, measured with bienc's own chunker and encoder and exact
cosine search (no queue, no store: this isolates what chunking does to quality and cost).

    python bench/chunking.py                       # the configurations below
    python bench/chunking.py --limit 1000          # quicker, on part of the corpus

Per configuration: chunks per document, encode time, nDCG@10 and recall@100 with the
document scored by its best chunk (what bienc serves) and by alternatives.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from bienc.config.settings import Settings
from bienc.encoding.encoder import load_encoder
from bienc.ingest.documents import Document
from bienc.ingest.readers import read_path
from bienc.search.measures import load_qrels, load_queries, score_run, trec_order
from bienc.store.record import Chunking
from bienc.workers.indexing import chunk_documents

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
CONFIGS = {
    "truncate-256": Chunking(False, 256, 0),
    "96/24": Chunking(True, 96, 24),
    "128/0": Chunking(True, 128, 0),
    "128/8": Chunking(True, 128, 8),
    "128/16": Chunking(True, 128, 16),
    "128/32": Chunking(True, 128, 32),
    "160/32": Chunking(True, 160, 32),
    "160/48": Chunking(True, 160, 48),
    "192/32": Chunking(True, 192, 32),
    "192/64": Chunking(True, 192, 64),
    "256/32": Chunking(True, 256, 32),
    "256/64": Chunking(True, 256, 64),
}


def aggregate(scores: np.ndarray, owners: np.ndarray, n_docs: int, how: str) -> np.ndarray:
    """Document scores from chunk scores (queries x chunks)."""
    out = np.full((scores.shape[0], n_docs), -np.inf, dtype=np.float32)
    if how == "max":
        np.maximum.at(out.T, owners, scores.T)
        return out
    best = np.full_like(out, -np.inf)
    second = np.full_like(out, -np.inf)
    for col, doc in enumerate(owners):
        s = scores[:, col]
        higher = s > best[:, doc]
        second[:, doc] = np.where(higher, best[:, doc], np.maximum(second[:, doc], s))
        best[:, doc] = np.where(higher, s, best[:, doc])
    second = np.where(np.isinf(second), best, second)
    return best + 0.1 * second if how == "max+0.1*2nd" else best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = parser.parse_args()
    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.limit) if isinstance(d, Document)]
    queries = load_queries(DATA / "queries_test.jsonl")
    qrels = {q: r for q, r in load_qrels(DATA / "qrels_test.tsv").items() if q in queries}
    encoder = load_encoder(Settings())
    print(f"encoder {encoder.encoding}, {len(docs)} documents, {len(qrels)} queries")
    qids = list(qrels)
    qvecs = encoder.encode_queries([queries[q] for q in qids])
    print("config | chunks/doc | encode s | docs/s | aggregation | ndcg@10 | recall@100")
    for name in args.configs:
        params = CONFIGS[name]
        chunked = chunk_documents(docs, encoder, params)
        texts = [c.text for chunks in chunked for c in chunks]
        owners = np.array([i for i, chunks in enumerate(chunked) for _ in chunks])
        started = time.perf_counter()
        vectors = encoder.encode_documents(texts)
        elapsed = time.perf_counter() - started
        scores = qvecs @ vectors.T
        for how in ("max", "max+0.1*2nd"):
            doc_scores = aggregate(scores, owners, len(docs), how)
            top = np.argsort(-doc_scores, axis=1)[:, :1000]
            run = {q: trec_order((docs[i].id, float(doc_scores[n, i])) for i in top[n])
                   for n, q in enumerate(qids)}
            m = score_run(run, qrels)
            print(f"{name} | {len(texts) / len(docs):.2f} | {elapsed:.0f} | {len(docs) / elapsed:.1f}"
                  f" | {how} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f}", flush=True)


if __name__ == "__main__":
    main()
