"""Ingest throughput on SciFact, side by side in one run, with the ratios the throughput issue asks for.

    python bench/throughput.py --documents 1000          # first 1,000 documents, every backend
    python bench/throughput.py --documents 0 --backends torch/float32,openvino/bfloat16,openvino/int8

(1) the seed's way: `SentenceTransformer.encode`, fp32, batch 32, title + text cut at 256 tokens,
    measured in rounds (first, between the configurations, last: the machine's speed drifts);
    the ratios in the final table divide by the mean of the rounds.
(2) bienc's encoder alone (chunking and encoding, as a worker does it) for each backend.
(3) bienc end to end: `bienc ingest --wait` through Redis into a separate `bienc worker`
    process (warmed up first) and the embedded store, with bienc's default backend, measured
    --e2e-rounds times (3 by default), with (2) of the default backend again before the first
    round and after each. (3)/(2) is the median over the rounds of (3) divided by the mean of
    the (2) just before and just after it; the per-round ratios and the ratio of the means
    are printed too.

Two configurations: the seed's work (one 256-token window per document) and bienc's default
(the default BIENC_CHUNK_TOKENS / BIENC_CHUNK_OVERLAP, title in each). For each backend:
docs/s, the ratios (2)/(1), (3)/(1), (3)/(2), and the cosine of its document vectors to
torch float32's. On the full corpus (--documents 0) also nDCG@10 by exact cosine over the
test queries (the quality guard: loss <= 0.005 against float32) and, for (3), nDCG@10 and
search latency of the real collection.

Needs Redis for (3) (BIENC_BENCH_REDIS_URL, default redis://127.0.0.1:6379/12; flushed).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bienc.config.settings import Settings
from bienc.encoding.encoder import TOKENIZE_WINDOW, Encoder, load_encoder, plan_batches
from bienc.encoding.plan import choose_backend, choose_dtype, resolve_model_location
from bienc.ingest.chunking import Chunk
from bienc.ingest.documents import Document
from bienc.ingest.producer import by_length
from bienc.ingest.readers import read_path
from bienc.search.measures import load_qrels, load_queries, score_run, trec_order
from bienc.store.record import Chunking
from bienc.workers.indexing import chunk_documents

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import cpu_class, encoder_flops, gemm_rate  # sibling scripts
from scifact import run_config

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
_DEFAULT_CHUNKING = (Settings.model_fields["chunk_tokens"].default,
                     Settings.model_fields["chunk_overlap"].default)
CONFIGS = {
    "same work (1 window)": ({"BIENC_CHUNKING": "false"}, Chunking(False, 256, 0)),
    "default chunks ({}/{})".format(*_DEFAULT_CHUNKING): ({}, Chunking(True, *_DEFAULT_CHUNKING)),
}
ALL_BACKENDS = ["torch/float32", "torch/bfloat16", "openvino/float32", "openvino/bfloat16",
                "openvino/int8"]


def doc_texts(docs: list[Document]) -> list[str]:
    return [f"{d.title} {d.text}" if d.title else d.text for d in docs]


def time_encoder(encoder: Encoder, docs: list[Document], params: Chunking
                 ) -> tuple[float, list[list[Chunk]], np.ndarray]:
    """(2): docs/s of chunking and encoding `docs` as a worker does, after a warm-up; with the
    chunks and their vectors."""
    encoder.encode_documents(doc_texts(docs[:32]))
    started = time.perf_counter()
    chunked = chunk_documents(docs, encoder, params)
    vectors = encoder.encode_documents([c.text for chunks in chunked for c in chunks])
    return len(docs) / (time.perf_counter() - started), chunked, vectors


def forward_plan(encoder: Encoder, docs: list[Document], params: Chunking
                 ) -> tuple[int, int, int]:
    """Forward batches, useful tokens and padded tokens of chunking and encoding `docs` in
    one call, planned as Encoder.encode_stream plans them (a window of texts at a time)."""
    chunked = chunk_documents(docs, encoder, params)
    lengths = encoder.token_lengths([c.text for chunks in chunked for c in chunks])
    forward = useful = padded = 0
    for start in range(0, len(lengths), TOKENIZE_WINDOW):
        window = lengths[start : start + TOKENIZE_WINDOW]
        for batch in plan_batches(window, encoder.batch_size, encoder.max_batch_tokens):
            forward += 1
            useful += sum(window[i] for i in batch)
            padded += len(batch) * max(window[i] for i in batch)
    return forward, useful, padded


def sweep_task_sizes(encoder: Encoder, docs: list[Document],
                     configs: list[tuple[str, tuple[dict[str, str], Chunking]]],
                     sizes: list[int], rounds: int = 2) -> None:
    """A worker plans the forward batches of one task at a time: padding and docs/s when the
    job's documents, in the order the producer queues them, are encoded task by task; and
    the padding of (2), which encodes the whole job in one call, in file order."""
    queued = by_length(docs)
    encoder.encode_documents(doc_texts(docs[:32]))  # warm-up, as time_encoder does
    for config_name, (_, params) in configs:
        plans = {f"tasks of {size} documents": [forward_plan(encoder, queued[i : i + size], params)
                                                for i in range(0, len(queued), size)]
                 for size in sizes}
        plans["(2): the whole job in one call"] = [forward_plan(encoder, docs, params)]
        for what, parts in plans.items():
            forward, useful, padded = (sum(p[k] for p in parts) for k in range(3))
            print(f"{what}, {config_name}: {forward} forward batches, padding "
                  f"{100 * (padded - useful) / padded:.1f}% of {padded} tokens", flush=True)
        for round_no in range(rounds):  # sizes side by side, round after round
            for size in sizes:
                started = time.perf_counter()
                for start in range(0, len(queued), size):
                    chunked = chunk_documents(queued[start : start + size], encoder, params)
                    encoder.encode_documents([c.text for chunks in chunked for c in chunks])
                rate = len(docs) / (time.perf_counter() - started)
                print(f"tasks of {size} documents, {config_name}, round {round_no + 1}: "
                      f"{rate:.1f} docs/s", flush=True)


def ndcg_exact(docs: list[Document], owners: np.ndarray, vectors: np.ndarray,
               query_vectors: np.ndarray, qids: list[str], qrels: dict[str, dict[str, int]]) -> float:
    """nDCG@10 of exact cosine search, each document scored by its best chunk."""
    scores = query_vectors @ vectors.T
    doc_scores = np.full((len(qids), len(docs)), -np.inf, dtype=np.float32)
    np.maximum.at(doc_scores.T, owners, scores.T)
    top = np.argsort(-doc_scores, axis=1)[:, :10]
    run = {q: trec_order((docs[i].id, float(doc_scores[n, i])) for i in top[n])
           for n, q in enumerate(qids)}
    return score_run(run, qrels)["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1000, help="first N documents; 0 = all")
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS))
    parser.add_argument("--chunked-backends", help="backends for the chunked configuration "
                        "(default: --backends)")
    parser.add_argument("--configs", default=",".join(str(i) for i in range(len(CONFIGS))),
                        help="indices into: " + "; ".join(CONFIGS))
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--seed-rounds", type=int, default=3,
                        help="times (1) is measured: first, between configurations, last")
    parser.add_argument("--e2e-rounds", type=int, default=3,
                        help="times (3) is measured, (2) again before the first and after each")
    parser.add_argument("--sweep-batch-tokens", default="",
                        help="e.g. 2048,4096,8192: also time the default encoder at each cap")
    parser.add_argument("--sweep-task-size", default="",
                        help="e.g. 64,256: also time the default encoder on the documents cut "
                        "into worker tasks of each size (queued order), with their padding")
    args = parser.parse_args()
    if args.e2e_rounds < 1 and not args.skip_end_to_end:
        parser.error("--e2e-rounds must be at least 1 (or pass --skip-end-to-end)")
    backends = [b for b in args.backends.split(",") if b]
    configs = [list(CONFIGS.items())[int(i)] for i in args.configs.split(",")]
    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.documents or None) if isinstance(d, Document)]
    texts = doc_texts(docs)
    full = args.documents == 0
    queries = load_queries(DATA / "queries_test.jsonl")
    qrels = {q: r for q, r in load_qrels(DATA / "qrels_test.tsv").items() if q in queries}
    qids = list(qrels)
    default_backend = choose_backend("auto", "cpu")
    default = f"{default_backend}/{choose_dtype('auto', 'cpu', default_backend)}"
    print(f"{len(docs)} SciFact documents; bienc's default encoder here: {default}", flush=True)
    print(cpu_class(), flush=True)
    ceilings: dict[str, float] = {}
    measure_ceilings(ceilings)

    # (1) the seed's way
    from sentence_transformers import SentenceTransformer

    seed_model = SentenceTransformer(resolve_model_location("all-MiniLM-L6-v2"), device="cpu")
    seed_model.max_seq_length = 256
    seed_model.encode(texts[:32], batch_size=32)  # warm-up

    def seed_round() -> np.ndarray:
        started = time.perf_counter()
        vectors = seed_model.encode(texts, batch_size=32, normalize_embeddings=True)
        seed_rates.append(len(docs) / (time.perf_counter() - started))
        print(f"(1) seed: ST.encode fp32, batch 32, round {len(seed_rates)}: "
              f"{seed_rates[-1]:.1f} docs/s", flush=True)
        return vectors

    seed_rates: list[float] = []
    seed_vectors = seed_round()
    seed_ndcg = None
    if full:
        qv = seed_model.encode([queries[q] for q in qids], batch_size=32, normalize_embeddings=True)
        seed_ndcg = ndcg_exact(docs, np.arange(len(docs)), seed_vectors, qv, qids, qrels)
        print(f"(1) seed nDCG@10 {seed_ndcg:.4f}", flush=True)

    rows: list[dict[str, object]] = []
    work: dict[Chunking, float] = {}  # FLOP per document of each configuration
    for cap in [int(c) for c in args.sweep_batch_tokens.split(",") if c]:
        encoder = load_encoder(Settings(max_batch_tokens=cap))
        for config_name, (_, params) in configs:
            rate, _, _ = time_encoder(encoder, docs, params)
            print(f"batch cap {cap} tokens, {config_name}, {encoder.encoding}: {rate:.1f} docs/s",
                  flush=True)
    task_sizes = [int(c) for c in args.sweep_task_size.split(",") if c]
    if task_sizes:
        sweep_task_sizes(load_encoder(Settings()), docs, configs, task_sizes)
    for number, (config_name, (env, params)) in enumerate(configs):
        if number and len(seed_rates) < args.seed_rounds:
            seed_round()  # rounds of (1) between the others: the machine's speed drifts
        reference: np.ndarray | None = seed_vectors if not params.enabled else None
        default_encoder: Encoder | None = None
        default_row: dict[str, object] = {}  # its (2) row, updated with the later rounds
        chunked_backends = [b for b in (args.chunked_backends or args.backends).split(",") if b]
        for backend in (chunked_backends if params.enabled else backends):
            name, dtype = backend.split("/")
            encoder = load_encoder(Settings(backend=name, dtype=dtype))
            rate, chunked, vectors = time_encoder(encoder, docs, params)
            if params not in work:
                work[params] = flop_per_document(encoder, chunked)
            if reference is None and backend == "torch/float32":
                reference = vectors
            cosines = (vectors * reference).sum(axis=1) if reference is not None \
                and reference.shape == vectors.shape else None
            ndcg = None
            if full:
                owners = np.array([i for i, chunks in enumerate(chunked) for _ in chunks])
                query_vectors = encoder.encode_queries([queries[q] for q in qids])
                ndcg = ndcg_exact(docs, owners, vectors, query_vectors, qids, qrels)
            rows.append({"config": config_name, "what": f"(2) encoder {backend}", "docs/s": rate,
                         "(2)/(1)": rate / seed_rates[0], "cos": cosines, "ndcg": ndcg,
                         "flop": work[params], "dtype": dtype})
            print(_row(rows[-1]), flush=True)
            if backend == default:
                default_encoder = encoder
                default_row = rows[-1]
            del encoder
            gc.collect()
        if args.skip_end_to_end:
            continue
        e2e_rates: list[float] = []
        base_rates = []
        if default_encoder is not None:  # (2) again, just before the first (3)
            base_rates.append(time_encoder(default_encoder, docs, params)[0])
            print(f"(2) encoder {default} again, before (3): {base_rates[-1]:.1f} docs/s",
                  flush=True)
        else:
            print(f"(3)/(2) not measured: the default backend {default} is not among the "
                  "backends of this configuration", flush=True)
        evaluated: dict[str, float] = {}  # nDCG and search latency, from the first round
        for round_no in range(args.e2e_rounds):
            e2e = end_to_end(config_name, env, docs, full and round_no == 0)
            e2e_rates.append(e2e["docs/s"])
            evaluated = evaluated or e2e
            print(f"(3) end to end, round {round_no + 1}: {e2e_rates[-1]:.1f} docs/s", flush=True)
            if default_encoder is not None:
                # (2) again after each (3): the machine's speed drifts by 10% and more within
                # minutes, so each (3) is compared with the (2) just before and just after it
                base_rates.append(time_encoder(default_encoder, docs, params)[0])
                print(f"(2) encoder {default} again, after (3): {base_rates[-1]:.1f} docs/s",
                      flush=True)
        del default_encoder
        gc.collect()
        e2e_rate = float(np.mean(e2e_rates))
        per_round = [rate / ((base_rates[i] + base_rates[i + 1]) / 2)
                     for i, rate in enumerate(e2e_rates)] if base_rates else []
        if per_round:
            base = float(np.mean(base_rates))  # its rounds around (3)
            default_row.update({"docs/s": base, "(2)/(1)": base / seed_rates[0],
                                "what": f"(2) encoder {default} (rounds: {_rounds(base_rates)})"})
            print(f"(3)/(2) per round, against the (2) before and after it: {_rounds(per_round, 3)}"
                  f"; median {np.median(per_round):.3f}; mean of (3) / mean of (2) "
                  f"{e2e_rate / np.mean(base_rates):.3f}", flush=True)
        rows.append({"config": config_name, "what": f"(3) end to end, {default} "
                     f"(rounds: {_rounds(e2e_rates)})",
                     "docs/s": e2e_rate, "(3)/(1)": e2e_rate / seed_rates[0],
                     "(3)/(2)": float(np.median(per_round)) if per_round else None,
                     "ndcg": evaluated.get("ndcg@10") if full else None,
                     "search": (evaluated["search_ms_p50"], evaluated["search_ms_p99"])
                     if full else None})
        print(_row(rows[-1]), flush=True)

    while len(seed_rates) < args.seed_rounds:
        seed_round()
    measure_ceilings(ceilings)  # again at the end: the best of both counts
    for row in rows:
        if isinstance(row.get("flop"), float):
            row["share"] = float(row["docs/s"]) * float(row["flop"]) / ceilings[str(row["dtype"])]  # type: ignore[arg-type]
    seed_rate = float(np.mean(seed_rates))
    for row in rows:  # the ratios to (1) again, against the mean of its rounds
        for key in ("(2)/(1)", "(3)/(1)"):
            if isinstance(row.get(key), float):
                row[key] = float(row["docs/s"]) / seed_rate  # type: ignore[arg-type]
    print(f"\n(1) seed rounds: {', '.join(f'{r:.1f}' for r in seed_rates)} docs/s; the ratios "
          f"below divide by their mean, {seed_rate:.1f}")
    print("GEMM ceilings (the best of the start's and the end's): "
          + ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in ceilings.items()))
    for params, flop in work.items():
        print(f"work of {params}: {flop / 1e9:.2f} GFLOP per document")
    print("\n| configuration | what | docs/s | (2)/(1) | (3)/(1) | (3)/(2) | share of its precision's "
          "GEMM ceiling | cos vs fp32 mean / min | nDCG@10 | search p50/p99 ms (K=1000) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| both | (1) seed ST.encode fp32 | {seed_rate:.1f} | 1.00 | | | "
          f"{seed_rate * next(iter(work.values()), 0.0) / ceilings['float32']:.0%} (first config) "
          f"| 1 / 1 | {_fmt(seed_ndcg)} | |")
    for row in rows:
        print(_row(row, markdown=True))


def measure_ceilings(best: dict[str, float]) -> None:
    """The GEMM ceiling of each precision on these cores (bench/ceiling.py), kept at the best
    of this and earlier measurements, printed."""
    for precision in ("float32", "bfloat16", "int8"):
        rate = gemm_rate(precision)
        best[precision] = max(best.get(precision, 0.0), rate)
        print(f"GEMM ceiling {precision}: {rate / 1e9:.0f} GFLOP/s", flush=True)


def flop_per_document(encoder: Encoder, chunked: list[list[Chunk]]) -> float:
    """The encoder's useful work per document (bench/ceiling.py's count): every chunk's own
    tokens, with attention over its own length, padding not counted."""
    lengths = encoder.token_lengths([c.text for chunks in chunked for c in chunks])
    return sum(encoder_flops(n, width=n) for n in lengths) / len(chunked)


def end_to_end(name: str, env: dict[str, str], docs: list[Document], full: bool) -> dict[str, float]:
    redis_url = os.environ.get("BIENC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out))
    try:
        corpus = work / "corpus.jsonl"
        source = DATA / "corpus.jsonl"
        with source.open() as src, corpus.open("w") as dst:
            for _, line in zip(range(len(docs)), src, strict=False):
                dst.write(line)
        slug = "e2e-" + "".join(c if c.isalnum() else "-" for c in name)[:40]
        return run_config(slug, env, corpus, DATA, work, redis_url,  # type: ignore[return-value]
                          [""] if full else [])[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rounds(rates: list[float], digits: int = 1) -> str:
    return ", ".join(f"{r:.{digits}f}" for r in rates)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ""


def _row(row: dict[str, object], markdown: bool = False) -> str:
    cos = row.get("cos")
    cos_text = f"{cos.mean():.5f} / {cos.min():.5f}" if isinstance(cos, np.ndarray) else ""
    ratios = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else ""
              for k in ("(2)/(1)", "(3)/(1)", "(3)/(2)")]
    search = row.get("search")
    search_text = f"{search[0]:.1f} / {search[1]:.1f}" if isinstance(search, tuple) else ""
    share = f"{row['share']:.0%}" if isinstance(row.get("share"), float) else ""
    cells = [str(row["config"]), str(row["what"]), f"{row['docs/s']:.1f}", *ratios, share, cos_text,
             _fmt(row.get("ndcg")), search_text]
    return ("| " + " | ".join(cells) + " |") if markdown else "  ".join(c for c in cells if c)


if __name__ == "__main__":
    main()
