"""Retrieval quality over a BEIR-format split: nDCG@10, MRR@10, recall@10/100/1000."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from bienc.config.errors import InvalidInputError

Qrels = dict[str, dict[str, int]]


def load_queries(path: Path) -> dict[str, str]:
    """Query id to text from BEIR `queries.jsonl` (`{"_id", "text"}` per line)."""
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as stream:
        for line_no, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InvalidInputError(
                    f"{path} line {line_no}: expected {{\"_id\", \"text\"}} ({exc})"
                ) from exc
    return queries


def load_qrels(path: Path) -> Qrels:
    """Query id to {document id: relevance} from a BEIR qrels TSV with a header line."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as stream:
        rows = csv.reader(stream, delimiter="\t")
        header = next(rows, None)
        if header is None:
            raise InvalidInputError(f"{path} is empty")
        for row in rows:
            if not row:
                continue
            if len(row) < 3:
                raise InvalidInputError(f"{path} line {rows.line_num}: expected 3 tab-separated columns")
            try:
                score = int(row[2])
            except ValueError as exc:
                raise InvalidInputError(
                    f"{path} line {rows.line_num}: score {row[2]!r} is not an integer"
                ) from exc
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Normalised DCG with graded gains rel / log2(rank + 1), as in BEIR (trec_eval)."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, doc_id in enumerate(ranked[:k]):
        if relevant.get(doc_id, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, r in relevant.items() if r > 0}
    if not wanted:
        return 0.0
    return len(wanted & set(ranked[:k])) / len(wanted)


def score_run(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean metrics over the queries that have judgements (BEIR's convention)."""
    judged = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not judged:
        raise InvalidInputError("the qrels hold no positive judgement")
    metrics: dict[str, Callable[[Sequence[str], Mapping[str, int]], float]] = {
        "ndcg@10": partial(ndcg_at_k, k=10),
        "mrr@10": partial(mrr_at_k, k=10),
        "recall@10": partial(recall_at_k, k=10),
        "recall@100": partial(recall_at_k, k=100),
        "recall@1000": partial(recall_at_k, k=1000),
    }
    return {
        name: sum(fn(run.get(q, []), qrels[q]) for q in judged) / len(judged)
        for name, fn in metrics.items()
    }
