"""`bienc eval`: score a collection (or a run file) on a BEIR split and report what a team
deciding a reranking depth needs: the trec_eval measures, the recall-at-K curve, the smallest K
that keeps 95% and 99% of recall@1000 with its latency, per-query scores, paired comparisons.
The measures are bienc.search.measures'; this module runs the searches and writes files."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bienc.config.errors import InvalidInputError
from bienc.config.settings import MAX_TOP_K, Settings
from bienc.config.topology import Role
from bienc.ingest.readers import read_path
from bienc.progress import progress_printer
from bienc.resources import settle_heap
from bienc.search.measures import (
    MAX_DEPTH,
    REPORTED,
    Qrels,
    Run,
    beir_split,
    compare,
    load_qrels,
    load_queries,
    load_run,
    per_query,
    select_queries,
    smallest_k,
    summarise,
    trec_order,
    write_run,
)

if TYPE_CHECKING:
    import argparse

    from bienc.runtime import Runtime

LATENCY_K = (10, 100, 1000)
COMPARED = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "recall@1000")
Search = Callable[[str, int], list[tuple[str, float]]]


@dataclass
class Inputs:
    queries: dict[str, str]
    qrels: Qrels
    corpus: Path | None
    label: str


def read_inputs(args: argparse.Namespace) -> Inputs:
    if args.dir:
        split = beir_split(Path(args.dir), args.split)
        return Inputs(load_queries(split.queries), load_qrels(split.qrels), split.corpus,
                      f"{Path(args.dir).name} ({args.split})")
    if not (args.queries and args.qrels):
        raise InvalidInputError("give a BEIR folder (bienc eval DIR), or both --queries and --qrels")
    return Inputs(load_queries(Path(args.queries)), load_qrels(Path(args.qrels)), None,
                  Path(args.queries).stem)


class _Searcher:
    """Searches one collection in the mode and fusion asked for; `mode` is the mode the last
    search ran in (a request without one gets the collection's default)."""

    def __init__(self, runtime: Runtime, collection: str, mode: str | None, fusion: str):
        self.runtime, self.collection = runtime, collection
        self.requested, self.fusion = mode, fusion
        self.mode: str | None = None

    def __call__(self, query: str, k: int) -> list[tuple[str, float]]:
        from bienc.search.searcher import SearchRequest

        results = self.runtime.search(self.collection, SearchRequest(
            [query], top_k=k, with_text=False, mode=self.requested,  # type: ignore[arg-type]
            fusion=self.fusion))  # type: ignore[arg-type]
        self.mode = results.mode
        return [(hit.doc_id, hit.score) for hit in results.hits[0]]


def _ingest_corpus(runtime: Runtime, corpus: Path, collection: str) -> None:
    print(f"ingesting {corpus} into collection {collection!r} (unchanged documents are skipped)",
          file=sys.stderr)
    submission = runtime.ingest(read_path(corpus, runtime.settings.max_text_chars), collection)
    bar, update = progress_printer(submission.accepted + len(submission.rejected))
    try:
        status = runtime.wait(submission.job_id, on_progress=update)
    finally:
        bar.close()
    if status.failed:
        raise InvalidInputError(f"{status.failed} documents of {corpus} failed to index "
                                f"(bienc jobs show {status.job_id}); not evaluating a partial index")


def run_queries(search: Search, queries: dict[str, str], query_ids: list[str], k: int
                ) -> tuple[Run, list[float]]:
    """Each query's ranking (trec_eval's order) and each search's milliseconds."""
    run: Run = {}
    latencies = []
    for query_id in query_ids:
        started = time.perf_counter()
        hits = search(queries[query_id], k)
        latencies.append((time.perf_counter() - started) * 1000)
        if hits:
            run[query_id] = trec_order(hits)
    return run, latencies


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 of search milliseconds."""
    ordered = sorted(latencies) or [0.0]
    return {"p50": round(statistics.median(ordered), 3),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)}


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from bienc.runtime import build_runtime

    inputs = read_inputs(args)
    selection = select_queries(inputs.queries, inputs.qrels)
    if not selection.evaluated:
        raise InvalidInputError("no query has both text and a relevant judgement: "
                                + "; ".join(f"{n} {why}" for why, n in selection.skipped.items()))
    report: dict[str, Any] = {"data": inputs.label}
    latency: dict[int, dict[str, float]] = {}  # K -> p50 and p99 search ms
    runtime: Runtime | None = None
    if args.from_run:
        run = load_run(Path(args.from_run))
        report["run"] = args.from_run
    else:
        collection = args.collection or (f"beir-{Path(args.dir).name}" if args.dir else settings.collection)
        runtime = build_runtime(settings, Role.SUBMIT if inputs.corpus and not args.collection else Role.READ)
        if inputs.corpus is not None and not args.collection:
            with runtime.serving():
                _ingest_corpus(runtime, inputs.corpus, collection)
        search = _Searcher(runtime, collection, args.mode, args.fusion)
        # timed as a running server answers: model warmed, collection open, heap settled
        runtime.resources.encoder.warm_up()
        search(inputs.queries[selection.evaluated[0]], args.k)
        settle_heap()
        run, latencies = run_queries(search, inputs.queries, selection.evaluated, args.k)
        latency[args.k] = percentiles(latencies)
        report["collection"] = collection
        report["mode"] = search.mode
        if search.mode == "hybrid":
            report["fusion"] = args.fusion
    scores = per_query(run, inputs.qrels, selection.evaluated)  # nothing retrieved scores 0
    summary = summarise(scores)
    depth = {"95% of recall@1000": smallest_k(summary["recall_curve"], 0.95),
             "99% of recall@1000": smallest_k(summary["recall_curve"], 0.99)}
    if runtime is not None:
        search = _Searcher(runtime, report["collection"], args.mode, args.fusion)
        for k in sorted({*LATENCY_K, *depth.values()} - set(latency)):
            if k <= args.k:
                latency[k] = percentiles(run_queries(search, inputs.queries, selection.evaluated, k)[1])
    report.update({
        "queries": len(selection.evaluated), "skipped": selection.skipped, "top_k": args.k,
        **{name: summary[name] for name in REPORTED},
        "suggested_depth": depth,
        **({"search_ms_p50": latency[args.k]["p50"], "search_ms_p99": latency[args.k]["p99"]}
           if latency else {}),
        "latency_ms": {str(k): value for k, value in sorted(latency.items())},
        "recall_curve": summary["recall_curve"],
    })
    if args.compare:
        report["comparison"] = _compare(args, settings, runtime, inputs, selection.evaluated, scores)
    if args.run:
        with Path(args.run).open("w", encoding="utf-8") as stream:
            write_run(run, stream)
    if args.per_query:
        with Path(args.per_query).open("w", encoding="utf-8") as stream:
            for query_id, row in scores.items():
                stream.write(json.dumps({"query_id": query_id, "ndcg@10": row["ndcg@10"],
                                         "recall@100": row["recall@100"],
                                         "first_relevant_rank": row["first_relevant_rank"]}) + "\n")
    if args.plot:
        from bienc.search.plot import plot_recall

        plot_recall(Path(args.plot), summary["recall_curve"],
                    {k: value["p50"] for k, value in latency.items()}, depth,
                    f"bienc eval: {report.get('collection', report.get('run'))} on {inputs.label}")
    _print(report, args.json)
    return 0


def _compare(args: argparse.Namespace, settings: Settings, runtime: Runtime | None, inputs: Inputs,
             query_ids: list[str], scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    other_path = Path(args.compare)
    if other_path.is_file():
        other = load_run(other_path)
    else:  # a collection
        if runtime is None:
            from bienc.runtime import build_runtime

            runtime = build_runtime(settings, Role.READ)
        other, _ = run_queries(_Searcher(runtime, args.compare, args.mode, args.fusion),
                               inputs.queries, query_ids, args.k)
    other_scores = per_query(other, inputs.qrels, query_ids)
    return {"against": args.compare,
            "metrics": [compare(scores, other_scores, metric).to_dict() for metric in COMPARED]}


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    searched = f" ({report['mode']}{', ' + report['fusion'] if 'fusion' in report else ''})" \
        if "mode" in report else ""
    print(f"{report.get('collection') or report.get('run')}{searched} on {report['data']}: "
          f"{report['queries']} queries evaluated"
          + "".join(f"; {n} skipped: {why}" for why, n in report["skipped"].items()))
    for name in REPORTED:
        print(f"  {name:>12}: {report[name]:.4f}")
    curve = report["recall_curve"]
    shown = [k for k in (1, 5, 10, 20, 50, 100, 200, 500, 1000) if k <= MAX_DEPTH]
    print("  recall@K:    " + ", ".join(f"@{k} {curve[k - 1]:.4f}" for k in shown))
    latency = report["latency_ms"]
    for label, k in report["suggested_depth"].items():
        cost = f", search p50 {latency[str(k)]['p50']:.1f} ms" if str(k) in latency else ""
        print(f"  reranker depth for {label}: K={k}{cost}")
    for k, value in latency.items():
        print(f"  search ms at K={k}: p50 {value['p50']:.1f}, p99 {value['p99']:.1f}")
    if "comparison" in report:
        print(f"  compared with {report['comparison']['against']} (b - a, paired bootstrap 95%):")
        for row in report["comparison"]["metrics"]:
            print(f"  {row['metric']:>12}: {row['a']:.4f} -> {row['b']:.4f}  {row['difference']:+.4f} "
                  f"[{row['low']:+.4f}, {row['high']:+.4f}]  better {row['better']:.0%}, "
                  f"worse {row['worse']:.0%}, same {row['same']:.0%}")


def add_arguments(evaluate: argparse.ArgumentParser, top_k: Callable[[str], int]) -> None:
    evaluate.add_argument("dir", nargs="?",
                          help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    evaluate.add_argument("--split", default="test", help="qrels file of the BEIR folder (default test)")
    evaluate.add_argument("--collection", "-c",
                          help="evaluate this collection (with DIR and without it: ingest the corpus "
                               "into beir-DIRNAME first)")
    evaluate.add_argument("--queries", help="queries.jsonl, instead of a BEIR folder")
    evaluate.add_argument("--qrels", help="qrels TSV with a header, instead of a BEIR folder")
    evaluate.add_argument("--from-run", metavar="FILE", help="score this TREC run file instead of searching")
    evaluate.add_argument("-k", type=top_k, default=MAX_TOP_K, help="depth retrieved per query")
    evaluate.add_argument("--run", metavar="FILE",
                          help="write the TREC run file (qid Q0 docid rank score tag)")
    evaluate.add_argument("--compare", metavar="COLLECTION_OR_RUN",
                          help="compare with another collection or run file on the same queries")
    evaluate.add_argument("--per-query", metavar="FILE.jsonl",
                          help="each query's nDCG@10, recall@100 and first relevant rank")
    evaluate.add_argument("--plot", metavar="FILE.png", help="draw the recall@K curve and the latency")
    evaluate.add_argument("--json", action="store_true", help="the whole report as JSON")
