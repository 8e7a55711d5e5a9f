"""bienc eval's measures: equal to ir_measures' (pytrec_eval, trec_eval's code) on the run
file bienc writes, ties included; the reranking depth; the paired bootstrap; the files."""

import io
import json
import math
import random
from pathlib import Path

import ir_measures
import pytest
from ir_measures import RR, R, nDCG

from bienc.config.errors import InvalidInputError
from bienc.search.measures import (
    beir_split,
    compare,
    load_qrels,
    load_queries,
    load_run,
    mrr_at_k,
    ndcg_at_k,
    per_query,
    score_run,
    select_queries,
    smallest_k,
    summarise,
    trec_order,
    write_run,
)
from bienc.search.plot import HEIGHT_PX, WIDTH_PX, plot_recall

QRELS = {"q1": {"a": 1, "b": 2, "z": 0}, "q2": {"c": 1}, "q3": {"d": 1, "e": 1}}


def _ir_measures(run_text: str, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """The measures ir_measures computes over pytrec_eval (trec_eval's code and tie order).
    trec_eval's recip_rank has no cutoff (and ir_measures' default RR@10 comes from another
    provider, which orders ties differently), so MRR@10 is recip_rank over each query's first
    10 lines of the run file, which bienc writes in trec_eval's order."""
    run = list(ir_measures.read_trec_run(io.StringIO(run_text)))
    judgements = [ir_measures.Qrel(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
    scored = ir_measures.pytrec_eval.calc_aggregate([nDCG @ 10, R @ 10, R @ 100, R @ 1000],
                                                    judgements, run)
    top10 = [line for q in {d.query_id for d in run}
             for line in [x for x in run_text.splitlines() if x.split()[0] == q][:10]]
    top10_run = list(ir_measures.read_trec_run(io.StringIO("\n".join(top10) + "\n")))
    rr = ir_measures.pytrec_eval.calc_aggregate([RR], judgements, top10_run)[RR]
    return {"ndcg@10": scored[nDCG @ 10], "mrr@10": rr, "recall@10": scored[R @ 10],
            "recall@100": scored[R @ 100], "recall@1000": scored[R @ 1000]}


def _written(run: dict[str, list[tuple[str, float]]]) -> str:
    stream = io.StringIO()
    write_run(run, stream)
    return stream.getvalue()


def test_ties_are_ordered_as_trec_eval_orders_them() -> None:
    # equal scores: trec_eval ranks the greater document id first
    assert trec_order([("a", 0.5), ("c", 0.5), ("b", 0.9), ("b2", 0.5)]) == [
        ("b", 0.9), ("c", 0.5), ("b2", 0.5), ("a", 0.5)]


def test_a_hand_made_run_with_ties_scores_as_ir_measures_scores_it(tmp_path: Path) -> None:
    run = {
        "q1": trec_order([("x", 0.9), ("a", 0.8), ("z", 0.8), ("b", 0.8), ("y", 0.1)]),
        "q2": trec_order([("c", 0.7), ("w", 0.7), ("v", 0.7)]),  # c is ranked last of the three
        "q3": trec_order([(f"n{i}", 1 - i / 200) for i in range(150)] + [("e", 0.3)]),
    }
    ours = score_run(run, QRELS)
    theirs = _ir_measures(_written(run), QRELS)
    assert ours == pytest.approx(theirs, abs=1e-12)
    # q1: x, then the 0.8 ties z, b, a: b first relevant at 3; q2: w, v, c: c at 3; q3: e at 151
    assert ours["mrr@10"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    (tmp_path / "run.trec").write_text(_written(run))
    assert load_run(tmp_path / "run.trec") == run  # the file ranks exactly as the run does


def test_random_runs_score_as_ir_measures_scores_them() -> None:
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(300)]
    qrels = {f"q{i}": {d: rng.choice([0, 1, 1, 2]) for d in rng.sample(docs, 5)} for i in range(40)}
    run = {q: trec_order((d, round(rng.random(), 2)) for d in rng.sample(docs, 200)) for q in qrels}
    assert score_run(run, qrels) == pytest.approx(_ir_measures(_written(run), qrels), abs=1e-12)


def test_ndcg_discounts_later_hits() -> None:
    relevant = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], relevant, 10) == pytest.approx(1.0)
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b"], relevant, 10) == pytest.approx(expected)
    assert mrr_at_k(["x", "c", "b"], {"b": 1, "c": 0}, 10) == pytest.approx(1 / 3)


def test_the_suggested_depth_is_where_a_person_reads_it_off_the_curve() -> None:
    # recall climbs to 0.8 at K=100 and stays there: 95% of it (0.76) is first reached at K=50
    curve = [min(0.8, 0.4 + 0.4 * (k - 1) / 99) if k < 50 else (0.76 if k < 100 else 0.8)
             for k in range(1, 1001)]
    assert smallest_k(curve, 0.95) == 50
    assert smallest_k(curve, 0.99) == 100
    assert smallest_k([1.0] * 1000, 0.99) == 1
    summary = summarise(per_query({"q2": [("c", 1.0)]}, QRELS, ["q2"]))
    assert summary["recall_curve"][0] == 1.0 and len(summary["recall_curve"]) == 1000


def test_a_run_compared_with_itself_differs_by_nothing() -> None:
    run = {"q1": [("a", 0.9), ("x", 0.5)], "q2": [("w", 0.8), ("c", 0.4)], "q3": [("d", 0.2)]}
    scores = per_query(run, QRELS, list(QRELS))
    for metric in ("ndcg@10", "recall@100"):
        same = compare(scores, scores, metric)
        assert (same.low, same.high, same.difference) == (0.0, 0.0, 0.0)
        assert (same.better, same.worse, same.same) == (0.0, 0.0, 1.0)
    better = per_query({**run, "q3": [("d", 0.9), ("e", 0.8)]}, QRELS, list(QRELS))
    moved = compare(scores, better, "recall@100")
    assert moved.difference == pytest.approx(0.5 / 3) and moved.better == pytest.approx(1 / 3)
    assert moved.low <= moved.difference <= moved.high


def test_the_plot_is_a_png_of_the_expected_size_holding_the_reports_data(tmp_path: Path) -> None:
    from PIL import Image

    curve = [min(1.0, k / 300) for k in range(1, 1001)]
    latency = {10: 9.5, 100: 17.0, 1000: 85.0}
    suggested = {"95% of recall@1000": smallest_k(curve, 0.95), "99% of recall@1000": smallest_k(curve, 0.99)}
    plot_recall(tmp_path / "curve.png", curve, latency, suggested, "test")
    with Image.open(tmp_path / "curve.png") as image:
        assert image.format == "PNG" and image.size == (WIDTH_PX, HEIGHT_PX)
        data = json.loads(image.info["Description"])
    assert data == {"recall_curve": curve, "latency_ms": {"10": 9.5, "100": 17.0, "1000": 85.0},
                    "suggested_depth": suggested}


def test_beir_files_are_read_and_errors_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "1", "text": "first"}\n{"_id": 2, "text": "second"}\n')
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    assert load_queries(queries) == {"1": "first", "2": "second"}
    with pytest.raises(InvalidInputError, match=r"qrels/test.tsv is missing"):
        beir_split(tmp_path)
    qrels = tmp_path / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t2\n9\td1\t1\n")
    assert beir_split(tmp_path).qrels == qrels
    assert load_qrels(qrels) == {"1": {"d1": 1, "d2": 2}, "9": {"d1": 1}}
    selection = select_queries(load_queries(queries), load_qrels(qrels))
    assert selection.evaluated == ["1"]
    assert selection.skipped == {"in the qrels but not in the queries file": 1,
                                 "in the queries file but not in the qrels": 1}
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\tx\n")
    with pytest.raises(InvalidInputError, match=r"test.tsv line 2"):
        load_qrels(qrels)
    qrels.write_text("")
    with pytest.raises(InvalidInputError, match=r"test.tsv is empty"):
        load_qrels(qrels)
    queries.write_text('{"_id": "1"}\n')
    with pytest.raises(InvalidInputError, match=r"queries.jsonl line 1"):
        load_queries(queries)
    run = tmp_path / "r.trec"
    run.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2\n")
    with pytest.raises(InvalidInputError, match=r"r.trec line 2"):
        load_run(run)
