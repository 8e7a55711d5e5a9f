import math
from pathlib import Path

import pytest

from bienc.config.errors import InvalidInputError
from bienc.search.evaluation import load_qrels, load_queries, mrr_at_k, ndcg_at_k, recall_at_k, score_run


def test_ndcg_is_one_for_the_ideal_ranking_and_discounts_later_hits() -> None:
    relevant = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], relevant, 10) == pytest.approx(1.0)
    # hits at ranks 2 and 3: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3))
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b"], relevant, 10) == pytest.approx(expected)
    assert ndcg_at_k(["x"] * 10 + ["a"], relevant, 10) == 0.0


def test_mrr_and_recall() -> None:
    relevant = {"a": 1, "b": 1, "c": 0}
    assert mrr_at_k(["x", "c", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"], relevant, 10) == 0.0
    assert recall_at_k(["a", "x"], relevant, 10) == 0.5
    assert recall_at_k(["x", "a", "b"], relevant, 2) == 0.5


def test_score_run_averages_over_judged_queries_only() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    scores = score_run({"q1": ["a"], "q2": ["x"]}, qrels)
    assert scores["recall@10"] == 0.5
    assert scores["ndcg@10"] == 0.5


def test_beir_files_are_read_and_errors_name_the_line(tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "1", "text": "first"}\n{"_id": 2, "text": "second"}\n')
    assert load_queries(queries) == {"1": "first", "2": "second"}
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n")
    assert load_qrels(qrels) == {"1": {"d1": 1, "d2": 2}}
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\tx\n")
    with pytest.raises(InvalidInputError, match="line 2"):
        load_qrels(qrels)
    queries.write_text('{"_id": "1"}\n')
    with pytest.raises(InvalidInputError, match="line 1"):
        load_queries(queries)
