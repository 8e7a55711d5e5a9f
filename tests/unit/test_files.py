"""Document files, read by the real parsers from real files (written by fpdf2 and python-docx,
or crafted broken): text, pages, heading trails, and a clear reason for each bad file."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from bienc.ingest.documents import Document
from bienc.ingest.files import FileOptions, read_files, walk_folder
from bienc.ingest.formats import UnsupportedFile, detect_format
from bienc.ingest.parsers import ParseError, markdown_sections, parse_file
from bienc.ingest.producer import batched, collect
from bienc.ingest.readers import BadRecord, Unchanged, read_path
from bienc.ingest.sandbox import ParseFailure, ParsePool
from tests.filemaker import (
    HTML_PAGE,
    PAGE_SENTENCES,
    bad_files,
    docx_with_headings,
    pdf_pages,
)


def _section_of(document: Document, phrase: str) -> tuple[int | None, tuple[str, ...]]:
    at = document.text.index(phrase)
    for section in document.sections:
        if section.start <= at < section.end:
            return section.page, section.path
    raise AssertionError(f"{phrase!r} is in no section")


@pytest.fixture(scope="module")
def pool() -> ParsePool:
    with ParsePool(timeout_s=60) as shared:
        yield shared  # type: ignore[misc]


def test_a_pdf_is_read_page_by_page_with_its_title(tmp_path: Path) -> None:
    parsed = parse_file(pdf_pages(tmp_path / "manual.pdf"), "pdf")
    assert parsed.title == "Pump manual" and parsed.pages == 3
    assert [s.page for s in parsed.sections] == [1, 2, 3]
    for number, sentence in PAGE_SENTENCES.items():
        section = parsed.sections[number - 1]
        assert sentence in parsed.text[section.start : section.end]
        assert all(sentence not in parsed.text[s.start : s.end] for s in parsed.sections
                   if s is not section)


def test_docx_headings_become_section_paths(tmp_path: Path) -> None:
    parsed = parse_file(docx_with_headings(tmp_path / "guide.docx"), "docx")
    document = Document("g", parsed.text, parsed.title, {}, parsed.sections)
    assert parsed.title == "Installation guide"
    assert _section_of(document, "brown conductor") == (None, ("Electrical", "Wiring the terminal block"))
    assert _section_of(document, "flexible hoses") == (None, ("Plumbing",))
    assert _section_of(document, "covers the installation") == (None, ())
    assert "Wiring the terminal block" in parsed.text  # headings are text too (lexical search)


def test_html_keeps_the_article_and_its_headings_and_drops_the_boilerplate() -> None:
    parsed = parse_file_bytes(HTML_PAGE.encode(), "page.html")
    document = Document("p", parsed.text, parsed.title, {}, parsed.sections)
    assert parsed.title == "Filter maintenance"
    assert _section_of(document, "heat gun") == (None, ("Filter maintenance", "Cleaning", "Drying"))
    assert _section_of(document, "cartridge") == (None, ("Filter maintenance", "Replacement"))
    for boilerplate in ("Products", "newsletter", "All rights reserved", "tracker.invalid"):
        assert boilerplate not in parsed.text


def parse_file_bytes(data: bytes, name: str) -> object:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return parse_file(path, detect_format(name, data[:4096]))


def test_markdown_sections_follow_heading_levels_and_ignore_code() -> None:
    text, sections = markdown_sections(
        "Preface.\n\n# Guide\nIntro.\n\n## Setup\nSteps.\n```\n# not a heading\n```\n# Appendix\nEnd.\n")
    bodies = {text[s.start : s.end]: s.path for s in sections}
    assert bodies == {"Preface.": (), "Intro.": ("Guide",),
                      "Steps.\n```\n# not a heading\n```": ("Guide", "Setup"), "End.": ("Appendix",)}


def test_type_is_told_by_content_as_well_as_suffix() -> None:
    assert detect_format("report", b"%PDF-1.7 ...") == "pdf"  # no suffix
    assert detect_format("report.txt", b"%PDF-1.4") == "pdf"  # content wins
    assert detect_format("page", b"<!DOCTYPE html><html><body>x") == "html"
    assert detect_format("README", b"plain words") == "text"
    for name, head, reason in [("a.pdf", b"hello", "does not start like a PDF"),
                               ("a.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "save it as .docx"),
                               ("a.xlsx", b"PK\x03\x04", "only Word .docx"),
                               ("a.png", b"\x89PNG\r\n\x1a\n\x00\x00", "binary file of unknown type"),
                               ("a.py", b"print(1)", "unsupported type .py")]:
        with pytest.raises(UnsupportedFile, match=reason):
            detect_format(name, head)


def test_each_bad_file_fails_alone_with_its_reason_and_the_good_ones_are_read(tmp_path: Path,
                                                                            pool: ParsePool) -> None:
    expected = bad_files(tmp_path)
    pdf_pages(tmp_path / "manual.pdf")
    docx_with_headings(tmp_path / "guide.docx")
    (tmp_path / "big.txt").write_text("x" * 300_000)
    walk = walk_folder(tmp_path)
    items = list(read_files(walk.files, FileOptions(max_file_bytes=200_000), 1_000_000, pool=pool))
    failures = {i.where: i.reason for i in items if isinstance(i, BadRecord)}
    for name, phrase in {**expected, "big.txt": "over the limit of 200000"}.items():
        assert phrase in failures.pop(name), name
    assert not failures
    read = {i.id: i for i in items if isinstance(i, Document)}
    assert set(read) == {"manual.pdf", "guide.docx"}
    assert read["manual.pdf"].metadata["pages"] == 3 and read["manual.pdf"].metadata["format"] == "pdf"


def test_the_walk_takes_globs_names_by_relative_path_and_leaves_hidden_files_out(tmp_path: Path) -> None:
    for name in ("a.md", "docs/b.pdf", "docs/drafts/c.pdf", "docs/d.html", ".git/config", ".env"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    everything = walk_folder(tmp_path)
    assert [f.doc_id for f in everything.files] == ["a.md", "docs/b.pdf", "docs/d.html",
                                                    "docs/drafts/c.pdf"]
    assert everything.excluded == 2
    pdfs = walk_folder(tmp_path, include=["*.pdf"], exclude=["docs/drafts/*"])
    assert [f.doc_id for f in pdfs.files] == ["docs/b.pdf"]
    assert pdfs.excluded == 5


def test_unchanged_files_are_not_parsed_again(tmp_path: Path, pool: ParsePool) -> None:
    (tmp_path / "a.md").write_text("# A\nalpha\n")
    (tmp_path / "b.md").write_text("# B\nbeta\n")
    first = [i for i in read_files(walk_folder(tmp_path).files, FileOptions(), 10_000, pool=pool)
             if isinstance(i, Document)]
    known = {d.id: d.metadata["sha256"] for d in first}
    (tmp_path / "b.md").write_text("# B\nbeta, changed\n")
    options = FileOptions(unchanged=lambda files: {i for i, sha in files if known.get(i) == sha})
    again = list(read_files(walk_folder(tmp_path).files, options, 10_000, pool=pool))
    assert again[0] == Unchanged("a.md")
    assert isinstance(again[1], Document) and "changed" in again[1].text
    collected = collect(again)
    assert collected.unchanged == ["a.md"] and [d.id for d in collected.documents] == ["b.md"]


def test_a_single_document_file_is_one_document_named_by_its_file(tmp_path: Path) -> None:
    items = list(read_path(pdf_pages(tmp_path / "manual.pdf"), 1_000_000))
    assert len(items) == 1 and isinstance(items[0], Document) and items[0].id == "manual.pdf"


def _slow_and_quick_files(folder: Path) -> tuple[Path, Path]:
    """A 399-page PDF (long enough to overrun a tiny time limit) and a one-line Markdown file."""
    big = pdf_pages(folder / "big.pdf", {n: f"Page sentence number {n}." for n in range(1, 400)})
    small = folder / "small.md"
    small.write_text("# Small\nfine\n")
    return big, small


def test_a_parser_over_its_time_limit_is_stopped_and_the_next_file_is_read(tmp_path: Path) -> None:
    big, small = _slow_and_quick_files(tmp_path)
    with ParsePool(timeout_s=0.01) as limited:
        result = limited.parse(big, "pdf")
        assert isinstance(result, ParseFailure) and "longer than 0.01 s" in result.reason
        limited.timeout_s = 30
        assert not isinstance(limited.parse(small, "markdown"), ParseFailure)


def test_a_parser_that_dies_fails_its_file_only(tmp_path: Path) -> None:
    big, small = _slow_and_quick_files(tmp_path)
    with ParsePool(timeout_s=60) as dying:
        assert not isinstance(dying.parse(small, "markdown"), ParseFailure)  # started
        pids = {child.pid for child in _children()}

        def crash() -> None:  # as a segfault in native parser code would end it
            time.sleep(0.02)
            for pid in pids:
                os.kill(pid, signal.SIGSEGV)

        threading.Thread(target=crash).start()
        result = dying.parse(big, "pdf")
        assert isinstance(result, ParseFailure) and "crashed" in result.reason
        assert not isinstance(dying.parse(small, "markdown"), ParseFailure)


def _children() -> list[object]:
    import multiprocessing

    return [p for p in multiprocessing.active_children() if p.name == "bienc-parse"]


def test_batches_stay_under_the_character_budget() -> None:
    docs = [Document(str(i), "x" * n) for i, n in enumerate([900, 300, 300, 300, 50, 2000])]
    sizes = [[len(d.text) for d in batch] for batch in batched(docs, 10, max_chars=1000)]
    assert sizes == [[900], [300, 300, 300, 50], [2000]]
    assert [len(b) for b in batched(docs, 2)] == [2, 2, 2]


def test_parse_errors_name_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes(b"caf\xe9")
    with pytest.raises(ParseError, match=r"not valid UTF-8 .*convert it to UTF-8"):
        parse_file(path, "text")
