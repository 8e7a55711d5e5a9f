"""Text to BM25 sparse vectors, for lexical and hybrid search: Qdrant Edge's built-in `Bm25`
(tokenizer, English stopwords and Snowball stemmer compiled in; its token ids and weights are
those of Qdrant server's `qdrant/bm25`), run in-process on the CPU.

A document's vector holds, per token id, the BM25 term weight

    tf * (k + 1) / (tf + k * (1 - b + b * |d| / avg_len))

and a query's holds 1.0 per distinct token. The store multiplies each query term by its IDF,
ln((N - n + 0.5) / (n + 0.5) + 1), over the documents it holds at query time (Qdrant's IDF
modifier), so that a deleted or replaced document stops counting at once. The parameters
belong to a collection: they are recorded when it is created (bienc.store.interface) and
every vector written into it uses them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bienc.config.errors import CollectionError
from bienc.config.settings import Settings

if TYPE_CHECKING:
    import qdrant_edge

KIND = "bm25"


@dataclass(frozen=True)
class LexicalParams:
    """BM25's term-frequency saturation `k`, length normalisation `b` and the average
    document length `avg_len` (in BM25 tokens) that `b` normalises against."""

    k: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0

    def record(self) -> dict[str, Any]:
        """What a collection records (JSON)."""
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LexicalParams:
        if record.get("kind") != KIND:
            raise CollectionError(f"unknown lexical representation {record.get('kind')!r} "
                                  f"(this bienc knows {KIND!r}); upgrade bienc")
        return cls(k=float(record["k"]), b=float(record["b"]), avg_len=float(record["avg_len"]))

    def fingerprint(self) -> str:
        return f"{KIND}:{self.k:g}/{self.b:g}/{self.avg_len:g}"


def lexical_params(settings: Settings) -> LexicalParams | None:
    """The lexical parameters a new collection gets under `settings` (None: no lexical
    vectors)."""
    if not settings.lexical:
        return None
    return LexicalParams(k=settings.bm25_k, b=settings.bm25_b, avg_len=settings.bm25_avg_len)


def document_text(title: str | None, text: str) -> str:
    """What a document's lexical vector is made of: its title and its whole text."""
    return f"{title} {text}" if title else text


class LexicalEncoder:
    """BM25 vectors of documents and queries under one collection's parameters."""

    def __init__(self, params: LexicalParams):
        import qdrant_edge as qe

        self.params = params
        self._model: qdrant_edge.Bm25 = qe.Bm25(qe.Bm25Config(k=params.k, b=params.b,
                                                              avg_len=params.avg_len))

    def embed_documents(self, texts: Sequence[str]) -> list[qdrant_edge.SparseVector]:
        """One vector per text (its `indices` and `values`, the store's SparseVector)."""
        return [self._model.embed_document(text) for text in texts]

    def embed_query(self, text: str) -> qdrant_edge.SparseVector:
        """1.0 per distinct token of `text`; empty when every word is a stopword or none is a
        token (punctuation only)."""
        return self._model.embed_query(text)


_encoders: dict[LexicalParams, LexicalEncoder] = {}
_encoders_lock = threading.Lock()


def lexical_encoder(params: LexicalParams) -> LexicalEncoder:
    """The encoder for `params`, built once per process."""
    with _encoders_lock:
        encoder = _encoders.get(params)
        if encoder is None:
            encoder = _encoders[params] = LexicalEncoder(params)
        return encoder
