"""The recall-at-K curve and the search latency of an evaluation, drawn to a PNG."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WIDTH_PX, HEIGHT_PX, DPI = 1000, 600, 100


def plot_recall(path: Path, curve: Sequence[float], latency_ms: Mapping[int, float],
                suggested: Mapping[str, int], title: str) -> None:
    """Recall@K for K = 1..len(curve) (log K), the search p50 latency at the measured K on a
    second axis, and the suggested reranking depths marked. The data drawn is also stored in
    the PNG's `Description` text, as JSON."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ks = list(range(1, len(curve) + 1))
    figure, recall_axis = plt.subplots(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    recall_axis.plot(ks, curve, color="tab:blue", label="recall@K")
    recall_axis.set_xscale("log")
    recall_axis.set_xlabel("K (documents retrieved per query, log scale)")
    recall_axis.set_ylabel("mean recall@K", color="tab:blue")
    recall_axis.set_ylim(0, 1.02)
    recall_axis.grid(True, which="both", alpha=0.3)
    for row, (label, k) in enumerate(suggested.items()):
        recall_axis.axvline(k, color="tab:green", linestyle="--", alpha=0.8)
        right_half = k * k > len(curve)  # on the log axis: write the label leftwards
        # low in the plot, under the curve and clear of the latency points
        recall_axis.annotate(f"K={k}: {label} ({curve[k - 1]:.3f})", (k, 0.04 + 0.07 * row),
                             xytext=(-5 if right_half else 5, 0), textcoords="offset points",
                             color="tab:green", ha="right" if right_half else "left")
    latency_axis = recall_axis.twinx()
    measured = sorted(latency_ms.items())
    latency_axis.plot([k for k, _ in measured], [ms for _, ms in measured], "o-", color="tab:red",
                      label="search p50 ms")
    for k, ms in measured:
        latency_axis.annotate(f"{ms:.1f} ms", (k, ms), textcoords="offset points", xytext=(5, 5),
                              color="tab:red")
    latency_axis.set_ylabel("search latency p50 (ms)", color="tab:red")
    latency_axis.set_ylim(bottom=0)
    recall_axis.set_title(title)
    data: dict[str, Any] = {"recall_curve": list(curve), "latency_ms": {str(k): v for k, v in measured},
                            "suggested_depth": dict(suggested)}
    figure.savefig(path, dpi=DPI, metadata={"Description": json.dumps(data)})
    plt.close(figure)
