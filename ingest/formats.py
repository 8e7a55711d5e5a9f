"""What kind of document a file is, from its first bytes as well as its name.

The content wins where it is unambiguous (a PDF or a ZIP announces itself in its first bytes);
the suffix decides among text formats. A file whose name and content disagree, or whose type
bienc does not read, is refused with a reason that says which, never skipped in silence.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

Format = Literal["pdf", "docx", "html", "markdown", "text"]
FORMATS: tuple[Format, ...] = ("pdf", "docx", "html", "markdown", "text")
HEAD_BYTES = 4096  # what detection reads of a file

SUFFIXES: dict[str, Format] = {
    ".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
}
RECORD_SUFFIXES = (".jsonl", ".ndjson", ".csv")  # many documents per file: bienc.ingest.readers
READABLE = ".pdf, .docx, .html/.htm, .md, .txt"

_PDF_MAGIC = b"%PDF-"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc, .xls, .ppt (Office 97-2003)
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


class UnsupportedFile(ValueError):
    """A file bienc does not read; the message says what it is and what bienc reads."""


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"".join(_BOMS) + b" \t\r\n")[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml")) and b"<html" in head.lower()


def detect_format(name: str, head: bytes) -> Format:
    """The format of a file called `name` whose first bytes are `head` (HEAD_BYTES of them,
    or all of a shorter file); UnsupportedFile naming why not."""
    suffix = PurePath(name).suffix.lower()
    named = SUFFIXES.get(suffix)
    if _PDF_MAGIC in head[:1024]:  # the PDF spec allows junk before the header, up to 1 KB
        return "pdf"
    if head.startswith(_OLE_MAGIC):
        raise UnsupportedFile("a legacy Office file (Word 97-2003 .doc, .xls or .ppt): bienc reads "
                              ".docx; save it as .docx or PDF")
    if head.startswith(_ZIP_MAGIC):
        if named == "docx":
            return "docx"
        raise UnsupportedFile(f"a ZIP archive named {suffix or 'without a suffix'}: bienc reads "
                              f"{READABLE} (of ZIP-based files, only Word .docx)")
    if named == "pdf":
        raise UnsupportedFile("named .pdf but does not start like a PDF (no %PDF- header): "
                              "truncated or corrupt")
    if named == "docx":
        raise UnsupportedFile("named .docx but is not a ZIP archive: truncated or corrupt")
    if suffix in RECORD_SUFFIXES:
        raise UnsupportedFile(f"a {suffix} file of records inside a folder: ingest it on its own "
                              f"(`bienc ingest FILE{suffix}`)")
    if named is not None:
        return named
    if b"\x00" in head and not head.startswith(_BOMS[1:]):
        raise UnsupportedFile(f"a binary file of unknown type ({suffix or 'no suffix'}): bienc "
                              f"reads {READABLE}")
    if _looks_like_html(head):
        return "html"
    if not suffix:
        return "text"
    raise UnsupportedFile(f"unsupported type {suffix}: bienc reads {READABLE}")
