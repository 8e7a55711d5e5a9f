"""Fusing a hybrid search's legs per document: reciprocal rank and distribution-based."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from bienc.search.fusion import TIERS, fuse, leg_depth
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


def _normalised(scores: list[float], floor_at: float | None = None) -> list[float]:
    """DBSF as the module states it, written out: sample statistics, floor, 6 deviations."""
    mean, deviation = statistics.mean(scores), statistics.stdev(scores)
    floor = mean - 3 * deviation if floor_at is None else max(mean - 3 * deviation, floor_at)
    return [max(0.0, s - floor) / (6 * deviation) for s in scores]


def test_dbsf_maps_mean_minus_three_sample_deviations_to_0_and_six_deviations_to_1() -> None:
    dense_scores = [0.82, 0.80, 0.61, 0.55]
    lexical_scores = [20.0, 11.5, 3.0, 1.0]
    dense = _leg(*zip("wxyz", dense_scores, strict=True))
    lexical = _leg(*zip("zqrs", lexical_scores, strict=True))
    want = dict(zip("wxyz", _normalised(dense_scores), strict=True))
    for doc_id, value in zip("zqrs", _normalised(lexical_scores, floor_at=0.0), strict=True):
        want[doc_id] = want.get(doc_id, 0.0) + value
    fused = fuse({"dense": dense, "lexical": lexical}, "dbsf")
    assert [c.doc_id for c in fused] == sorted(want, key=lambda d: (-want[d], d))
    for candidate in fused:
        assert candidate.score == pytest.approx(want[candidate.doc_id], rel=1e-12)
    assert math.isclose(sum(_normalised(dense_scores)) / 4, 0.5)  # the mean maps to 0.5


def test_a_leg_never_contributes_less_than_a_document_it_did_not_find() -> None:
    """A score under mean - 3 deviations of its leg's window contributes 0, never less: a
    document found by both legs never ranks under one found by the other leg alone."""
    dense = _leg(*((f"d{i}", 0.9 - i * 0.001) for i in range(99)), ("x", -0.5))
    lexical = _leg(("x", 5.0), ("y", 5.0))
    fused = fuse({"dense": dense, "lexical": lexical}, "dbsf")
    by_id = {c.doc_id: c for c in fused}
    assert by_id["x"].score >= by_id["y"].score
    assert [c.doc_id for c in fused].index("x") < [c.doc_id for c in fused].index("y")  # tie: by id
    assert min(c.score for c in fused) >= 0.0


def test_lexical_documents_not_found_enter_its_statistics_at_score_0() -> None:
    """The demo's case: three close BM25 scores in a 20-document collection must not outweigh
    a clear difference of meaning (photosynthesis over mitochondria for "How do plants make
    energy from light?")."""
    dense = _leg(("photosynthesis", 0.668), ("mitochondria", 0.487), ("coffee", 0.272),
                 ("dna", 0.155), *((f"other{i}", 0.09 - i * 0.009) for i in range(16)))
    lexical = _leg(("mitochondria", 4.395), ("coffee", 3.544), ("photosynthesis", 3.507))
    fused = fuse({"dense": dense, "lexical": lexical}, "dbsf")
    assert fused[0].doc_id == "photosynthesis"
    padded = lexical_scores = [4.395, 3.544, 3.507] + [0.0] * 17
    by_id = {c.doc_id: c.score for c in fused}
    dense_part = dict(zip([c.doc_id for c in dense], _normalised([c.score for c in dense]),
                          strict=True))
    lexical_part = _normalised(padded, floor_at=0.0)[:3]
    for doc_id, value in zip(["mitochondria", "coffee", "photosynthesis"], lexical_part, strict=True):
        assert by_id[doc_id] == pytest.approx(dense_part[doc_id] + value, rel=1e-12)
    assert lexical_scores[3:] == [0.0] * 17


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
def test_the_first_results_do_not_depend_on_how_many_are_asked_for(fusion: str) -> None:
    """Legs as a search fetches them for top_k 10 (30 each), 100 (100 each) and 1000
    (MAX_TOP_K): each shallower ranking is the head of each deeper one, and any page is the
    slice of a deeper ranking, its scores decreasing down the list."""
    rng = random.Random(5)
    dense = _leg(*((f"d{i}", 0.9 - i * 0.0005 + rng.random() * 1e-3) for i in range(1000)))
    dense.sort(key=lambda c: -c.score)
    lexical = _leg(*((f"d{rng.randrange(3000)}", 30.0 - i * 0.02) for i in range(1200)))
    lexical = list({c.doc_id: c for c in reversed(lexical)}.values())[::-1][:1000]
    assert [leg_depth(k) for k in (1, 10, 30, 31, 100, 101, 1000)] == list(TIERS[:1]) * 3 + \
        [TIERS[1]] * 2 + [1000] * 2
    rankings = [[c.doc_id for c in fuse({"dense": dense[:depth], "lexical": lexical[:depth]},
                                        fusion)]  # type: ignore[arg-type]
                for depth in (leg_depth(10), leg_depth(100), leg_depth(1000))]
    for shallower, deeper in itertools.pairwise(rankings):
        assert deeper[:len(shallower)] == shallower and len(deeper) > len(shallower)
    deep = fuse({"dense": dense, "lexical": lexical}, fusion)  # type: ignore[arg-type]
    assert len({c.doc_id for c in deep}) == len(deep)
    scores = [c.score for c in deep]  # a client sorting by score keeps the order
    assert all(a >= b for a, b in itertools.pairwise(scores))
    for tier in rankings[:2]:  # each tier ends above the next one
        assert scores[len(tier) - 1] > scores[len(tier)]


def test_a_deep_search_ranks_its_upper_tiers_from_the_shallow_legs_it_is_given() -> None:
    """An approximate dense leg fetched 30 or 100 deep may miss a document that the one
    fetched 1,000 deep (exactly) finds: each upper tier comes from the legs a search of its
    depth fetches, so the top of a deeper search is the shallower search's."""
    dense = _leg(*((f"d{i}", 0.9 - i * 0.001) for i in range(1000)))
    lexical = _leg(*((f"d{i * 3}", 20.0 - i * 0.01) for i in range(1000)))
    fetched = {depth: {"dense": dense[1:depth + 1], "lexical": lexical[:depth]}  # the graph missed d0
               for depth in TIERS}
    top30 = [c.doc_id for c in fuse(fetched[30], "dbsf")]
    top100 = [c.doc_id for c in fuse(fetched[100], "dbsf", {30: fetched[30]})]
    deep = [c.doc_id for c in fuse({"dense": dense, "lexical": lexical}, "dbsf", fetched)]
    assert top100[:len(top30)] == top30 and deep[:len(top100)] == top100
    unaided = [c.doc_id for c in fuse({"dense": dense, "lexical": lexical}, "dbsf")]
    assert unaided[:len(top30)] != top30  # the shallow legs made the difference


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
