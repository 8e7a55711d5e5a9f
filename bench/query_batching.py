"""Queries encoded by concurrent callers: what sharing forward passes gives, side by side.

    python bench/query_batching.py                 # 300 SciFact test queries, 3 rounds

Each round times, in turn: the queries one call each from one thread (as one client's
searches are), from 4 threads at once (as 4 clients' are: queries that wait for the encoder
share its next forward pass, bienc.encoding.encoder.Encoder._encode_queries), and from one
thread in calls of 4 (passes of 4 where their lengths allow, the most sharing can give).
Prints ms per query and forward passes per query; then the medians over rounds. The query
cache is off, and the encoder warmed up as `bienc serve` does.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from bienc.config.settings import Settings
from bienc.encoding.encoder import Encoder, load_encoder
from bienc.search.measures import load_queries

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"


def threads(encoder: Encoder, queries: list[str], callers: int) -> tuple[float, float]:
    """ms per query and forward passes per query, `callers` threads each encoding its share
    of `queries` one call per query."""
    passes = encoder.query_passes
    shares = [queries[i::callers] for i in range(callers)]
    workers = [threading.Thread(target=lambda share=share: [encoder.encode_queries([q]) for q in share])
               for share in shares]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    spent = time.perf_counter() - started
    return spent / len(queries) * 1e3, (encoder.query_passes - passes) / len(queries)


def batches(encoder: Encoder, queries: list[str], size: int) -> tuple[float, float]:
    """ms per query and forward passes per query, one thread encoding `size` queries a call."""
    passes = encoder.query_passes
    started = time.perf_counter()
    for start in range(0, len(queries), size):
        encoder.encode_queries(queries[start:start + size])
    spent = time.perf_counter() - started
    return spent / len(queries) * 1e3, (encoder.query_passes - passes) / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    encoder = load_encoder(Settings(query_cache=0))
    encoder.warm_up()
    queries = list(load_queries(DATA / "queries_test.jsonl").values())
    print(f"encoder {encoder.encoding}, {len(queries)} queries", flush=True)
    figures: dict[str, list[float]] = {}
    for round_no in range(1, args.rounds + 1):
        for name, run in (("1 thread", lambda: threads(encoder, queries, 1)),
                          ("4 threads", lambda: threads(encoder, queries, 4)),
                          ("1 thread, calls of 4", lambda: batches(encoder, queries, 4))):
            ms, passes = run()
            figures.setdefault(name, []).append(ms)
            print(f"round {round_no} {name}: {ms:.2f} ms a query, {passes:.2f} passes a query",
                  flush=True)
    alone = statistics.median(figures["1 thread"])
    print("| callers | ms a query (median) | vs 1 thread |\n|---|---|---|")
    for name, values in figures.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms:.2f} | x{alone / ms:.2f} |")


if __name__ == "__main__":
    main()
