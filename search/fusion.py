"""Fusing the legs of a hybrid search (dense, lexical) into one ranking of documents (pure).

Both fusions work per document: a document found by both legs counts once, with the sum of
its two contributions, and keeps the best chunk of the first leg that found it (the dense
leg's, which is the one matching the query's meaning).

- Reciprocal rank fusion (`rrf`): a document at rank r (from 1) of a leg gets 1 / (k + r),
  k = 60 (Cormack, Clarke and Buettcher, SIGIR 2009). Ranks only; scores are ignored.
- Distribution-based score fusion (`dbsf`, after Qdrant's): each leg's scores are divided by
  6 sample standard deviations of its window, measured from a floor: mean - 3 deviations
  (the point DBSF maps to 0) or, where it is higher, the score a document the leg did not
  find is known to have (BM25 of a document sharing no word with the query: 0). A score
  under the floor contributes 0, as much as not being found: a leg never counts a document
  it found below one it did not. A leg with one document, or whose scores are all equal,
  gives 0.5. Bruch, Gai and Ingber (ACM TOIS 2023) found such a combination of normalised
  scores more effective than RRF, whose k it is sensitive to.

  The window's statistics describe the leg's scores over the same documents as the other
  leg's: where the lexical leg found fewer documents than the dense leg covers in the window
  (a small collection, a rare word), the documents it did not find enter its statistics at
  their known score 0. Without them, a few close BM25 scores would be spread over the whole
  0..1 range and outweigh a clear difference of meaning.

Tiers: a ranking's first documents never depend on how many were asked for. The first tier
fuses each leg's first TIERS[0] documents; a search deeper than that fetches the next tier's
depth of each leg (TIERS, then MAX_TOP_K) and appends, after the tiers above, the fusion of
those deeper legs (statistics over their whole window) without the documents already
ranked, their scores scaled to stay under the last tier's last (TIER_MARGIN), so that scores
decrease down the list. So the top 10 of top_k 10, 100 and 1000 are the same, and a page at
any offset is the slice of a deeper search.

The first tier's depth is three times the page a user reads (10): the window a fusion
needs to see a document that one leg ranks high and the other a little lower, and a sample
of scores large enough for DBSF's mean and deviation (30, the usual rule for a normal
approximation). Hybrid search engines size their windows the same way: Qdrant's examples
prefetch twice the limit, Elasticsearch's RRF window defaults to the page size. A deeper
first tier costs every search: on SciFact each leg of a 100-deep tier fetched ~290 chunks
and 110 documents where a 30-deep one fetches ~80 and 43.

Ties of the fused score are broken by document id (ascending), so that every engine returns
the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from bienc.config.settings import MAX_TOP_K
from bienc.store.interface import Candidate

Fusion = Literal["dbsf", "rrf"]
FUSIONS: tuple[Fusion, ...] = ("dbsf", "rrf")
RRF_K = 60
TIERS = (30, 100)  # documents of each leg the first tiers fuse (then MAX_TOP_K)
TIER_MARGIN = 0.999  # a tier's best score, as a share of the tier above's last
ABSENT_SCORES: Mapping[str, float] = {"lexical": 0.0}  # the known score of a document a leg did not find


def leg_depth(wanted: int) -> int:
    """Documents to fetch of each leg for a fused ranking of `wanted` documents: the depth
    of the first tier that holds that many, or MAX_TOP_K for a deeper ranking (fixed depths,
    so that deep pages of one query agree with each other)."""
    return next((depth for depth in TIERS if wanted <= depth), max(MAX_TOP_K, wanted))


def rrf_contributions(leg: Sequence[Candidate], population: int = 0,
                      absent: float | None = None, k: int = RRF_K) -> list[float]:
    return [1.0 / (k + rank) for rank in range(1, len(leg) + 1)]


def dbsf_contributions(leg: Sequence[Candidate], population: int = 0,
                       absent: float | None = None) -> list[float]:
    """Each document's contribution (module docstring). `population`: documents the window
    covers (its largest leg); a leg that found fewer is padded with `absent` scores, when the
    score of a document it did not find is known."""
    scores = [float(c.score) for c in leg]
    sample = scores + ([absent] * (population - len(scores)) if absent is not None else [])
    if len(sample) < 2:
        return [0.5] * len(scores)
    mean = math.fsum(sample) / len(sample)
    deviation = math.sqrt(math.fsum((s - mean) ** 2 for s in sample) / (len(sample) - 1))
    if deviation == 0.0:
        return [0.5] * len(scores)
    floor = mean - 3.0 * deviation
    if absent is not None:
        floor = max(floor, absent)
    return [max(0.0, s - floor) / (6.0 * deviation) for s in scores]


_CONTRIBUTIONS: dict[str, Callable[[Sequence[Candidate], int, float | None], list[float]]] = {
    "rrf": rrf_contributions, "dbsf": dbsf_contributions,
}


def fuse(legs: Mapping[str, Sequence[Candidate]], fusion: Fusion,
         upper: Mapping[int, Mapping[str, Sequence[Candidate]]] | None = None) -> list[Candidate]:
    """One ranking of the documents of every leg (in the mapping's order: the first leg
    names a document's chunk), best first, in tiers (module docstring); each result's
    `scores` holds the leg scores it was found with. `upper`: the legs as a search of a
    tier's depth fetches them, by depth, where `legs` were fetched deeper; that tier is fused
    from them, so that it is exactly what the shallower search ranks (an approximate
    search's first documents may differ with the depth asked for)."""
    longest = max((len(leg) for leg in legs.values()), default=0)
    ranked: list[Candidate] = []
    seen: set[str] = set()
    for depth in (*TIERS, longest):
        source = (upper or {}).get(depth, legs)
        fused = [item for item in _fuse_window({name: leg[:depth] for name, leg in source.items()},
                                               fusion) if item[0] not in seen]
        scale = 1.0
        if ranked and fused and fused[0][1][0] > 0.0:
            # scores decrease down the whole list: this tier's under the last one's
            scale = ranked[-1].score / fused[0][1][0] * TIER_MARGIN
        ranked += [Candidate(doc_id, chunk, score * scale, found)
                   for doc_id, (score, chunk, found) in fused]
        seen.update(doc_id for doc_id, _ in fused)
        if longest <= depth:
            break
    return ranked


def _fuse_window(legs: Mapping[str, Sequence[Candidate]], fusion: Fusion
                 ) -> list[tuple[str, list[Any]]]:
    """The documents of `legs`, best fused score first, ties by document id: (document,
    [fused score, its chunk (the first leg's to find it), {leg: its score}])."""
    contributions = _CONTRIBUTIONS[fusion]
    population = max((len(leg) for leg in legs.values()), default=0)
    fused: dict[str, list[Any]] = {}
    for name, leg in legs.items():
        for candidate, value in zip(leg, contributions(leg, population, ABSENT_SCORES.get(name)),
                                    strict=True):
            entry = fused.get(candidate.doc_id)
            if entry is None:
                fused[candidate.doc_id] = [value, candidate.chunk, {name: float(candidate.score)}]
            elif name not in entry[2]:  # a leg lists a document once; keep its best
                entry[0] += value
                entry[2][name] = float(candidate.score)
    return sorted(fused.items(), key=lambda item: (-item[1][0], item[0]))
