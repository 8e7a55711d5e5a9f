"""The query side: encode queries (batched), ANN top-K per query, document-level hits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from bienc.config.errors import InvalidInputError
from bienc.config.settings import MAX_TOP_K
from bienc.encoding.encoder import Encoder
from bienc.store.filters import MetadataFilter
from bienc.store.interface import Hit, Store

MAX_QUERY_CHARS = 10_000


@dataclass(frozen=True)
class SearchRequest:
    queries: Sequence[str]
    top_k: int = 10
    filter: MetadataFilter | None = None  # bienc.store.filters.parse_filter of the request's
    score_threshold: float | None = None
    with_text: bool = True


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
    if request.score_threshold is not None and not -1.0 <= request.score_threshold <= 1.0:
        raise InvalidInputError("score_threshold must be a cosine similarity in [-1, 1]")


def search(store: Store, encoder: Encoder, collection: str, request: SearchRequest,
           timings: dict[str, float] | None = None) -> list[list[Hit]]:
    """One ranked list of documents per query, best first, `top_k` documents at most each.

    Refuses a collection filled by another model: its vectors would not be comparable.
    Seconds spent encoding the queries are added to `timings["encode"]` when given.
    """
    validate_request(request)
    store.check_collection(collection, encoder.dimension, encoder.identity)
    started = time.perf_counter()
    vectors = encoder.encode_queries(list(request.queries))
    if timings is not None:
        timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - started
    return [
        store.search(collection, vector, request.top_k, query_filter=request.filter,
                     score_threshold=request.score_threshold, with_text=request.with_text)
        for vector in vectors
    ]
