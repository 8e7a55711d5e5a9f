"""Documents out of files: JSONL or CSV records, or document files (PDF, DOCX, HTML,
Markdown, text; bienc.ingest.files), alone or in a folder.

Readers never stop at a bad record: they yield a BadRecord naming where it is (line, row or
file) and why, and go on with the rest of the input.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from bienc.config.errors import InvalidInputError
from bienc.ingest.documents import Document, RecordError, parse_record

if TYPE_CHECKING:
    from bienc.ingest.files import FileOptions

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class BadRecord:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class Unchanged:
    """A file whose bytes are those already indexed under its id: not parsed, counted as
    skipped."""

    doc_id: str


Item = Document | BadRecord | Unchanged


def read_path(path: Path, max_text_chars: int, files: FileOptions | None = None) -> Iterator[Item]:
    """Every record of a file or folder, in order: JSONL and CSV by suffix; a folder file by
    file (bienc.ingest.files, with `files`' globs and limits), each a document whose id is
    its path relative to the folder; any other file is one document, its id its name."""
    from bienc.ingest.files import FileOptions, read_files, single_file, walk_folder
    from bienc.ingest.formats import HEAD_BYTES, UnsupportedFile, detect_format

    options = files or FileOptions()
    if path.is_dir():
        yield from read_files(walk_folder(path, options.include, options.exclude).files, options,
                              max_text_chars)
    elif not path.exists():
        raise InvalidInputError(f"{path}: no such file or folder")
    elif path.suffix.lower() in JSONL_SUFFIXES:
        with path.open("rb") as stream:
            yield from read_jsonl(stream, max_text_chars)
    elif path.suffix.lower() == ".csv":
        with path.open("rb") as stream:
            yield from read_csv(stream, max_text_chars)
    else:
        with path.open("rb") as stream:
            head = stream.read(HEAD_BYTES)
        try:
            detect_format(path.name, head)
        except UnsupportedFile as exc:
            raise InvalidInputError(
                f"{path}: unknown format, {exc}; or give .jsonl/.ndjson or .csv records, or a "
                "folder") from exc
        yield from read_files([single_file(path)], options, max_text_chars)


def read_jsonl(stream: BinaryIO, max_text_chars: int) -> Iterator[Item]:
    for line_no, raw in enumerate(stream, start=1):
        where = f"line {line_no}"
        if not raw.strip():  # only ASCII whitespace: a blank line; anything else is a record
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRecord(where, f"not valid UTF-8 (byte {exc.start})")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadRecord(where, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        except RecursionError:
            yield BadRecord(where, "invalid JSON: nested too deeply")
            continue
        try:
            yield parse_record(record, max_text_chars)
        except RecordError as exc:
            yield BadRecord(where, str(exc))


def read_csv(stream: BinaryIO, max_text_chars: int) -> Iterator[Item]:
    """A header row naming `id` (or `_id`) and `text`, optionally `title`; other columns
    become string metadata."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    header = reader.fieldnames or []
    if not ({"id", "_id"} & set(header)) or "text" not in header:
        yield BadRecord("line 1", f"CSV header must name 'id' and 'text' columns, got {header}")
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRecord(f"line {reader.line_num}", f"malformed CSV: {exc}")
            continue
        where = f"line {reader.line_num}"
        if None in row:
            yield BadRecord(where, "more fields than the header names")
            continue
        if any(_has_surrogate(v) for v in row.values() if v):
            yield BadRecord(where, "not valid UTF-8")
            continue
        known = {"id", "_id", "text", "title"}
        record: dict[str, object] = {k: v for k, v in row.items() if k in known and v is not None}
        if record.get("title") == "":
            record.pop("title")
        record["metadata"] = {k: v for k, v in row.items() if k not in known and v}
        try:
            yield parse_record(record, max_text_chars)
        except RecordError as exc:
            yield BadRecord(where, str(exc))


def _has_surrogate(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)
