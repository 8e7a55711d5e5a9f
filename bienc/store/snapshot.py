"""The snapshot file: one collection's points and recorded encoding in a tar file, every member
under a sha256, read back only once every checksum holds.

Members, in this order (`tar tf` lists them):

    manifest.json    {"format": "bienc-snapshot", "version": 1, "kind": "points" or "qdrant",
                      "collection", "physical", "created", "encoding" (the collection's record,
                      bienc.store.record), "documents", "points", "dimension",
                      "files": {member: {"bytes", "sha256"}}}
    points.jsonl     kind "points": one line a point, {"payload": ..., "sparse": [[token ids],
                     [weights]]} (the lexical vector, chunk 0 of a collection that has them)
    vectors.f32      kind "points": the dense vectors, float32 little-endian, one row a line
                     of points.jsonl, in the same order
    qdrant.snapshot  kind "qdrant": a Qdrant server's own snapshot of the collection
    manifest.sha256  the sha256 of manifest.json's bytes

The "points" kind is written and read the same way whatever the engine; the "qdrant" kind
only by a Qdrant server (bienc.store.qdrant). A checksum detects a truncated or altered file,
not a forger: whoever rewrites a member can rewrite its sum.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from bienc.config.errors import CollectionError, InvalidInputError
from bienc.store.interface import ChunkPoint
from bienc.store.record import CollectionEncoding

FORMAT = "bienc-snapshot"
VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
POINTS = "points.jsonl"
VECTORS = "vectors.f32"
QDRANT = "qdrant.snapshot"
KINDS = {"points": (POINTS, VECTORS), "qdrant": (QDRANT,)}
SUFFIX = ".bienc.tar"
_BLOCK = 1 << 20
_VECTOR = np.dtype("<f4")


def refused(reason: str) -> InvalidInputError:
    return InvalidInputError(f"snapshot refused, nothing was changed: {reason}")


@dataclass(frozen=True)
class LexicalVector:
    """A lexical vector read from a snapshot (bienc.store.interface.SparseVector)."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Manifest:
    kind: str
    collection: str
    physical: str
    created: str
    encoding: CollectionEncoding
    documents: int
    points: int
    files: dict[str, dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """What a user is told of a snapshot."""
        return {"collection": self.collection, "kind": self.kind, "created": self.created,
                "documents": self.documents, "points": self.points, "model": self.encoding.model,
                "encoding": self.encoding.encoding}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class PointsWriter:
    """Collects a collection's points, page by page (Store.read_points), into `folder`.

    `finish` keeps every document at one version: a chunk whose content hash is not its chunk
    0's, or numbered past chunk 0's count (left by a write that a crash interrupted, and that
    its redelivery will finish), is left out, as a search leaves it out."""

    def __init__(self, folder: Path, dimension: int):
        self._folder = folder
        self._dimension = dimension
        self._lines = (folder / f".{POINTS}").open("w", encoding="utf-8")
        self._vectors = (folder / f".{VECTORS}").open("wb")
        self._keys: list[tuple[str, int, Any]] = []  # doc id, chunk, content hash of each line
        self._heads: dict[str, tuple[Any, int]] = {}  # doc id -> chunk 0's hash and count

    def add(self, points: Sequence[ChunkPoint]) -> None:
        for point in points:
            vector = np.asarray(point.vector, dtype=_VECTOR)
            if vector.shape != (self._dimension,):
                raise CollectionError(f"point {point.doc_id!r}/{point.chunk_no} has a vector of "
                                      f"shape {vector.shape}, not ({self._dimension},)")
            line: dict[str, Any] = {"payload": point.payload}
            if point.sparse is not None:
                line["sparse"] = [[int(i) for i in point.sparse.indices],
                                  [float(v) for v in point.sparse.values]]
            self._lines.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
            self._vectors.write(vector.tobytes())
            content_hash = point.payload.get("content_hash")
            self._keys.append((point.doc_id, point.chunk_no, content_hash))
            if point.chunk_no == 0:
                self._heads[point.doc_id] = (content_hash, int(point.payload.get("chunks", 1)))

    def finish(self) -> tuple[int, int]:
        """Write points.jsonl and vectors.f32; returns (documents, points) kept."""
        self._lines.close()
        self._vectors.close()
        keep = [doc_id in self._heads and chunk < self._heads[doc_id][1]
                and content_hash == self._heads[doc_id][0]
                for doc_id, chunk, content_hash in self._keys]
        raw_lines, raw_vectors = self._folder / f".{POINTS}", self._folder / f".{VECTORS}"
        if all(keep):
            os.replace(raw_lines, self._folder / POINTS)
            os.replace(raw_vectors, self._folder / VECTORS)
            return len(self._heads), len(keep)
        row = self._dimension * _VECTOR.itemsize
        with raw_lines.open(encoding="utf-8") as lines, raw_vectors.open("rb") as vectors, \
                (self._folder / POINTS).open("w", encoding="utf-8") as kept_lines, \
                (self._folder / VECTORS).open("wb") as kept_vectors:
            for kept, line in zip(keep, lines, strict=True):
                vector = vectors.read(row)
                if kept:
                    kept_lines.write(line)
                    kept_vectors.write(vector)
        raw_lines.unlink()
        raw_vectors.unlink()
        return len(self._heads), sum(keep)


def write(out: IO[bytes], folder: Path, kind: str, collection: str, physical: str,
          encoding: CollectionEncoding, documents: int, points: int) -> Manifest:
    """Pack the members of `kind` found in `folder` (PointsWriter's, or a server's snapshot)
    into a snapshot file written to `out`."""
    files = {member: {"bytes": (folder / member).stat().st_size, "sha256": _sha256(folder / member)}
             for member in KINDS[kind]}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = Manifest(kind, collection, physical, created, encoding, documents, points, files)
    raw = json.dumps({"format": FORMAT, "version": VERSION, "kind": kind, "collection": collection,
                      "physical": physical, "created": created, "encoding": encoding.record(),
                      "documents": documents, "points": points, "dimension": encoding.dimension,
                      "files": files}, indent=1).encode()
    (folder / MANIFEST).write_bytes(raw)
    (folder / MANIFEST_SUM).write_text(hashlib.sha256(raw).hexdigest() + "\n")
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for member in (MANIFEST, *KINDS[kind], MANIFEST_SUM):
            info = tarfile.TarInfo(member)
            info.size = (folder / member).stat().st_size
            info.mtime = int(time.time())
            info.mode = 0o644
            with (folder / member).open("rb") as source:
                tar.addfile(info, source)
    return manifest


def read(source: Path, folder: Path) -> Manifest:
    """Unpack snapshot file `source` into `folder` and check it whole: every member present,
    its size and sha256 those the manifest records, the manifest's own sha256. Raises
    InvalidInputError (the word "checksum" in it) for a file that fails any check."""
    try:
        with tarfile.open(source, mode="r|") as tar:
            names: list[str] = []
            for entry in tar:
                if len(names) > 4 or not entry.isfile() or entry.name in names or \
                        entry.name not in (MANIFEST, MANIFEST_SUM, POINTS, VECTORS, QDRANT):
                    raise refused(f"{source.name} holds {entry.name!r}, which no bienc snapshot "
                                  "holds (checksum not verified)")
                names.append(entry.name)
                extracted = tar.extractfile(entry)
                assert extracted is not None  # a regular file
                with (folder / entry.name).open("wb") as out:
                    while block := extracted.read(_BLOCK):
                        out.write(block)
    except (tarfile.TarError, EOFError, UnicodeDecodeError) as exc:
        raise refused(f"{source.name} is truncated or is not a bienc snapshot ({exc}); its "
                      "checksums cannot be verified") from exc
    if MANIFEST not in names or MANIFEST_SUM not in names:
        raise refused(f"{source.name} lacks {MANIFEST_SUM if MANIFEST in names else MANIFEST} "
                      "(truncated, or not a bienc snapshot): checksum not verified")
    if source.stat().st_size % tarfile.RECORDSIZE or names[-1] != MANIFEST_SUM:
        # a tar file is whole records; what is cut from its end, its zero blocks included, is
        # missed by tarfile, which takes a short header for the end of the archive
        raise refused(f"{source.name} is truncated (it does not end as a bienc snapshot ends): "
                      "its checksums cannot be verified")
    recorded = (folder / MANIFEST_SUM).read_bytes()
    if f"{_sha256(folder / MANIFEST)}\n".encode() != recorded:
        raise refused(f"checksum mismatch on {MANIFEST} in {source.name}: the file was changed "
                      "or damaged")
    manifest = _manifest(folder / MANIFEST, source.name)
    for member in KINDS[manifest.kind]:
        expected = manifest.files.get(member) or {}
        if member not in names:
            raise refused(f"{source.name} lacks {member} (truncated): checksum not verified")
        if (folder / member).stat().st_size != expected.get("bytes") or \
                _sha256(folder / member) != expected.get("sha256"):
            raise refused(f"checksum mismatch on {member} in {source.name}: the file is "
                          "truncated, or was changed or damaged")
    if manifest.kind == "points":
        dimension = manifest.encoding.dimension
        size = manifest.points * dimension * _VECTOR.itemsize
        if (folder / VECTORS).stat().st_size != size:
            raise refused(f"{VECTORS} holds {(folder / VECTORS).stat().st_size} bytes, not the "
                          f"{size} of {manifest.points} {dimension}-d vectors the manifest "
                          "says (checksums hold: it was made or rewritten wrongly)")
    return manifest


def _manifest(path: Path, shown: str) -> Manifest:
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("format") != FORMAT:
            raise refused(f"{shown} is not a bienc snapshot")
        if raw.get("version") != VERSION:
            raise refused(f"{shown} is a version {raw.get('version')} snapshot; this bienc reads "
                          f"version {VERSION}")
        if raw["kind"] not in KINDS:
            raise refused(f"{shown} is of unknown kind {raw['kind']!r}")
        encoding = CollectionEncoding.from_record(str(raw["collection"]), shown, raw["encoding"])
        return Manifest(str(raw["kind"]), str(raw["collection"]), str(raw["physical"]),
                        str(raw["created"]), encoding, int(raw["documents"]), int(raw["points"]),
                        dict(raw["files"]))
    except (KeyError, TypeError, ValueError, AttributeError, CollectionError) as exc:
        raise refused(f"the manifest of {shown} is malformed ({type(exc).__name__}: {exc})") from exc


def points(folder: Path, manifest: Manifest, batch: int = 256) -> Iterator[list[ChunkPoint]]:
    """The points of a "points" snapshot that `read` unpacked, `batch` at a time, checked as
    they come (InvalidInputError naming the line)."""
    dimension = manifest.encoding.dimension
    vectors = np.memmap(folder / VECTORS, dtype=_VECTOR, mode="r", shape=(manifest.points, dimension)) \
        if manifest.points else np.empty((0, dimension), dtype=_VECTOR)
    found: list[ChunkPoint] = []
    count = 0
    with (folder / POINTS).open(encoding="utf-8") as lines:
        for count, line in enumerate(lines, start=1):
            if count > manifest.points:
                break
            found.append(_point(line, np.array(vectors[count - 1]), count))
            if len(found) == batch:
                yield found
                found = []
    if count != manifest.points:
        raise refused(f"{POINTS} holds {count} points, the manifest {manifest.points}")
    if found:
        yield found


def _point(line: str, vector: np.ndarray, number: int) -> ChunkPoint:
    try:
        raw = json.loads(line)
        payload = raw["payload"]
        doc_id, chunk = payload["doc_id"], payload["chunk"]
        if not isinstance(doc_id, str) or isinstance(chunk, bool) or not isinstance(chunk, int) \
                or chunk < 0:
            raise ValueError("doc_id must be a string and chunk a number from 0")
        sparse = None
        if raw.get("sparse") is not None:
            indices, values = raw["sparse"]
            sparse = LexicalVector([int(i) for i in indices], [float(v) for v in values])
    except (KeyError, TypeError, ValueError) as exc:
        raise refused(f"{POINTS} line {number} is malformed ({type(exc).__name__}: {exc})") from exc
    return ChunkPoint(doc_id, chunk, vector, payload, sparse)
