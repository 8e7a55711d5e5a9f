"""What a document is, and turning a raw record (a JSON object, a CSV row) into one.

A document parsed from a file (bienc.ingest.files) also carries its structure: sections,
each a span of its text with the page it is on (PDF) and its heading trail (Markdown, DOCX,
HTML). Chunks are cut inside one section at a time, so that a chunk never spans two pages
and each knows where it is. A document without sections is one span, as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bienc.queue.versions import MAX_VERSION

MAX_ID_CHARS = 512
MAX_NESTING = 32  # levels of lists and objects in metadata


class RecordError(ValueError):
    """A record that cannot become a document; the message names the field."""


@dataclass(frozen=True)
class Section:
    """Characters [start, end) of a document's text: on `page` (1-based; None: no pages),
    under the headings `path` (outermost first; empty: none)."""

    start: int
    end: int
    page: int | None = None
    path: tuple[str, ...] = ()

    def to_json(self) -> list[Any]:
        return [self.start, self.end, self.page, list(self.path)]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> Section:
        start, end, page, path = raw
        return cls(int(start), int(end), None if page is None else int(page),
                   tuple(str(p) for p in path))


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    sections: tuple[Section, ...] = ()
    # the client's own version, or the one given when it was accepted (bienc.queue.versions);
    # None only before acceptance, or in a message queued by an older bienc (then version 0)
    version: int | None = None

    @property
    def content_hash(self) -> str:
        """Changes when anything that reaches the index changes: text, title, metadata or
        structure. A document without sections hashes as it did before sections existed."""
        fields: list[Any] = [self.text, self.title, self.metadata]
        if self.sections:
            fields.append([s.to_json() for s in self.sections])
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_message(self) -> dict[str, Any]:
        """JSON-safe form for a task message."""
        message: dict[str, Any] = {"id": self.id, "text": self.text, "title": self.title,
                                   "metadata": self.metadata}
        if self.sections:
            message["sections"] = [s.to_json() for s in self.sections]
        if self.version is not None:
            message["version"] = self.version
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Document:
        version = message.get("version")
        return cls(message["id"], message["text"], message.get("title"), message.get("metadata") or {},
                   tuple(Section.from_json(s) for s in message.get("sections") or ()),
                   None if version is None else int(version))


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """Nesting depth of lists and objects (without recursion), counting no deeper than limit+1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            break
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored and returned as JSON, or None when it can."""
    if nesting_depth(value) > MAX_NESTING:
        return f"is nested deeper than {MAX_NESTING} levels"
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    except (ValueError, TypeError) as exc:
        if "JSON compliant" in str(exc):
            return "contains NaN or Infinity, which JSON cannot carry"
        return f"holds a value JSON cannot carry ({exc})"
    return None


def parse_record(record: Any, max_text_chars: int) -> Document:
    """Validate one record in either accepted form and return its Document.

    Forms: BEIR `{"_id", "title", "text"}` and `{"id", "text", "title"?, "metadata"?,
    "version"?}`. Integer ids are taken as their decimal string. Raises RecordError naming the
    field.
    """
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    if "_id" in record and "id" in record:
        raise RecordError("give either 'id' or '_id', not both")
    raw_id = record.get("id", record.get("_id"))
    id_field = "id" if "id" in record else "_id"
    if raw_id is None:
        raise RecordError("missing field 'id' (or BEIR '_id')")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise RecordError(f"field '{id_field}' must be a string or integer, got {raw_id!r}")
    doc_id = str(raw_id)
    if not doc_id.strip():
        raise RecordError(f"field '{id_field}' is empty")
    if len(doc_id) > MAX_ID_CHARS:
        raise RecordError(f"field '{id_field}' is longer than {MAX_ID_CHARS} characters")
    text = record.get("text")
    if not isinstance(text, str):
        if text is None:
            raise RecordError("missing field 'text'")
        raise RecordError(f"field 'text' must be a string, got {type(text).__name__}")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise RecordError(f"field 'title' must be a string, got {type(title).__name__}")
    title = title.strip() or None if title else None
    if not text.strip() and not title:
        raise RecordError("field 'text' is empty")
    if len(text) + len(title or "") > max_text_chars:
        raise RecordError(
            f"field 'text' has {len(text)} characters, over the limit of {max_text_chars} "
            "(BIENC_MAX_TEXT_CHARS)"
        )
    for name, value in (("text", text), ("title", title or "")):
        if "\x00" in value:
            raise RecordError(f"field '{name}' contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RecordError(f"field '{name}' is not valid Unicode (lone surrogate)") from exc
    metadata = record.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise RecordError(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    checks: tuple[tuple[str, Any], ...] = (("id", doc_id), ("metadata", metadata))
    for field_name, field_value in checks:
        problem = json_problem(field_value)
        if problem:
            raise RecordError(f"field {field_name!r} {problem}")
    return Document(id=doc_id, text=text, title=title, metadata=metadata,
                    version=parse_version(record.get("version")))


def parse_version(raw: Any, name: str = "version") -> int | None:
    """A client's version of a write (None: none given, the write gets the collection's next
    one); RecordError naming field `name` when it is not an integer from 0 to MAX_VERSION."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_VERSION:
        raise RecordError(
            f"field {name!r} must be an integer from 0 to {MAX_VERSION}, got {raw!r}: the "
            "document's own version (a newer write has a higher one), or leave it out and "
            "bienc numbers the writes in the order it accepts them")
    return raw


def stored_document(doc_id: str, head: dict[str, Any]) -> Document:
    """The document as a collection stores it, from its chunk 0's payload (which holds the
    fields of a task message, its version included, under other keys for the id)."""
    return Document.from_message({**head, "id": doc_id, "text": head.get("text") or ""})
