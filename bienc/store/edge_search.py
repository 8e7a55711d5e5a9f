"""Document-level search of an open Edge collection: adaptive over-fetch for the dense leg,
the lexical leg with IDF over live documents, and reading the hits' payloads.

Edge has no grouping, so `dense_candidates` over-fetches chunks: it asks for ``limit * r``
chunks (payload: `doc_id` and `chunk` only), keeps each document's first (= best) chunk, and
asks again for more (at least twice as many; more when few distinct documents came per chunk)
until `limit` distinct documents are found or fewer chunks than asked come back (collection,
filter or score threshold exhausted). In a collection with "document-key" point ids
(bienc.store.interface.point_id) the chunks come without payloads: each one's document and
chunk number are read from its id, and the document ids of the `limit` documents kept are
taken from those this process has read before (OpenCollection.names) or read from their
chunk 0 in the lexical part (small payloads); the lexical leg names its documents the same
way. Payloads cost ~5 us a
point; a top-100 search (~500 chunks) took 5.0 ms p50 this way against 6.8 ms reading them
all (SciFact, 20,709 chunks, AMD EPYC Zen 4). `r` is 1.25 times a running estimate of the chunks that
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
import uuid
from collections.abc import Callable, Sequence
from typing import Any

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
    chunk_number,
    document_key,
    hit_chunks,
    hits_from,
    point_id,
)

_OVERFETCH = 4  # chunks asked for per wanted document, before the collection's estimate
_ESTIMATE_MARGIN = 1.25  # the estimate is exceeded by this much, so that one fetch does
_ESTIMATE_WEIGHT = 0.1  # of each search in the running estimate
_MAX_OVERFETCH = 64  # chunks asked for per wanted document at first, at most
IDF_OVER_DOCUMENTS = qe.IdfParams(corpus=edge_filter(IDF_CORPUS))


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
                     params: Callable[[int], qe.SearchParams], exact_params: qe.SearchParams, *,
                     query_filter: MetadataFilter | None,
                     score_threshold: float | None) -> list[Candidate]:
    """The `limit` best documents by cosine, each with its best chunk, best first: searched
    with `params(points)` in a part of that many points searched through its graph, with
    `exact_params` in the others."""
    query = qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist())
    edge_query_filter = _filter_of(collection, query_filter)
    keyed = collection.encoding.point_ids == "document-key"
    size = max(1, limit).bit_length()  # requests of about the same size share an estimate
    estimate = collection.chunks_per_document.get(size, _OVERFETCH)
    fetch = max(limit, 1, math.ceil(limit * min(_MAX_OVERFETCH, estimate * _ESTIMATE_MARGIN)))
    while True:
        def request(search: qe.SearchParams, fetch: int = fetch) -> qe.QueryRequest:
            return qe.QueryRequest(
                limit=fetch, query=query, filter=edge_query_filter,
                score_threshold=score_threshold, params=search,
                with_payload=False if keyed else ["doc_id", "chunk"], with_vector=False)

        scored = collection.parts.query(lambda points: request(params(points)),
                                        request(exact_params))
        best, needed = _best_chunks(scored, limit, keyed)
        if len(best) >= limit or len(scored) < fetch:
            if needed and query_filter is None and score_threshold is None:
                collection.chunks_per_document[size] = (1 - _ESTIMATE_WEIGHT) * estimate + \
                    _ESTIMATE_WEIGHT * needed / max(1, limit)
            break
        # grow by the documents-per-chunk seen so far, at least doubling
        fetch = max(2 * fetch, int(fetch * 1.25 * limit / max(1, len(best))))
    kept = list(best.items())[:max(0, limit)]
    if keyed:
        return _named(collection, kept)
    return [Candidate(doc_id, chunk, score) for doc_id, (_, chunk, score) in kept]


def _best_chunks(scored: Sequence[Any], limit: int, keyed: bool
                 ) -> tuple[dict[Any, tuple[Any, int, float]], int]:
    """Each document's first (= best) chunk among `scored` (best first), by its document key
    (`keyed`: read from the point id) or document id (read from the payload): {document:
    (point id, chunk, score)}, and how many chunks it took to reach `limit` documents (0:
    fewer were found)."""
    best: dict[Any, tuple[Any, int, float]] = {}
    for number, point in enumerate(scored):
        if keyed:
            point_uuid = point.id
            document: Any = document_key(point_uuid)
            chunk = chunk_number(point_uuid)
        else:
            payload = point.payload
            document = payload.get("doc_id") if payload else None
            if document is None:
                continue
            point_uuid, chunk = None, int(payload.get("chunk", -1))  # type: ignore[union-attr]
        if document not in best:  # results come best first
            best[document] = (point_uuid, chunk, point.score)
            if len(best) == limit:  # the rest cannot be kept (reading an id costs ~1.5 us)
                return best, number + 1
    return best, 0


def _named(collection: OpenCollection, chosen: list[tuple[int, tuple[Any, int, float]]]
           ) -> list[Candidate]:
    """Candidates of best chunks found by their point ids alone ("document-key" ids), given
    as (document key, (point id, chunk, score)), named (_names). A document deleted since it
    was found and never named before is left out."""
    names = _names(collection, [key for key, _ in chosen], [point for _, (point, _, _) in chosen])
    return [Candidate(names[key], chunk, score)
            for key, (_, chunk, score) in chosen if key in names]


def _names(collection: OpenCollection, keys: Sequence[int], points: Sequence[Any] = ()
           ) -> dict[int, str]:
    """The document ids of document `keys`: those this process has read already
    (OpenCollection.names), the others read from the documents' chunk 0 in the lexical part,
    whose payloads are small (~0.35 ms for 100, against ~0.8 ms from the dense parts' full
    ones), and from `points` (the chunks found, in the dense parts) for any not found there."""
    names, missing = collection.names.lookup(keys)
    if not missing:
        return names
    read = _document_names(collection.parts.retrieve_lexical(
        [uuid.UUID(int=key << 32) for key in dict.fromkeys(missing)], ["doc_id"]))
    named = read.keys() | names.keys()
    unread = [point for point in points if document_key(point) not in named]
    if unread:
        read.update(_document_names(collection.parts.retrieve(unread, ["doc_id"])))
    collection.names.add(read)
    names.update(read)
    return names


def _document_names(records: Sequence[Any]) -> dict[int, str]:
    """Document key -> document id, from retrieved records with a `doc_id` payload."""
    return {document_key(r.id): str(r.payload["doc_id"])
            for r in records if r.payload and "doc_id" in r.payload}


def lexical_candidates(collection: OpenCollection, query: SparseVector, limit: int, *,
                       query_filter: MetadataFilter | None,
                       score_threshold: float | None) -> list[Candidate]:
    """The `limit` best documents by BM25 in the lexical part of `collection` (IDF over the
    documents held now), best first."""
    edge_query_filter = _filter_of(collection, query_filter)
    keyed = collection.encoding.point_ids == "document-key"
    scored = collection.parts.query_lexical(qe.QueryRequest(
        limit=max(1, limit), query=qe.Query.Nearest(edge_sparse(query), using=LEXICAL_VECTOR),
        filter=edge_query_filter, score_threshold=score_threshold,
        params=qe.SearchParams(idf=IDF_OVER_DOCUMENTS),
        with_payload=False if keyed else ["doc_id"], with_vector=False))
    if keyed:  # the documents are named by their ids' keys (_names)
        keys = [document_key(point.id) for point in scored]
        names = _names(collection, keys)
        return [Candidate(names[key], 0, point.score)
                for point, key in zip(scored, keys, strict=True) if key in names]
    return [Candidate(str(point.payload["doc_id"]), 0, point.score)
            for point in scored if point.payload]


def fetch_hits(collection: OpenCollection, chosen: Sequence[Candidate], with_text: bool
               ) -> list[Hit]:
    """Hits of the `chosen` documents, in order (bienc.store.interface.hits_from)."""
    made = collection.encoding.point_ids
    wanted: list[qe.PointId] = [point_id(doc_id, chunk, made) for doc_id, chunk in hit_chunks(chosen)]
    fields = HIT_FIELDS + (TEXT_FIELDS if with_text else [])
    records = collection.parts.retrieve(wanted, fields)
    # by (document, chunk) read from the payloads: cheaper than converting point ids
    payloads = {(p.get("doc_id"), p.get("chunk")): p
                for p in (r.payload for r in records) if p}  # .payload converts on each read
    return hits_from(chosen, payloads, with_text)  # type: ignore[arg-type]
