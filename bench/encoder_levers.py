"""The encoder's levers, side by side in one run: how OpenVINO runs the document batches (one
request on every core, or one request per stream under the THROUGHPUT hint, bienc's way) and
the batch size, on the first N SciFact documents in one 256-token window (the seed's work).

    python bench/encoder_levers.py                       # bienc's default precision here
    python bench/encoder_levers.py --dtype bfloat16 --documents 500 --rounds 3

Rounds alternate the variants (the machine's speed drifts); each line prints docs/s, the
achieved GFLOP/s and its share of the GEMM ceiling of the precision (bench/ceiling.py), and
the last table the median of the rounds and the ratio to bienc's default.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bienc.config.settings import Settings
from bienc.encoding.encoder import Encoder, load_encoder, weights_digest
from bienc.encoding.openvino import INT8_AVOID_WIDTHS, OpenVINORunner, load_compiled
from bienc.encoding.plan import choose_dtype
from bienc.ingest.documents import Document
from bienc.ingest.readers import read_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import cpu_class, encoder_flops, gemm_rate  # a sibling script

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--dtype", default=choose_dtype("auto", "cpu", "openvino"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    corpus = read_path(DATA / "corpus.jsonl", max_text_chars=10**7)
    docs = [d for d in itertools.islice(corpus, args.documents) if isinstance(d, Document)]
    texts = [f"{d.title} {d.text}" if d.title else d.text for d in docs]
    print(cpu_class(), flush=True)
    ceiling = gemm_rate(args.dtype)
    print(f"GEMM ceiling {args.dtype}: {ceiling / 1e9:.0f} GFLOP/s", flush=True)

    settings = Settings(backend="openvino", dtype=args.dtype)
    encoder = load_encoder(settings)
    flop = sum(encoder_flops(n, width=n) for n in encoder.token_lengths(texts))
    compile_model = load_compiled(encoder._model, weights_digest(encoder._model), args.dtype,
                                  settings.model_cache_dir, settings.encode_threads)
    avoid = INT8_AVOID_WIDTHS if args.dtype == "int8" else frozenset()
    streams = encoder._runner
    one_request = OpenVINORunner(compile_model, hint="LATENCY", avoid_widths=avoid)

    def variant(runner: object, batch: int) -> Callable[[], float]:
        def run() -> float:
            encoder._runner = runner  # type: ignore[assignment]
            encoder.batch_size, encoder.max_batch_tokens = batch, batch * 256
            return timed(encoder, texts)
        return run

    variants = {
        f"streams ({getattr(streams, 'depth', 1)} requests), batch 32 (bienc's default)":
            variant(streams, 32),
        "one request on every core, batch 32": variant(one_request, 32),
        "streams, batch 16": variant(streams, 16),
        "streams, batch 64": variant(streams, 64),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_no in range(args.rounds):
        for name, run in variants.items():
            rates[name].append(len(texts) / run())
            achieved = rates[name][-1] * flop / len(texts)
            print(f"round {round_no + 1}  {name}: {rates[name][-1]:.1f} docs/s, "
                  f"{achieved / 1e9:.0f} GFLOP/s ({achieved / ceiling:.0%} of the ceiling)",
                  flush=True)
    default = statistics.median(next(iter(rates.values())))
    print(f"\n{len(texts)} documents, {flop / len(texts) / 1e9:.2f} GFLOP each, {args.dtype}")
    print("| variant | docs/s (median) | share of the ceiling | x bienc's default |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median * flop / len(texts) / ceiling:.0%} | "
              f"{median / default:.2f} |")


def timed(encoder: Encoder, texts: list[str]) -> float:
    encoder.encode_documents(texts[:64])  # warm-up
    started = time.perf_counter()
    encoder.encode_documents(texts)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
