"""Retrieval quality over a BEIR split, as trec_eval computes it: the run (ranked documents
with scores, ties ordered as trec_eval orders them), nDCG@10, MRR@10, recall@K for every K up
to 1000, the depth a reranker needs, paired comparisons with bootstrap intervals.

Conventions are trec_eval's (and so ir_measures' over pytrec_eval): documents of a query are
ranked by score, descending, ties by document id, descending; a query counts when it has a
relevant judgement (one the run does not answer scores 0); relevance above 0 is relevant;
nDCG's gain is the relevance grade.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bienc.config.errors import InvalidInputError

Qrels = dict[str, dict[str, int]]
Ranking = list[tuple[str, float]]  # (document id, score), in trec_eval's order
Run = dict[str, Ranking]
MAX_DEPTH = 1000
REPORTED = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "recall@1000")
PER_QUERY = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "recall@1000")


# Files


def load_queries(path: Path) -> dict[str, str]:
    """Query id to text from BEIR `queries.jsonl` (`{"_id", "text"}` per line)."""
    queries: dict[str, str] = {}
    for line_no, line in _lines(path):
        try:
            record = json.loads(line)
            queries[str(record["_id"])] = str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path} line {line_no}: expected {{\"_id\", \"text\"}} ({exc})") from exc
    if not queries:
        raise InvalidInputError(f"{path} holds no query")
    return queries


def load_qrels(path: Path) -> Qrels:
    """Query id to {document id: relevance} from a BEIR qrels TSV with a header line."""
    qrels: Qrels = {}
    with _open(path) as stream:
        rows = csv.reader(stream, delimiter="\t")
        header = next(rows, None)
        if header is None:
            raise InvalidInputError(f"{path} is empty: expected a header line, then "
                                    "query-id, corpus-id and score separated by tabs")
        for row in rows:
            if not row:
                continue
            if len(row) < 3:
                raise InvalidInputError(f"{path} line {rows.line_num}: expected 3 tab-separated columns")
            try:
                score = int(row[2])
            except ValueError as exc:
                raise InvalidInputError(
                    f"{path} line {rows.line_num}: score {row[2]!r} is not an integer") from exc
            qrels.setdefault(row[0], {})[row[1]] = score
    if not qrels:
        raise InvalidInputError(f"{path} holds no judgement")
    return qrels


def load_run(path: Path) -> Run:
    """A TREC run file (`qid Q0 docid rank score tag`), re-ordered as trec_eval orders it."""
    run: dict[str, list[tuple[str, float]]] = {}
    for line_no, line in _lines(path):
        fields = line.split()
        try:
            query_id, _, doc_id, _, score = fields[:5]
            run.setdefault(query_id, []).append((doc_id, float(score)))
        except ValueError as exc:
            raise InvalidInputError(
                f"{path} line {line_no}: expected `qid Q0 docid rank score tag`") from exc
    if not run:
        raise InvalidInputError(f"{path} holds no ranking")
    return {query_id: trec_order(hits) for query_id, hits in run.items()}


def write_run(run: Run, stream: TextIO, tag: str = "bienc") -> None:
    """The run as a TREC run file. Scores are written in full (repr), so that the file ranks
    exactly as the run does."""
    for query_id, ranking in run.items():
        for rank, (doc_id, score) in enumerate(ranking, start=1):
            stream.write(f"{query_id} Q0 {doc_id} {rank} {score!r} {tag}\n")


def _open(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8", newline="")
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{path} does not exist") from exc


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    with _open(path) as stream:
        for line_no, line in enumerate(stream, start=1):
            if line.strip():
                yield line_no, line


@dataclass(frozen=True)
class BeirSplit:
    corpus: Path
    queries: Path
    qrels: Path


def beir_split(folder: Path, split: str = "test") -> BeirSplit:
    """The files of a BEIR folder as distributed: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv."""
    files = BeirSplit(folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv")
    for path in (files.corpus, files.queries, files.qrels):
        if not path.is_file():
            raise InvalidInputError(
                f"{path} is missing: a BEIR folder holds corpus.jsonl, queries.jsonl and "
                f"qrels/{split}.tsv (--split names another qrels file)")
    return files


@dataclass(frozen=True)
class Selection:
    """The queries evaluated, and those skipped with the reason."""

    evaluated: list[str]
    skipped: dict[str, int]  # reason -> how many


def select_queries(queries: Mapping[str, str], qrels: Qrels) -> Selection:
    """Queries that have text and at least one relevant judgement, in the qrels' order."""
    evaluated = []
    skipped = {"in the qrels but not in the queries file": 0,
               "no relevant document in the qrels": 0,
               "in the queries file but not in the qrels": len(set(queries) - set(qrels))}
    for query_id, judged in qrels.items():
        if query_id not in queries:
            skipped["in the qrels but not in the queries file"] += 1
        elif not any(relevance > 0 for relevance in judged.values()):
            skipped["no relevant document in the qrels"] += 1
        else:
            evaluated.append(query_id)
    return Selection(evaluated, {reason: n for reason, n in skipped.items() if n})


# Measures


def trec_order(hits: Iterable[tuple[str, float]]) -> Ranking:
    """Score descending, ties by document id descending (trec_eval's order)."""
    by_id = sorted(hits, key=lambda hit: hit[0], reverse=True)
    return sorted(by_id, key=lambda hit: hit[1], reverse=True)


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Normalised DCG with graded gains rel / log2(rank + 1), as trec_eval's ndcg_cut."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k])
              if relevant.get(d, 0) > 0)
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def first_relevant(ranked: Sequence[str], relevant: Mapping[str, int]) -> int | None:
    """Rank (from 1) of the first relevant document, None when none was retrieved."""
    for i, doc_id in enumerate(ranked):
        if relevant.get(doc_id, 0) > 0:
            return i + 1
    return None


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    rank = first_relevant(ranked[:k], relevant)
    return 1.0 / rank if rank is not None else 0.0


def recall_curve(ranked: Sequence[str], relevant: Mapping[str, int],
                 depth: int = MAX_DEPTH) -> list[float]:
    """recall@K for K = 1..depth: the share of the relevant documents in the top K."""
    wanted = {d for d, r in relevant.items() if r > 0}
    curve, found = [], 0
    for k in range(depth):
        if k < len(ranked) and ranked[k] in wanted:
            found += 1
        curve.append(found / len(wanted) if wanted else 0.0)
    return curve


def per_query(run: Run, qrels: Qrels, query_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each query's measures, its recall curve and the rank of its first relevant document."""
    scores = {}
    for query_id in query_ids:
        ranked = [doc_id for doc_id, _ in run.get(query_id, [])]
        relevant = qrels[query_id]
        curve = recall_curve(ranked, relevant)
        scores[query_id] = {
            "ndcg@10": ndcg_at_k(ranked, relevant, 10), "mrr@10": mrr_at_k(ranked, relevant, 10),
            "recall@10": curve[9], "recall@100": curve[99], "recall@1000": curve[999],
            "first_relevant_rank": first_relevant(ranked, relevant), "curve": curve,
        }
    return scores


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(scores: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean measures and the mean recall curve over the queries scored."""
    rows = list(scores.values())
    curve = [mean([row["curve"][k] for row in rows]) for k in range(MAX_DEPTH)] if rows else []
    return {**{name: mean([row[name] for row in rows]) for name in REPORTED}, "recall_curve": curve}


def smallest_k(curve: Sequence[float], fraction: float) -> int:
    """The smallest K whose recall reaches `fraction` of the curve's last value (recall@1000):
    the depth a reranker needs to see that share of what the first stage can find."""
    target = fraction * curve[-1]
    for k, recall in enumerate(curve, start=1):
        if recall >= target - 1e-12:
            return k
    return len(curve)


@dataclass(frozen=True)
class Comparison:
    metric: str
    a: float
    b: float
    difference: float  # b - a
    low: float  # 95% paired bootstrap interval of the difference
    high: float
    better: float  # share of queries where b beats a
    worse: float
    same: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]], metric: str,
            resamples: int = 2000, seed: int = 0) -> Comparison:
    """Paired comparison of two runs' per-query `metric` over the queries both scored: the
    mean difference (b - a), its 95% interval from a paired bootstrap over queries, and the
    share of queries better, worse and the same."""
    shared = [q for q in a if q in b]
    if not shared:
        raise InvalidInputError("the two runs have no query in common")
    diffs = [float(b[q][metric]) - float(a[q][metric]) for q in shared]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low, high = means[int(0.025 * (resamples - 1))], means[math.ceil(0.975 * (resamples - 1))]
    return Comparison(
        metric=metric, a=mean([float(a[q][metric]) for q in shared]),
        b=mean([float(b[q][metric]) for q in shared]), difference=mean(diffs), low=low, high=high,
        better=sum(d > 0 for d in diffs) / n, worse=sum(d < 0 for d in diffs) / n,
        same=sum(d == 0 for d in diffs) / n)


def score_run(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean measures over the queries with a relevant judgement; a query the run does not
    answer scores 0 (as ir_measures counts it)."""
    judged = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not judged:
        raise InvalidInputError("the qrels hold no positive judgement")
    summary = summarise(per_query(run, qrels, judged))
    return {name: float(summary[name]) for name in REPORTED}
