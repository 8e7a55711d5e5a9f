"""The query side: encode queries (batched), run each search leg (dense ANN over chunks,
lexical BM25 over documents), fuse them in hybrid mode, and read the hits kept.

Modes:
    dense    cosine of the query's vector to each document's best chunk (score in [-1, 1])
    lexical  BM25 of the query's words over each document's title and text (score >= 0)
    hybrid   both, fused per document (bienc.search.fusion) in tiers: each leg contributes
             its best 30 documents to the first, 100 to the second and MAX_TOP_K to the
             third, each fetched only when a search goes that deep; the score is the fused one
A request without a mode gets hybrid on a collection with lexical vectors, dense on one
without. `score_threshold` applies to the score of the mode used.

A page (`offset`) is the slice of the search `offset + top_k` deep: every leg is asked for
as many documents as a search with that `top_k` asks, so the page at offset 10 of top_k 10
is results 11-20 of top_k 20, in every mode. A dense search up to 100 deep is asked as deep
as its tier (30 or 100 documents) and cut: HNSW's candidate list grows with the depth asked
(bienc.store.interface.hnsw_ef), so the pages of one tier come from one ranking; a deeper
tier's may find a document that a shallower one's approximate search missed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bienc.config.errors import CollectionError, CollectionNotFoundError, InvalidInputError
from bienc.config.settings import MAX_TOP_K
from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams, lexical_encoder
from bienc.search.fusion import FUSIONS, TIERS, Fusion, fuse, leg_depth
from bienc.search.modes import MODES, Mode
from bienc.store.filters import MetadataFilter
from bienc.store.interface import Candidate, Hit, SparseVector, Store, resolved
from bienc.store.record import CollectionEncoding, check_model

if TYPE_CHECKING:
    import numpy as np

MAX_QUERY_CHARS = 10_000
EncoderFor = Callable[[str, CollectionEncoding], Encoder]  # a collection's model, by its record
TIE_MARGIN = 10  # lexical candidates asked for beyond those kept (and a tenth more)


@dataclass(frozen=True)
class SearchRequest:
    queries: Sequence[str]
    top_k: int = 10
    offset: int = 0  # documents skipped: the page of top_k after the first `offset`
    filter: MetadataFilter | None = None  # bienc.store.filters.parse_filter of the request's
    score_threshold: float | None = None
    with_text: bool = True
    mode: Mode | None = None  # None: hybrid where the collection has lexical vectors, else dense
    fusion: Fusion = "dbsf"


@dataclass(frozen=True)
class SearchResults:
    hits: list[list[Hit]]  # one ranked list per query
    mode: Mode


def validate_request(request: SearchRequest) -> None:
    if not request.queries:
        raise InvalidInputError("give at least one query")
    for i, query in enumerate(request.queries):
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError(f"query {i} is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInputError(f"query {i} is longer than {MAX_QUERY_CHARS} characters")
    if isinstance(request.top_k, bool) or not 1 <= request.top_k <= MAX_TOP_K:
        raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {request.top_k}")
    if isinstance(request.offset, bool) or request.offset < 0:
        raise InvalidInputError(f"offset must be 0 or more, got {request.offset}")
    if request.offset + request.top_k > MAX_TOP_K:
        raise InvalidInputError(
            f"offset + top_k is {request.offset + request.top_k}, over the limit of {MAX_TOP_K} "
            f"(MAX_TOP_K): a search reaches the {MAX_TOP_K} best documents at most")
    if request.mode is not None and request.mode not in MODES:
        raise InvalidInputError(f"mode {request.mode!r} is unknown: use one of {', '.join(MODES)}")
    if request.fusion not in FUSIONS:
        raise InvalidInputError(f"fusion {request.fusion!r} is unknown: use one of {', '.join(FUSIONS)}")
    if request.score_threshold is not None and not math.isfinite(request.score_threshold):
        raise InvalidInputError("score_threshold must be a finite number")


def choose_mode(collection: str, requested: Mode | None, recorded: CollectionEncoding) -> Mode:
    """The mode a search runs in on a collection that records `recorded`."""
    has_lexical = recorded.lexical is not None
    if requested is None:
        return "hybrid" if has_lexical else "dense"
    if requested != "dense" and not has_lexical:
        raise CollectionError(
            f"collection {collection!r} has no lexical vectors, so it cannot be searched in "
            f"{requested} mode (it answers mode 'dense'). Give it lexical vectors with "
            f"`bienc reindex {collection} --lexical` (or POST /v1/collections/{collection}/reindex "
            '{"lexical": true}): they are built from its stored text, and its dense vectors are '
            "copied, not encoded again"
        )
    return requested


def _check_threshold(mode: Mode, threshold: float | None) -> None:
    if threshold is None:
        return
    if mode == "dense" and not -1.0 <= threshold <= 1.0:
        raise InvalidInputError("score_threshold in dense mode is a cosine similarity in [-1, 1]")


def _lexical(store: Store, collection: str, sparse: SparseVector, limit: int,
             query_filter: MetadataFilter | None) -> list[Candidate]:
    """The `limit` best documents by BM25, ties by document id. Engines order equal scores
    differently, and documents of equal BM25 score are common (the same terms, the same
    length), so a few more are asked for: a tie across the cut is settled here."""
    found = store.lexical_candidates(collection, sparse, limit + limit // 10 + TIE_MARGIN,
                                     query_filter=query_filter)
    return sorted(found, key=lambda c: (-c.score, c.doc_id))[:limit]


def rank(store: Store, collection: str, request: SearchRequest, mode: Mode,
         vector: np.ndarray | None, sparse: SparseVector | None) -> list[Candidate]:
    """The documents one query keeps, best first: at most `top_k` after the first `offset`,
    scored at or above the threshold (applied here, the same way on every engine). A hybrid
    search runs its legs one after the other: Qdrant Edge's calls hold the GIL (measured: two
    threads querying one part answer no more queries a second than one), so on threads of
    their own the legs took as long (2.8 ms p50 for both, full SciFact), plus the hop."""
    top_k, query_filter = request.offset + request.top_k, request.filter
    if mode == "dense":
        assert vector is not None
        # as deep as its tier, so that pages agree within it (past the last tier: asked as
        # deep as wanted, as a tier of MAX_TOP_K would cost every deep search a top-1000)
        depth = leg_depth(top_k) if top_k <= TIERS[-1] else top_k
        ranked = store.dense_candidates(collection, vector, depth, query_filter=query_filter)[:top_k]
    elif mode == "lexical":
        assert sparse is not None
        ranked = _lexical(store, collection, sparse, top_k, query_filter)
    else:
        assert vector is not None and sparse is not None
        depth = leg_depth(top_k)
        legs = {"dense": store.dense_candidates(collection, vector, depth, query_filter=query_filter),
                "lexical": _lexical(store, collection, sparse, depth, query_filter)}
        # the upper tiers as the shallower searches rank them (fuse): the dense leg again at
        # each of their depths (an approximate search; the lexical one is exact)
        upper = {tier: {"dense": store.dense_candidates(collection, vector, tier,
                                                        query_filter=query_filter),
                        "lexical": legs["lexical"]}
                 for tier in TIERS if tier < depth}
        ranked = fuse(legs, request.fusion, upper)[:top_k]
    if request.score_threshold is not None:
        ranked = [c for c in ranked if c.score >= request.score_threshold]
    return ranked[request.offset:]


def search(store: Store, encoders: Encoder | EncoderFor, collection: str, request: SearchRequest,
           timings: dict[str, float] | None = None) -> SearchResults:
    """One ranked list of documents per query, best first, `top_k` documents at most each.

    The queries are encoded by the model the collection records (`encoders` gives it for a
    collection; an Encoder is taken as that model, once checked against the record). Refuses
    a lexical or hybrid search of a collection without lexical vectors. When `timings` is
    given, the seconds spent are added to it: "encode" (the queries, both representations),
    "rank" (the store's candidates, fused) and "fetch" (the hits' payloads).

    The name is resolved once, so that a search never mixes two physical collections; one
    that a reindex dropped under it (the name switched meanwhile) runs again on the new one.
    """
    validate_request(request)
    physical = resolved(store, collection)
    try:
        return _search(store, encoders, collection, physical, request, timings)
    except CollectionNotFoundError:
        now = store.resolve(collection)
        if now is None or now == physical:
            raise
        return _search(store, encoders, collection, now, request, timings)


def _search(store: Store, encoders: Encoder | EncoderFor, collection: str, physical: str,
            request: SearchRequest, timings: dict[str, float] | None) -> SearchResults:
    recorded = store.describe(physical)
    mode = choose_mode(collection, request.mode, recorded)
    if isinstance(encoders, Encoder):
        encoder = encoders
        check_model(collection, recorded, encoder.identity, encoder.dimension, encoder.weights)
    elif mode != "lexical":
        encoder = encoders(collection, recorded)
    _check_threshold(mode, request.score_threshold)
    queries = list(request.queries)
    started = time.perf_counter()
    vectors: Sequence[np.ndarray | None] = [None] * len(queries)
    sparse: Sequence[SparseVector | None] = [None] * len(queries)
    if mode != "dense":
        assert recorded.lexical is not None
        lexical = lexical_encoder(LexicalParams.from_record(recorded.lexical))
        sparse = [lexical.embed_query(query) for query in queries]
    if mode != "lexical":
        vectors = list(encoder.encode_queries(queries))
    spent = timings if timings is not None else {}
    spent["encode"] = spent.get("encode", 0.0) + time.perf_counter() - started
    hits = []
    for vector, terms in zip(vectors, sparse, strict=True):
        started = time.perf_counter()
        ranked = rank(store, physical, request, mode, vector, terms)
        fetched = time.perf_counter()
        hits.append(store.fetch_hits(physical, ranked, request.with_text))
        spent["rank"] = spent.get("rank", 0.0) + fetched - started
        spent["fetch"] = spent.get("fetch", 0.0) + time.perf_counter() - fetched
    return SearchResults(hits, mode)
