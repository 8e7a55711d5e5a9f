"""Text and structure out of one file: PDF (pypdfium2), DOCX (python-docx), HTML (trafilatura),
Markdown (markdown-it-py) and plain text.

Each parser returns the document's text with its sections (bienc.ingest.documents.Section):
a PDF one per page, the others one per heading, whose trail they record. DOCX and HTML are
turned into Markdown first, so that one sectioner reads the headings of all three. A file
that cannot be read raises ParseError with a reason a user can act on.

Nothing here runs code from a document or fetches what it links to: PDFium is built
without JavaScript and forms are never initialised, python-docx parses XML without
resolving entities, trafilatura is given the page's text and never a URL. Parsers still
run in a separate process under a time limit (bienc.ingest.sandbox), because a parser of a
hostile file can hang or crash.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bienc.ingest.documents import Section
from bienc.ingest.formats import Format

# A DOCX is a ZIP; its parts are read by declared size (zipfile stops there). Word files with
# images barely compress, text XML ~5-10x; 100x over 16 MiB is a bomb, not a document.
MAX_UNZIPPED_BYTES = 512 * 1024 * 1024
MAX_ZIP_RATIO = 100
ZIP_RATIO_FLOOR = 16 * 1024 * 1024


class ParseError(ValueError):
    """A file whose text cannot be read; the message says why and, where it can, what to do."""


@dataclass(frozen=True)
class Parsed:
    format: Format
    text: str
    title: str | None
    sections: tuple[Section, ...]
    pages: int | None = None  # PDF


def parse_file(path: Path, fmt: Format) -> Parsed:
    """The text and structure of the file at `path`, read as `fmt`; ParseError if unreadable."""
    if fmt == "pdf":
        return parse_pdf(path)
    if fmt == "docx":
        return parse_docx(path)
    data = path.read_bytes()
    if fmt == "html":
        return parse_html(data)
    text = decode_utf8(data)
    if fmt == "markdown":
        body, sections = markdown_sections(text)
        return Parsed("markdown", body, None, sections)
    return Parsed("text", text, None, ())


def decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"not valid UTF-8 (byte {exc.start}); convert it to UTF-8") from exc


_CONTROL = {c for c in map(chr, range(32)) if c not in "\n\t"} | {"\x7f", "\ufffe", "\uffff"}


def clean_text(text: str) -> str:
    """Line ends as \\n, no control characters (a NUL cannot be stored), NFC, trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(" " if c in _CONTROL else c for c in text)
    return unicodedata.normalize("NFC", text).strip()


# PDF


def parse_pdf(path: Path) -> Parsed:
    """One section per page that has text, numbered from 1. Refuses an encrypted PDF (no
    password is tried) and one whose pages hold no text at all (scanned images)."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
            raise ParseError("encrypted PDF (a password is needed to open it); decrypt it first, "
                             "e.g. `qpdf --decrypt --password=... in.pdf out.pdf`") from exc
        raise ParseError(f"truncated or corrupt PDF ({exc})") from exc
    try:
        title = _pdf_title(pdf)
        parts: list[str] = []
        sections: list[Section] = []
        at = 0
        pages = len(pdf)
        for number in range(pages):
            page = pdf[number]
            try:
                textpage = page.get_textpage()
                try:
                    text = clean_text(textpage.get_text_range())
                finally:
                    textpage.close()
            finally:
                page.close()
            if not text:
                continue
            if parts:
                at += 2
            sections.append(Section(at, at + len(text), number + 1))
            parts.append(text)
            at += len(text)
    except pdfium.PdfiumError as exc:
        raise ParseError(f"truncated or corrupt PDF ({exc})") from exc
    finally:
        pdf.close()
    if not sections:
        raise ParseError(f"no extractable text; OCR is not built in ({pages} pages, none with a "
                         "text layer: a scan? Run it through OCR first, e.g. `ocrmypdf`)")
    return Parsed("pdf", "\n\n".join(parts), title, tuple(sections), pages)


def _pdf_title(pdf: Any) -> str | None:
    try:
        title = str(pdf.get_metadata_dict().get("Title") or "")
    except Exception:  # metadata is optional and sometimes malformed; the text still counts
        return None
    title = clean_text(title)
    return title or None


# DOCX


def check_zip(path: Path) -> zipfile.ZipFile:
    """The file opened as a ZIP, once its central directory shows that unpacking it stays
    within bounds; ParseError for a bomb or a broken archive, before anything is unpacked."""
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"truncated or corrupt DOCX (not a readable ZIP archive: {exc})") from exc
    unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > MAX_UNZIPPED_BYTES or (unpacked > ZIP_RATIO_FLOOR and unpacked > MAX_ZIP_RATIO * size):
        archive.close()
        raise ParseError(f"would unpack to {unpacked} bytes from {size} (a zip bomb?); refused "
                         "without unpacking")
    if "word/document.xml" not in archive.namelist():
        archive.close()
        raise ParseError("not a Word document (a ZIP archive without word/document.xml)")
    return archive


def parse_docx(path: Path) -> Parsed:
    """Paragraphs and tables in order; paragraphs styled "Heading N" are headings, one
    styled "Title" (or the file's title property) the title."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    archive = check_zip(path)
    try:
        try:
            document = docx.Document(archive.fp)  # type: ignore[arg-type]
        except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ParseError(f"truncated or corrupt DOCX ({type(exc).__name__}: {exc})") from exc
        title = clean_text(document.core_properties.title or "") or None
        lines: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                for row in block.rows:
                    cells = [clean_text(cell.text) for cell in row.cells]
                    lines.append(" | ".join(c for c in cells if c))
                continue
            text = clean_text(block.text).replace("\n", " ")
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = _heading_level(style)
            if style == "Title" and title is None:
                title = text
            elif level is not None:
                lines.append("#" * level + " " + _escape_heading(text))
            else:
                lines.append(_escape_block(text))
    finally:
        archive.close()
    body, sections = markdown_sections("\n\n".join(line for line in lines if line))
    if not body.strip():
        raise ParseError("no text in the document")
    return Parsed("docx", body, title, sections)


def _heading_level(style: str) -> int | None:
    match = re.fullmatch(r"Heading ([1-9])", style)
    return min(int(match.group(1)), 6) if match else None


def _escape_heading(text: str) -> str:
    return text.rstrip("#").strip() or text


def _escape_block(text: str) -> str:
    """A paragraph that Markdown would read as a heading or a rule is kept as text."""
    if re.match(r"\s{0,3}(#{1,6}(\s|$)|[=\-]+\s*$)", text):
        return "\\" + text
    return text


# HTML

_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)


def decode_html(data: bytes) -> str:
    """The page's text by its byte-order mark, else the charset it declares, else UTF-8;
    ParseError for a charset Python does not know, or bytes not valid in the one used."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return _decode(data[len(bom):], encoding, "its byte-order mark says")
    match = _META_CHARSET.search(data[:4096])
    if match is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"HTML that is not UTF-8 (byte {exc.start}) and declares no charset; "
                             "add <meta charset=\"...\"> naming its encoding, or convert it to "
                             "UTF-8") from exc
    declared = match.group(1).decode("ascii", "replace")
    try:
        codecs.lookup(declared)
    except LookupError as exc:
        raise ParseError(f"HTML in an unknown encoding: it declares charset {declared!r}, which "
                         "Python does not know; convert it to UTF-8") from exc
    return _decode(data, declared, "it declares")


def _decode(data: bytes, encoding: str, source: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ParseError(f"HTML in a wrong encoding: {source} {encoding}, but byte {exc.start} is "
                         f"not valid {encoding}; fix the declaration or convert it to UTF-8") from exc


def parse_html(data: bytes) -> Parsed:
    """The page's main content (trafilatura: no navigation, footers or other boilerplate),
    as Markdown with its headings, and the page's title."""
    import trafilatura

    html = decode_html(data)
    if not html.strip():
        raise ParseError("empty HTML page")
    extracted = trafilatura.extract(
        html, output_format="markdown", include_formatting=True, include_links=False,
        include_images=False, include_comments=False, include_tables=True, with_metadata=False,
        deduplicate=False, fast=True)
    metadata = trafilatura.extract_metadata(html)
    title = clean_text(metadata.title or "") if metadata is not None else ""
    if not extracted:  # a short page under trafilatura's minimum: its whole visible text
        extracted = trafilatura.baseline(html)[1]
    text = clean_text(extracted or "")
    if not text:
        raise ParseError("no text found in the HTML page")
    body, sections = markdown_sections(text)
    return Parsed("html", body, title or None, sections)


# Markdown


def markdown_sections(text: str) -> tuple[str, tuple[Section, ...]]:
    """`text` (unchanged, trimmed) and its sections: the text under each top-level heading up
    to the next one, with the trail of headings above it (a heading closes those of its level
    and deeper). The heading lines themselves are in the text, outside every section: the
    trail carries them into each chunk, and the lexical index reads them in the text."""
    from markdown_it import MarkdownIt

    text = text.strip()
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    tokens = MarkdownIt("commonmark").parse(text)
    headings: list[tuple[int, int, int, str]] = []  # first line, line after, level, text
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.level == 0 and token.map:
            inline = tokens[i + 1].content if i + 1 < len(tokens) else ""
            headings.append((token.map[0], token.map[1], int(token.tag[1:]), inline.strip()))
    sections: list[Section] = []
    trail: list[tuple[int, str]] = []
    body_from = 0
    for first, after, level, heading in [*headings, (len(lines), len(lines), 0, "")]:
        start, end = starts[body_from], max(starts[first] - 1, starts[body_from])
        if text[start:end].strip():
            lead = len(text[start:end]) - len(text[start:end].lstrip())
            tail = len(text[start:end].rstrip())
            sections.append(Section(start + lead, start + tail, None,
                                    tuple(h for _, h in trail)))
        trail = [(lvl, h) for lvl, h in trail if lvl < level]
        if heading:
            trail.append((level, heading))
        body_from = after
    return text, tuple(sections)
