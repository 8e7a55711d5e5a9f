"""Fusing a hybrid search's legs per document: reciprocal rank and distribution-based."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bienc.search.fusion import fuse
from bienc.store.interface import Candidate


def _leg(*scored: tuple[str, float], chunk: int = 0) -> list[Candidate]:
    return [Candidate(doc_id, chunk, score) for doc_id, score in scored]


def test_rrf_sums_one_over_60_plus_rank_per_document() -> None:
    dense = _leg(("a", 0.9), ("b", 0.8), ("c", 0.7), chunk=2)
    lexical = _leg(("c", 14.0), ("d", 9.0))
    fused = fuse({"dense": dense, "lexical": lexical}, "rrf")
    expected = {"a": 1 / 61, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    assert [c.doc_id for c in fused] == ["c", "a", "b", "d"]  # b and d tie: by id
    for candidate in fused:
        assert candidate.score == pytest.approx(expected[candidate.doc_id], rel=1e-12)
    by_id = {c.doc_id: c for c in fused}
    assert by_id["c"].chunk == 2  # the dense leg's best chunk
    assert by_id["d"].chunk == 0
    assert by_id["c"].scores == {"dense": 0.7, "lexical": 14.0}
    assert by_id["d"].scores == {"lexical": 9.0}


def test_dbsf_maps_mean_plus_minus_three_sample_deviations_to_0_and_1() -> None:
    dense_scores = [0.82, 0.80, 0.61, 0.55]
    lexical_scores = [20.0, 11.5, 3.0]
    dense = _leg(*zip("wxyz", dense_scores, strict=True))
    lexical = _leg(*zip("zqr", lexical_scores, strict=True))

    def normalised(scores: list[float]) -> list[float]:
        mean, deviation = statistics.mean(scores), statistics.stdev(scores)
        return [(s - (mean - 3 * deviation)) / (6 * deviation) for s in scores]

    want = dict(zip("wxyz", normalised(dense_scores), strict=True))
    for doc_id, value in zip("zqr", normalised(lexical_scores), strict=True):
        want[doc_id] = want.get(doc_id, 0.0) + value
    fused = fuse({"dense": dense, "lexical": lexical}, "dbsf")
    assert [c.doc_id for c in fused] == sorted(want, key=lambda d: (-want[d], d))
    for candidate in fused:
        assert candidate.score == pytest.approx(want[candidate.doc_id], rel=1e-12)
    assert math.isclose(sum(normalised(dense_scores)) / 4, 0.5)  # the mean maps to 0.5


def test_dbsf_of_a_lone_or_flat_leg_is_one_half_and_an_empty_leg_adds_nothing() -> None:
    assert [c.score for c in fuse({"dense": _leg(("a", 0.3))}, "dbsf")] == [0.5]
    flat = fuse({"dense": _leg(("a", 0.3), ("b", 0.3)), "lexical": []}, "dbsf")
    assert [(c.doc_id, c.score) for c in flat] == [("a", 0.5), ("b", 0.5)]
    dense_only = fuse({"dense": _leg(("a", 0.9), ("b", 0.5), ("c", 0.1)), "lexical": []}, "dbsf")
    assert [c.doc_id for c in dense_only] == ["a", "b", "c"]
    assert fuse({"dense": [], "lexical": []}, "rrf") == []


def test_ties_break_by_document_id_whatever_the_legs_order() -> None:
    one = fuse({"dense": _leg(("m", 0.5), ("k", 0.4)), "lexical": _leg(("k", 2.0), ("m", 1.0))}, "rrf")
    other = fuse({"dense": _leg(("k", 0.5), ("m", 0.4)), "lexical": _leg(("m", 2.0), ("k", 1.0))}, "rrf")
    assert [c.doc_id for c in one] == [c.doc_id for c in other] == ["k", "m"]
    assert one[0].score == one[1].score


def test_dbsf_normalises_over_the_first_100_so_the_top_does_not_depend_on_k() -> None:
    rng = random.Random(3)
    dense = _leg(*((f"d{i}", 0.9 - i * 0.0007 + rng.random() * 1e-4) for i in range(1000)))
    lexical = _leg(*((f"d{rng.randrange(2000)}", 30.0 - i * 0.02) for i in range(1000)))
    lexical = list({c.doc_id: c for c in reversed(lexical)}.values())[::-1]  # one entry a document
    short = fuse({"dense": dense[:100], "lexical": lexical[:100]}, "dbsf")
    deep = fuse({"dense": dense, "lexical": lexical}, "dbsf")
    deep_scores = {c.doc_id: c.score for c in deep}
    in_both_heads = {c.doc_id for c in dense[:100]} & {c.doc_id for c in lexical[:100]}
    assert in_both_heads
    for candidate in short:  # the same contributions from the same first 100 of each leg
        if candidate.doc_id in in_both_heads:
            assert deep_scores[candidate.doc_id] == pytest.approx(candidate.score, rel=1e-12)
