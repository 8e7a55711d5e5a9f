"""Document-level search of an open Edge collection: adaptive over-fetch for the dense leg,
the lexical leg with IDF over live documents, and reading the hits' payloads.

Edge has no grouping, so `dense_candidates` over-fetches chunks: it asks for ``limit * r``
chunks (payload: `doc_id` and `chunk` only), keeps each document's first (= best) chunk, and
asks again for more (at least twice as many; more when few distinct documents came per chunk)
until `limit` distinct documents are found or fewer chunks than asked come back (collection,
filter or score threshold exhausted). `r` is 1.25 times a running estimate of the chunks that
searches of about that size (by powers of two) needed per document in this collection (4
before the first): a deep search needs fewer chunks per document than a shallow one, as a
document's chunks tend to rank together. `lexical_candidates` needs none of that: only chunk 0
has a lexical vector. `fetch_hits` then reads the payloads of the documents a search keeps, in
one `retrieve` of their best chunks plus, for documents whose best chunk is not chunk 0, their
chunk 0 (full text, and the content_hash that must match). Reading payloads dominates a
top-1000 query (~4,000 chunks' ids, then ~1,750 records).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import qdrant_edge as qe

from bienc.store.edge_collections import OpenCollection
from bienc.store.edge_filters import edge_filter, metadata_filter
from bienc.store.filters import MetadataFilter
from bienc.store.interface import (
    HIT_FIELDS,
    IDF_CORPUS,
    LEXICAL_VECTOR,
    TEXT_FIELDS,
    Candidate,
    Hit,
    SparseVector,
    hit_chunks,
    hits_from,
    point_id,
)

_OVERFETCH = 4  # chunks asked for per wanted document, before the collection's estimate
_ESTIMATE_MARGIN = 1.25  # the estimate is exceeded by this much, so that one fetch does
_ESTIMATE_WEIGHT = 0.1  # of each search in the running estimate
_MAX_OVERFETCH = 64  # chunks asked for per wanted document at first, at most
_IDF_OVER_DOCUMENTS = qe.IdfParams(corpus=edge_filter(IDF_CORPUS))


def edge_sparse(vector: SparseVector) -> qe.SparseVector:
    return vector if isinstance(vector, qe.SparseVector) else \
        qe.SparseVector(list(vector.indices), list(vector.values))


def _filter_of(collection: OpenCollection, query_filter: MetadataFilter | None) -> qe.Filter | None:
    """The search's filter in Edge's terms, its fields indexed first."""
    if query_filter is None:
        return None
    collection.fields.cover(collection.parts, query_filter)
    return metadata_filter(query_filter)


def dense_candidates(collection: OpenCollection, vector: np.ndarray, limit: int,
                     params: qe.SearchParams, exact_params: qe.SearchParams, *,
                     query_filter: MetadataFilter | None,
                     score_threshold: float | None) -> list[Candidate]:
    """The `limit` best documents by cosine, each with its best chunk, best first: searched
    with `params` (each part not searched through its graph: `exact_params`)."""
    query = qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist())
    edge_query_filter = _filter_of(collection, query_filter)
    best: dict[str, Candidate] = {}  # document id -> its best chunk, best first
    size = max(1, limit).bit_length()  # requests of about the same size share an estimate
    estimate = collection.chunks_per_document.get(size, _OVERFETCH)
    fetch = max(limit, 1, math.ceil(limit * min(_MAX_OVERFETCH, estimate * _ESTIMATE_MARGIN)))
    needed = 0  # chunks up to the limit-th distinct document
    while True:
        scored = collection.parts.query(*(qe.QueryRequest(
            limit=fetch, query=query, filter=edge_query_filter, score_threshold=score_threshold,
            params=p, with_payload=["doc_id", "chunk"], with_vector=False)
            for p in (params, exact_params)))
        best = {}
        for number, point in enumerate(scored):
            payload = point.payload
            doc_id = payload.get("doc_id") if payload else None
            if doc_id is not None and doc_id not in best:  # results come best first
                best[doc_id] = Candidate(doc_id, int(payload.get("chunk", -1)), point.score)  # type: ignore[union-attr]
                if len(best) == limit:
                    needed = number + 1
        if len(best) >= limit or len(scored) < fetch:
            if needed and query_filter is None and score_threshold is None:
                collection.chunks_per_document[size] = (1 - _ESTIMATE_WEIGHT) * estimate + \
                    _ESTIMATE_WEIGHT * needed / max(1, limit)
            break
        # grow by the documents-per-chunk seen so far, at least doubling
        fetch = max(2 * fetch, int(fetch * 1.25 * limit / max(1, len(best))))
    return list(best.values())[:max(0, limit)]


def lexical_candidates(collection: OpenCollection, query: SparseVector, limit: int, *,
                       query_filter: MetadataFilter | None,
                       score_threshold: float | None) -> list[Candidate]:
    """The `limit` best documents by BM25 in the lexical part of `collection` (IDF over the
    documents held now), best first."""
    edge_query_filter = _filter_of(collection, query_filter)
    scored = collection.parts.query_lexical(qe.QueryRequest(
        limit=max(1, limit), query=qe.Query.Nearest(edge_sparse(query), using=LEXICAL_VECTOR),
        filter=edge_query_filter, score_threshold=score_threshold,
        params=qe.SearchParams(idf=_IDF_OVER_DOCUMENTS), with_payload=["doc_id"],
        with_vector=False))
    return [Candidate(str(point.payload["doc_id"]), 0, point.score)
            for point in scored if point.payload]


def fetch_hits(collection: OpenCollection, chosen: Sequence[Candidate], with_text: bool
               ) -> list[Hit]:
    """Hits of the `chosen` documents, in order (bienc.store.interface.hits_from)."""
    wanted: list[qe.PointId] = [point_id(doc_id, chunk) for doc_id, chunk in hit_chunks(chosen)]
    fields = HIT_FIELDS + (TEXT_FIELDS if with_text else [])
    records = collection.parts.retrieve(wanted, fields)
    # by (document, chunk) read from the payloads: cheaper than converting point ids
    payloads = {(p.get("doc_id"), p.get("chunk")): p
                for p in (r.payload for r in records) if p}  # .payload converts on each read
    return hits_from(chosen, payloads, with_text)  # type: ignore[arg-type]
