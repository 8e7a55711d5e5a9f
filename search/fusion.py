"""Fusing the legs of a hybrid search (dense, lexical) into one ranking of documents (pure).

Both fusions work per document: a document found by both legs counts once, with the sum of
its two contributions, and keeps the best chunk of the first leg that found it (the dense
leg's, which is the one matching the query's meaning).

- Reciprocal rank fusion (`rrf`): a document at rank r (from 1) of a leg gets 1 / (k + r),
  k = 60 (Cormack, Clarke and Buettcher, SIGIR 2009). Ranks only; scores are ignored.
- Distribution-based score fusion (`dbsf`, as Qdrant defines it): each leg's scores are
  mapped linearly so that its mean - 3 standard deviations (sample) becomes 0 and its mean
  + 3 standard deviations becomes 1, then summed. A leg with one document, or whose scores
  are all equal, gives 0.5. Bruch, Gai and Ingber (ACM TOIS 2023) found such a combination of
  normalised scores more effective than RRF, whose k it is sensitive to.
  The mean and deviation are those of the leg's first DEPTH documents, however many it has:
  a search asking for 1000 documents normalises like one asking for 10, so the top of a
  ranking does not depend on how many documents a client asks for.

Ties of the fused score are broken by document id (ascending), so that every engine returns
the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from bienc.store.interface import Candidate

Fusion = Literal["dbsf", "rrf"]
FUSIONS: tuple[Fusion, ...] = ("dbsf", "rrf")
RRF_K = 60
DEPTH = 100  # documents each leg contributes at least; DBSF's statistics are over these


def rrf_contributions(leg: Sequence[Candidate], k: int = RRF_K) -> list[float]:
    return [1.0 / (k + rank) for rank in range(1, len(leg) + 1)]


def dbsf_contributions(leg: Sequence[Candidate], window: int = DEPTH) -> list[float]:
    scores = [float(c.score) for c in leg]
    head = scores[:window]
    if len(head) < 2:
        return [0.5] * len(scores)
    mean = math.fsum(head) / len(head)
    spread = 3.0 * math.sqrt(math.fsum((s - mean) ** 2 for s in head) / (len(head) - 1))
    if spread == 0.0:
        return [0.5] * len(scores)
    low = mean - spread
    return [(s - low) / (2.0 * spread) for s in scores]


_CONTRIBUTIONS: dict[str, Callable[[Sequence[Candidate]], list[float]]] = {
    "rrf": rrf_contributions, "dbsf": dbsf_contributions,
}


def fuse(legs: Mapping[str, Sequence[Candidate]], fusion: Fusion) -> list[Candidate]:
    """One ranking of the documents of every leg (in the mapping's order: the first leg
    names a document's chunk), best first; each result's `scores` holds the leg scores it
    was found with."""
    contributions = _CONTRIBUTIONS[fusion]
    fused: dict[str, float] = {}
    chunks: dict[str, int] = {}
    found: dict[str, dict[str, float]] = {}
    for name, leg in legs.items():
        for candidate, value in zip(leg, contributions(leg), strict=True):
            doc_id = candidate.doc_id
            if doc_id in found and name in found[doc_id]:
                continue  # a leg lists a document once; keep its best
            fused[doc_id] = fused.get(doc_id, 0.0) + value
            chunks.setdefault(doc_id, candidate.chunk)
            found.setdefault(doc_id, {})[name] = float(candidate.score)
    order = sorted(fused, key=lambda doc_id: (-fused[doc_id], doc_id))
    return [Candidate(doc_id, chunks[doc_id], fused[doc_id], found[doc_id]) for doc_id in order]
