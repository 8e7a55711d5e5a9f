"""The CPU's class and its matrix-multiply ceiling in fp32, bf16 and int8, on the cores bienc
encodes with, measured with the engine the encoder runs on (OpenVINO's CPU plugin).

    python bench/ceiling.py                 # prints the CPU class and the three ceilings

The ceiling of a precision is the best rate of one plain MatMul over the shapes the encoder
multiplies most (all-MiniLM-L6-v2: hidden 384, feed-forward 1536, 8,192 token rows: 32 texts
of 256 tokens), with the precision hint set for bf16 and both operands behind 256-level
FakeQuantize nodes for int8 (the pattern NNCF writes, which the CPU plugin runs as an int8
GEMM). `encoder_flops` counts the multiply-adds of one encoder pass, so that a docs/s figure
can be read as a share of the ceiling: achieved FLOP/s = docs/s x FLOP per document.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROWS = 8192  # token rows of a 32 x 256 batch
SHAPES = ((ROWS, 384, 1536), (ROWS, 1536, 384), (ROWS, 384, 384))
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                     "amx_int8")


def cpu_class(cpuinfo: str | None = None) -> str:
    """'int8 (avx512_vnni, ...)', 'bf16 only (...)' or 'AVX2 only': the class the issue's
    targets name, with the flags that put the CPU in it, and the model name."""
    text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    model = "unknown CPU"
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
        elif line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
    family = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("cpu family")), "?")
    shown = ", ".join(f for f in FLAGS_OF_INTEREST if f in flags)
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        kind = "int8 CPU (VNNI or AMX)"
    elif flags & {"avx512_bf16", "amx_bf16"}:
        kind = "bf16 CPU without int8 dot products"
    else:
        kind = "AVX2-only CPU"
    return f"{kind}: {model}, family {family}, {os.cpu_count()} CPUs; flags {shown}"


def _matmul_model(m: int, k: int, n: int, int8: bool) -> object:
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    data = ops.parameter([m, k], np.float32, name="x")
    left = data.output(0)
    if int8:  # the pattern NNCF writes: activations through FakeQuantize, weights stored int8
        # and dequantised by a scale; the CPU plugin runs it as a u8 x i8 GEMM, the
        # activations' quantisation included (as in the encoder)
        low, high = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
        left = ops.fake_quantize(left, low, high, low, high, 256).output(0)
        codes = ops.constant(rng.integers(-127, 128, (n, k), dtype=np.int8))
        right = ops.multiply(ops.convert(codes, np.float32), ops.constant(np.float32(0.002)))
    else:
        right = ops.constant(rng.standard_normal((n, k)).astype(np.float32) * 0.05)
    return ov.Model([ops.matmul(left, right, False, True)], [data], "gemm")


def gemm_rate(precision: str, threads: int = 0, seconds: float = 1.0,
              shapes: Sequence[tuple[int, int, int]] = SHAPES) -> float:
    """The best FLOP/s (2 per multiply-add) of one MatMul over `shapes` at `precision`
    ('float32', 'bfloat16' or 'int8'), on `threads` threads (0: all), run both ways the
    encoder can run: one request on all threads (LATENCY) and one request per stream
    (THROUGHPUT)."""
    import openvino as ov

    core = ov.Core()
    best = 0.0
    for hint in ("LATENCY", "THROUGHPUT"):
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
                  "PERFORMANCE_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        for m, k, n in shapes:
            compiled = core.compile_model(_matmul_model(m, k, n, precision == "int8"), "CPU",
                                          config)
            jobs = ov.AsyncInferQueue(compiled,
                                      int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
            for _ in range(2 * len(jobs)):
                jobs.start_async({0: x})
            jobs.wait_all()
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                jobs.start_async({0: x})
                runs += 1
            jobs.wait_all()
            best = max(best, 2.0 * m * k * n * runs / (time.perf_counter() - started))
    return best


def encoder_flops(tokens: int, layers: int = 6, hidden: int = 384, ffn: int = 1536,
                  width: int | None = None) -> float:
    """FLOP (2 per multiply-add) of a BERT encoder over `tokens` real tokens: the four
    attention projections and the feed-forward pair per token and layer, plus the two
    attention products (scores and mix) against `width` keys (default: 256)."""
    width = 256 if width is None else width
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * 2 * width * hidden
    return float(tokens * layers * per_token_layer)


def ceilings(threads: int = 0) -> dict[str, float]:
    return {p: gemm_rate(p, threads) for p in ("float32", "bfloat16", "int8")}


def main() -> None:
    print(cpu_class())
    for precision, rate in ceilings().items():
        print(f"GEMM ceiling {precision:9s} {rate / 1e9:8.0f} GFLOP/s")


if __name__ == "__main__":
    main()
