"""`bienc eval` on a BEIR folder, end to end: it ingests the corpus, and every figure it prints
equals what ir_measures computes from the run file it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.conftest import bienc_env, run_bienc
from tests.unit.test_measures import _ir_measures

ROOT = Path(__file__).resolve().parents[2]
QUERIES = {"q1": "Where is the Eiffel Tower?", "q2": "What do plants make from sunlight?",
           "q3": "capital of Germany", "q4": "a programming language", "q5": "unjudged query"}
QRELS = [("q1", "eiffel-tower", 2), ("q1", "paris-capital", 1), ("q2", "photosynthesis", 1),
         ("q3", "berlin-capital", 1), ("q4", "python-language", 1), ("q9", "paris-capital", 1)]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "sample"
    (folder / "qrels").mkdir(parents=True)
    records = [json.loads(line) for line in (ROOT / "bienc/sample_corpus.jsonl").read_text().splitlines()]
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": r["id"], "title": r.get("title", ""), "text": r["text"]}) + "\n" for r in records))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in QRELS))
    ids = {r["id"] for r in records}
    assert all(d in ids for _, d, _ in QRELS), "the qrels name sample documents"
    return folder


def test_eval_of_a_beir_folder_reports_what_ir_measures_computes(beir: Path, tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("run.trec", "per-query.jsonl", "curve.png")}
    result = run_bienc("eval", str(beir), "--run", str(files["run.trec"]), "--per-query",
                       str(files["per-query.jsonl"]), "--plot", str(files["curve.png"]), "--json",
                       cwd=tmp_path, env=bienc_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "ingesting" in result.stderr and report["collection"] == "beir-sample"
    assert report["queries"] == 4
    assert report["skipped"] == {"in the qrels but not in the queries file": 1,
                                 "in the queries file but not in the qrels": 1}
    qrels: dict[str, dict[str, int]] = {}  # of the queries evaluated: q9 has no text
    for q, d, r in QRELS:
        if q in QUERIES:
            qrels.setdefault(q, {})[d] = r
    expected = _ir_measures(files["run.trec"].read_text(), qrels)
    assert {name: report[name] for name in expected} == pytest.approx(expected, abs=1e-12)
    assert report["ndcg@10"] > 0.8  # the sample's answers are easy
    curve = report["recall_curve"]
    assert len(curve) == 1000 and curve[-1] == pytest.approx(report["recall@1000"])
    depth = report["suggested_depth"]
    for label, fraction in (("95% of recall@1000", 0.95), ("99% of recall@1000", 0.99)):
        k = depth[label]
        assert curve[k - 1] >= fraction * curve[-1] and (k == 1 or curve[k - 2] < fraction * curve[-1])
        assert str(k) in report["latency_ms"]  # its latency was measured
    assert {"10", "100", "1000"} <= set(report["latency_ms"])
    assert report["search_ms_p50"] == report["latency_ms"]["1000"]["p50"]  # at the run's K
    assert all(0 < v["p50"] <= v["p99"] for v in report["latency_ms"].values())
    rows = [json.loads(line) for line in files["per-query.jsonl"].read_text().splitlines()]
    assert [row["query_id"] for row in rows] == ["q1", "q2", "q3", "q4"]
    assert rows[0]["first_relevant_rank"] == 1 and set(rows[0]) == {
        "query_id", "ndcg@10", "recall@100", "first_relevant_rank"}
    with Image.open(files["curve.png"]) as image:
        assert image.format == "PNG"
        assert json.loads(image.info["Description"])["recall_curve"] == curve

    again = run_bienc("eval", str(beir), "-c", "beir-sample", "--compare", str(files["run.trec"]),
                      "--json", cwd=tmp_path, env=bienc_env(), timeout=600)
    assert again.returncode == 0, again.stderr
    comparison = json.loads(again.stdout)["comparison"]
    assert "ingesting" not in again.stderr  # an existing collection is evaluated as it is
    for row in comparison["metrics"]:  # the same collection against its own run
        assert (row["difference"], row["low"], row["high"], row["same"]) == (0.0, 0.0, 0.0, 1.0)

    text = run_bienc("eval", str(beir), "-c", "beir-sample", cwd=tmp_path, env=bienc_env(), timeout=600)
    assert text.returncode == 0, text.stderr
    assert "reranker depth for 95% of recall@1000: K=" in text.stdout and "ms" in text.stdout
    assert "1 skipped: in the qrels but not in the queries file" in text.stdout


def test_a_beir_folder_without_its_qrels_is_named(beir: Path, tmp_path: Path) -> None:
    (beir / "qrels" / "test.tsv").unlink()
    result = run_bienc("eval", str(beir), cwd=tmp_path, env=bienc_env(), timeout=120)
    assert result.returncode == 1
    assert "qrels/test.tsv is missing" in result.stderr and "Traceback" not in result.stderr
