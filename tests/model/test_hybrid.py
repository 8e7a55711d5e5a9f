"""Lexical and hybrid search through the indexing and search code, with the real model, on
both embedded engines."""

from __future__ import annotations

import pytest

from bienc.config.errors import CollectionError, InvalidInputError
from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams
from bienc.ingest.documents import Document
from bienc.search.searcher import SearchRequest, search
from bienc.store.interface import Store
from bienc.store.record import Chunking, CollectionEncoding
from bienc.workers.indexing import encoding_of, index_documents

PARAMS = Chunking(True, 64, 16)


def _enc(encoder: Encoder, lexical: LexicalParams | None = None,
         chunking: Chunking = PARAMS) -> CollectionEncoding:
    return encoding_of(encoder, chunking, lexical)
LEXICAL = LexicalParams()

# Short papers on one theme; only "brca" names the gene, and only "kinase" the identifier.
PAPERS = [
    Document("brca", "Carriers of BRCA1 mutations face a raised lifetime risk of breast cancer.",
             "Inherited breast cancer risk", {"year": 2019}),
    Document("screening", "Mammography screening lowers breast cancer mortality in older women.",
             "Screening", {"year": 2019}),
    Document("diet", "Diets rich in fibre were linked to a lower risk of several cancers.",
             "Diet and cancer", {"year": 2020}),
    Document("kinase", "The inhibitor XK-4471 blocked the kinase in cultured tumour cells.",
             "A kinase inhibitor", {"year": 2020}),
    Document("exercise", "Regular exercise reduced tumour growth in a mouse model.", "Exercise",
             {"year": 2021}),
    Document("survival", "Five-year survival after breast cancer improved over two decades.",
             "Survival trends", {"year": 2021}),
]


@pytest.fixture
def store(each_engine: Store) -> Store:
    return each_engine


def _ids(store: Store, encoder: Encoder, query: str, **options: object) -> list[str]:
    results = search(store, encoder, "c", SearchRequest([query], **options))  # type: ignore[arg-type]
    return [hit.doc_id for hit in results.hits[0]]


def test_a_rare_exact_term_finds_its_document(encoder: Encoder, store: Store) -> None:
    index_documents(PAPERS, "c", encoder, store, _enc(encoder, LEXICAL))
    for query in ("BRCA1", "XK-4471"):
        want = "brca" if query == "BRCA1" else "kinase"
        assert _ids(store, encoder, query, mode="lexical")[0] == want
        assert _ids(store, encoder, query, mode="hybrid")[0] == want
        assert _ids(store, encoder, query, mode="hybrid", fusion="rrf")[0] == want
        assert _ids(store, encoder, query)[0] == want  # hybrid is the default here
    results = search(store, encoder, "c", SearchRequest(["BRCA1 breast cancer"], top_k=3))
    assert results.mode == "hybrid"
    top = results.hits[0][0]
    assert top.doc_id == "brca" and top.scores is not None and set(top.scores) == {"dense", "lexical"}
    assert _ids(store, encoder, "breast cancer", mode="lexical", filter=None, top_k=2) \
        == _ids(store, encoder, "breast cancer", mode="lexical", top_k=2)


def test_filters_and_threshold_apply_in_every_mode(encoder: Encoder, store: Store) -> None:
    from bienc.store.filters import parse_filter

    index_documents(PAPERS, "c", encoder, store, _enc(encoder, LEXICAL))
    only_2020 = parse_filter({"year": 2020})
    for mode in ("dense", "lexical", "hybrid"):
        found = _ids(store, encoder, "breast cancer risk", mode=mode, filter=only_2020, top_k=10)
        assert set(found) <= {"diet", "kinase"} and found, mode
    lexical = search(store, encoder, "c", SearchRequest(["breast cancer"], mode="lexical", top_k=10))
    scores = [hit.score for hit in lexical.hits[0]]
    cut = search(store, encoder, "c", SearchRequest(["breast cancer"], mode="lexical", top_k=10,
                                                    score_threshold=scores[1]))
    assert [hit.score for hit in cut.hits[0]] == scores[:2]
    with pytest.raises(InvalidInputError, match=r"cosine similarity in \[-1, 1\]"):
        search(store, encoder, "c", SearchRequest(["x"], mode="dense", score_threshold=3.0))


def test_replacing_and_deleting_a_document_reach_both_legs(encoder: Encoder, store: Store) -> None:
    index_documents(PAPERS, "c", encoder, store, _enc(encoder, LEXICAL))
    assert _ids(store, encoder, "BRCA1", mode="lexical") == ["brca"]
    replaced = Document("brca", "Carriers of BRCA2 variants were followed for a decade.",
                        "Inherited breast cancer risk")
    outcome = index_documents([replaced], "c", encoder, store, _enc(encoder, LEXICAL))
    assert outcome.indexed == 1
    assert _ids(store, encoder, "BRCA1", mode="lexical") == []
    assert _ids(store, encoder, "BRCA2", mode="lexical") == ["brca"]
    store.delete_documents("c", ["brca"])
    for mode in ("dense", "lexical", "hybrid"):
        assert "brca" not in _ids(store, encoder, "BRCA2 carriers inherited risk", mode=mode, top_k=10)


def test_a_stopword_query_has_no_lexical_leg_and_hybrid_gives_the_dense_order(
        encoder: Encoder, store: Store) -> None:
    index_documents(PAPERS, "c", encoder, store, _enc(encoder, LEXICAL))
    query = "what is it that they were"
    assert _ids(store, encoder, query, mode="lexical") == []
    assert _ids(store, encoder, query, mode="hybrid", top_k=6) == _ids(store, encoder, query,
                                                                       mode="dense", top_k=6)


def test_a_dense_only_collection_answers_dense_and_refuses_lexical(encoder: Encoder,
                                                                   store: Store) -> None:
    index_documents(PAPERS, "c", encoder, store, _enc(encoder))
    results = search(store, encoder, "c", SearchRequest(["BRCA1"]))
    assert results.mode == "dense" and len(results.hits[0]) == len(PAPERS)
    for mode in ("lexical", "hybrid"):
        with pytest.raises(CollectionError, match="no lexical vectors"):
            search(store, encoder, "c", SearchRequest(["BRCA1"], mode=mode))  # type: ignore[arg-type]
    # the collection's own parameters hold: ingesting with lexical settings now changes nothing
    again = index_documents(PAPERS, "c", encoder, store, _enc(encoder, LEXICAL))
    assert (again.indexed, again.skipped) == (0, len(PAPERS))
    assert store.describe("c").lexical is None
