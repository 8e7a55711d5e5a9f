"""Structure through chunking, encoding and search, with the real model: a chunk never spans
two pages, each knows its page and heading trail, and a hit returns them."""

from __future__ import annotations

from pathlib import Path

from qdrant_client import QdrantClient

from bienc.encoding.encoder import Encoder
from bienc.encoding.lexical import LexicalParams
from bienc.ingest.chunking import chunk_document
from bienc.ingest.documents import Document, Section, stored_document
from bienc.ingest.files import FileEntry, file_document
from bienc.ingest.parsers import parse_file
from bienc.search.searcher import SearchRequest, search
from bienc.store.qdrant import VectorStore
from bienc.store.record import Chunking
from bienc.workers.indexing import build_points, chunk_documents, encoding_of, index_documents
from tests.filemaker import docx_with_headings, pdf_pages

PARAMS = Chunking(True, 64, 16)


def _file_document(path: Path, fmt: str) -> Document:
    parsed = parse_file(path, fmt)  # type: ignore[arg-type]
    return file_document(FileEntry(path.name, path, path.stat().st_size), parsed, "0" * 64, 10**6)


def test_no_chunk_spans_two_pages_and_each_knows_its_page(tmp_path: Path, encoder: Encoder) -> None:
    pages = {n: f"Sentence {n} of the report. " + "Filler words about routine checks. " * 30
             for n in range(1, 5)}
    document = _file_document(pdf_pages(tmp_path / "r.pdf", pages), "pdf")
    chunks = chunk_documents([document], encoder, PARAMS)[0]
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2, 3, 4} and len(chunks) > 4  # pages are cut too
    page_texts = {s.page: document.text[s.start : s.end] for s in document.sections}
    for chunk in chunks:
        assert all(f"Sentence {n} " not in chunk.body for n in pages if n != chunk.page)
        assert chunk.body in page_texts[chunk.page]
        assert chunk.text.startswith("Pump manual ")  # the title is in every chunk


def test_headings_lead_each_chunk_of_their_section(tmp_path: Path, encoder: Encoder) -> None:
    document = _file_document(docx_with_headings(tmp_path / "g.docx"), "docx")
    chunks = chunk_documents([document], encoder, PARAMS)[0]
    wiring = next(c for c in chunks if "brown conductor" in c.body)
    assert wiring.section == ("Electrical", "Wiring the terminal block")
    assert wiring.text.startswith("Installation guide. Electrical > Wiring the terminal block ")


def test_a_document_without_sections_is_chunked_exactly_as_before(encoder: Encoder) -> None:
    """SciFact and every JSONL/CSV corpus: byte-identical encoded text, so their figures stand."""
    text = " ".join(f"Claim {i} concerns the expression of gene {i} in tissue." for i in range(40))
    document = Document("d", text, "A title")
    chunks = chunk_documents([document], encoder, PARAMS)[0]
    title_offsets, offsets = encoder.token_offsets(["A title", text])
    expected = chunk_document("A title", title_offsets, text, offsets, PARAMS.tokens, PARAMS.overlap)
    assert [(c.text, c.body) for c in chunks] == [(c.text, c.body) for c in expected]
    assert all(c.page is None and c.section == () for c in chunks)
    assert document.content_hash == Document("d", text, "A title", {}, ()).content_hash


def test_a_hit_returns_the_page_and_section_of_its_best_chunk(tmp_path: Path, encoder: Encoder) -> None:
    store = VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
    manual = _file_document(pdf_pages(tmp_path / "m.pdf"), "pdf")
    guide = _file_document(docx_with_headings(tmp_path / "g.docx"), "docx")
    plain = Document("plain", "Bread rises when yeast ferments the sugars in the dough.")
    encoding = encoding_of(encoder, PARAMS, LexicalParams())
    outcome = index_documents([manual, guide, plain], "c", encoder, store, encoding)
    assert outcome.indexed == 3
    for mode in ("dense", "hybrid"):
        hits = search(store, encoder, "c", SearchRequest(
            ["how often is the impeller bearing greased", "which terminal takes the brown conductor",
             "why does bread rise"], top_k=1, mode=mode)).hits  # type: ignore[arg-type]
        assert (hits[0][0].doc_id, hits[0][0].page) == ("m.pdf", 3)
        assert "impeller bearing" in (hits[0][0].snippet or "")
        assert hits[1][0].doc_id == "g.docx"
        assert hits[1][0].section == ["Electrical", "Wiring the terminal block"]
        assert hits[1][0].to_dict()["section"] == ["Electrical", "Wiring the terminal block"]
        assert "page" not in hits[2][0].to_dict() and "section" not in hits[2][0].to_dict()


def test_sections_travel_in_the_task_message_and_the_stored_payload(encoder: Encoder) -> None:
    """A reindex rebuilds documents from chunk 0's payload: the structure must be there."""
    document = Document("d", "ab cd", None, {}, (Section(0, 2, 1), Section(3, 5, 2, ("H",))))
    assert Document.from_message(document.to_message()) == document
    chunks = chunk_documents([document], encoder, PARAMS)[0]
    assert [(c.body, c.page, c.section) for c in chunks] == [("ab", 1, ()), ("cd", 2, ("H",))]
    points = build_points(document, chunks, encoder.encode_documents([c.text for c in chunks]), "h")
    assert stored_document("d", dict(points[0].payload)) == document
    assert (points[1].payload["page"], points[1].payload["section"]) == (2, ["H"])
