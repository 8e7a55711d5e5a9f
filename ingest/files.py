"""Documents out of files: walking a folder, choosing files by glob, parsing each into one
document whose id is its path relative to the folder.

Every file the walk selects ends as exactly one item: a Document, an Unchanged (its bytes
are those already indexed under its id, so it is not parsed again), or a BadRecord naming
the file and why it was not read (unsupported type, too large, encrypted, no text, ...).
Files left out by the globs, and hidden files and folders (names starting with '.'), are
counted but are not items.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bienc.ingest.documents import Document, RecordError, parse_record
from bienc.ingest.formats import HEAD_BYTES, UnsupportedFile, detect_format
from bienc.ingest.parsers import Parsed
from bienc.ingest.readers import BadRecord, Unchanged
from bienc.ingest.sandbox import ParseFailure, ParsePool

# (document id, sha256 of its file) of candidates -> the ids whose stored document has that hash
UnchangedCheck = Callable[[Sequence[tuple[str, str]]], set[str]]


@dataclass(frozen=True)
class FileEntry:
    doc_id: str  # the path relative to the walked folder, with '/' separators
    path: Path
    size: int


@dataclass
class Walk:
    files: list[FileEntry] = field(default_factory=list)
    excluded: int = 0  # by the globs, or hidden


@dataclass(frozen=True)
class FileOptions:
    include: Sequence[str] = ()  # globs; empty: every file
    exclude: Sequence[str] = ()
    max_file_bytes: int = 100 * 1024 * 1024
    parse_timeout_s: float = 60.0
    parse_processes: int = 1
    unchanged: UnchangedCheck | None = None  # None: parse every file


def matches(doc_id: str, patterns: Sequence[str]) -> bool:
    """Whether a relative path matches any glob: against the whole path (where '*' crosses
    folders, as in fnmatch: 'docs/*.pdf' takes docs/a/b.pdf too) or the file's name alone
    ('*.pdf' takes every PDF at any depth)."""
    name = doc_id.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(doc_id, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def walk_folder(root: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Walk:
    """The files below `root`, recursively, in path order: those matching an `include` glob
    (all when none is given) and no `exclude` glob. Symbolic links are not followed out of
    the folder's tree of directories; hidden entries are left out (and counted)."""
    walk = Walk()
    for folder, dirs, names in os.walk(root):
        for hidden in (d for d in dirs if d.startswith(".")):
            walk.excluded += sum(len(files) for _, _, files in os.walk(Path(folder) / hidden))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            doc_id = path.relative_to(root).as_posix()
            if name.startswith(".") or (include and not matches(doc_id, include)) \
                    or matches(doc_id, exclude):
                walk.excluded += 1
                continue
            try:
                if not path.is_file():  # a socket, a FIFO, a link to nothing
                    walk.excluded += 1
                    continue
                size = path.stat().st_size
            except OSError:
                size = -1
            walk.files.append(FileEntry(doc_id, path, size))
    walk.files.sort(key=lambda f: f.doc_id)
    return walk


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def file_document(entry: FileEntry, parsed: Parsed, sha256: str, max_text_chars: int) -> Document:
    """The document of a parsed file; RecordError if it breaks a document rule (too long)."""
    metadata: dict[str, object] = {"path": entry.doc_id, "format": parsed.format,
                                   "sha256": sha256, "bytes": entry.size}
    if parsed.pages is not None:
        metadata["pages"] = parsed.pages
    document = parse_record({"id": entry.doc_id, "text": parsed.text, "title": parsed.title,
                             "metadata": metadata}, max_text_chars)
    return Document(document.id, document.text, document.title, document.metadata, parsed.sections)


def read_files(entries: Sequence[FileEntry], options: FileOptions, max_text_chars: int,
               pool: ParsePool | None = None) -> Iterator[Document | BadRecord | Unchanged]:
    """One item per entry, in order (see the module's docstring). Files are parsed in
    `pool` (one made for the call when None) under its time limit."""
    hashes: dict[str, str] = {}
    bad: dict[str, str] = {}
    for entry in entries:
        if entry.size < 0:
            bad[entry.doc_id] = "cannot read the file"
        elif entry.size > options.max_file_bytes:
            bad[entry.doc_id] = (f"file is {entry.size} bytes, over the limit of "
                                 f"{options.max_file_bytes} (setting max_file_bytes, "
                                 "BIENC_MAX_FILE_BYTES)")
        else:
            try:
                hashes[entry.doc_id] = file_sha256(entry.path)
            except OSError as exc:
                bad[entry.doc_id] = f"cannot read the file: {exc.strerror}"
    unchanged = options.unchanged(list(hashes.items())) if options.unchanged and hashes else set()
    owned = pool is None
    parse_pool = pool or ParsePool(options.parse_processes, options.parse_timeout_s)
    try:
        for entry in entries:
            if entry.doc_id in bad:
                yield BadRecord(entry.doc_id, bad[entry.doc_id])
            elif entry.doc_id in unchanged:
                yield Unchanged(entry.doc_id)
            else:
                yield parse_entry(entry, hashes[entry.doc_id], parse_pool, max_text_chars)
    finally:
        if owned:
            parse_pool.close()


def parse_entry(entry: FileEntry, sha256: str, pool: ParsePool, max_text_chars: int
                ) -> Document | BadRecord:
    try:
        with entry.path.open("rb") as stream:
            head = stream.read(HEAD_BYTES)
        fmt = detect_format(entry.path.name, head)
    except UnsupportedFile as exc:
        return BadRecord(entry.doc_id, str(exc))
    except OSError as exc:
        return BadRecord(entry.doc_id, f"cannot read the file: {exc.strerror}")
    if not head.strip():
        return BadRecord(entry.doc_id, "empty file")
    result = pool.parse(entry.path, fmt)
    if isinstance(result, ParseFailure):
        return BadRecord(entry.doc_id, result.reason)
    try:
        return file_document(entry, result, sha256, max_text_chars)
    except RecordError as exc:
        return BadRecord(entry.doc_id, str(exc))


def single_file(path: Path) -> FileEntry:
    """A file given on its own: its id is its name."""
    return FileEntry(path.name, path, path.stat().st_size)
