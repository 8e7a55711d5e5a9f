"""Where a document's lexical vector should sit, and what fusing it with the dense leg gives,
on SciFact with exact search (no ANN, no store): BM25 over whole documents against BM25 over
bienc's chunks (a document scored by its best chunk), each alone and fused with the dense leg.

    python bench/lexical.py                  # full SciFact (../shared/data/scifact)

Lexical scores are Qdrant's: the document weights of qdrant_edge.Bm25 (bienc's
bienc.encoding.lexical, default parameters) times the IDF ln((N - n + 0.5) / (n + 0.5) + 1)
over the units scored (documents, or chunks). The dense leg is bienc's encoder on bienc's
default chunks, exact cosine, a document scored by its best chunk. Fusion is bienc's
(bienc.search.fusion) over each leg's best 100 documents. Measures by ir_measures.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import ir_measures
import numpy as np
from ir_measures import R, nDCG

from bienc.config.settings import Settings
from bienc.encoding.encoder import load_encoder
from bienc.encoding.lexical import LexicalEncoder, LexicalParams, document_text
from bienc.ingest.documents import Document
from bienc.ingest.readers import read_path
from bienc.search.fusion import fuse, leg_depth
from bienc.search.measures import load_qrels, load_queries
from bienc.store.interface import Candidate
from bienc.store.record import Chunking

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoded import encoded_chunks

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
MEASURES = [nDCG @ 10, R @ 100]


def best_per_document(scores: np.ndarray, owners: np.ndarray, n_docs: int, k: int
                      ) -> list[tuple[int, float]]:
    """The `k` documents of the best unit scores (a unit: a document or one of its chunks),
    with their scores; a document that scores nothing is left out."""
    best = np.full(n_docs, -np.inf)
    np.maximum.at(best, owners, scores)
    order = np.argsort(-best)[:k]
    return [(int(i), float(best[i])) for i in order if np.isfinite(best[i]) and best[i] > 0]


def bm25_scores(units: Sequence[str], queries: Sequence[str], encoder: LexicalEncoder) -> np.ndarray:
    """queries x units BM25 scores, IDF over the units."""
    postings: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for unit, vector in enumerate(encoder.embed_documents(units)):
        for term, weight in zip(vector.indices, vector.values, strict=True):
            postings[term].append((unit, weight))
    scores = np.zeros((len(queries), len(units)))
    for row, query in enumerate(queries):
        for term in encoder.embed_query(query).indices:
            found = postings.get(term, [])
            idf = math.log((len(units) - len(found) + 0.5) / (len(found) + 0.5) + 1)
            for unit, weight in found:
                scores[row, unit] += idf * weight
    return scores


def evaluate(label: str, rankings: dict[str, list[tuple[str, float]]],
             qrels: dict[str, dict[str, int]]) -> None:
    run = {q: {d: s for d, s in ranked} for q, ranked in rankings.items()}
    result = ir_measures.calc_aggregate(MEASURES, qrels, run)
    print(f"| {label} | {result[nDCG @ 10]:.4f} | {result[R @ 100]:.4f} |", flush=True)


def main() -> None:
    settings = Settings()
    encoder = load_encoder(settings)
    docs = [d for d in read_path(DATA / "corpus.jsonl", 10**7) if isinstance(d, Document)]
    queries = load_queries(DATA / "queries_test.jsonl")
    qrels = load_qrels(DATA / "qrels_test.tsv")
    query_ids = [q for q in queries if q in qrels]
    texts = [queries[q] for q in query_ids]
    chunking = Chunking(settings.chunking, settings.chunk_tokens, settings.chunk_overlap)
    chunked, vectors = encoded_chunks(encoder, docs, chunking)
    owners = np.array([d for d, chunks in enumerate(chunked) for _ in chunks])
    print(f"{len(docs)} documents, {len(owners)} chunks ({chunking.fingerprint()}), "
          f"{len(query_ids)} queries; encoder {encoder.encoding}", flush=True)
    dense_scores = encoder.encode_queries(texts) @ vectors.T

    def ranking(scores: np.ndarray, unit_owners: np.ndarray) -> dict[str, list[tuple[str, float]]]:
        return {q: [(docs[i].id, score) for i, score in best_per_document(row, unit_owners, len(docs), 1000)]
                for q, row in zip(query_ids, scores, strict=True)}

    lexical = LexicalEncoder(LexicalParams())
    dense = ranking(dense_scores, owners)
    legs = {
        "whole documents": ranking(bm25_scores(
            [document_text(d.title, d.text) for d in docs], texts, lexical), np.arange(len(docs))),
        "chunks (best per document)": ranking(bm25_scores(
            [c.text for chunks in chunked for c in chunks], texts, lexical), owners),
    }
    print("| run | nDCG@10 | recall@100 |\n|---|---|---|")
    evaluate("dense (exact)", dense, qrels)
    for unit, words in legs.items():
        evaluate(f"BM25 over {unit}", words, qrels)
        for fusion in ("dbsf", "rrf"):
            fused = {}
            depth = leg_depth(100)  # as a search for top_k 100 fetches its legs
            for q in query_ids:
                candidates = {"dense": [Candidate(d, 0, s) for d, s in dense[q][:depth]],
                              "lexical": [Candidate(d, 0, s) for d, s in words[q][:depth]]}
                fused[q] = [(c.doc_id, c.score) for c in fuse(candidates, fusion)]  # type: ignore[arg-type]
            evaluate(f"hybrid {fusion}, BM25 over {unit}", fused, qrels)


if __name__ == "__main__":
    main()
