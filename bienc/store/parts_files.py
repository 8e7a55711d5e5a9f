"""The files of an Edge collection's parts (bienc.store.parts): the manifest's names, what a
crash leaves behind, the copy a build starts from, and the records the parts are kept in.

Crash safety. parts.json names the parts; it is written whole, fsync'd and renamed (bienc.store
.durable), after the folders it names are durable. A builder's work lives in dot-folders under
parts/ until it is swapped in; a crash leaves at worst such folders, the target a crash kept
from the manifest (recorded as "building") and parts swapped out ("retired"): those are
removed at the next load. Any other folder the manifest does not name is moved aside to
quarantine/, never deleted.

Layout of the collection's folder::

    parts.json       {"active": "p7", "next": 8, "parts": {"p3": {"state": "indexed"}, ...},
                      "lexical": "p6", "building": "p8", "retired": ["p2"], "build": {...}}
    parts/p3/        an EdgeShard
    parts/lexical/   the lexical shard of an older bienc (since: a part named like the others)
    quarantine/      folders found under parts/ that no manifest named, kept for a person

A collection written by an older bienc (one `shard/` folder) is read as one indexed part.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from bienc.config.crash import crash_point
from bienc.store.durable import fsync_dir, make_dir

log = logging.getLogger(__name__)

MANIFEST = "parts.json"
PARTS_DIR = "parts"
LEXICAL_PART = "lexical"  # the lexical part's folder in a manifest that does not name one
LEGACY_SHARD = "shard"
QUARANTINE = "quarantine"


@dataclass(eq=False)
class Part:
    name: str
    shard: qe.EdgeShard
    state: str  # active, sealed, indexed, lexical
    points: int = 0  # when it was indexed (for the choice of exact search)
    # operations applied to this part while a builder works on a copy of it
    journal: list[qe.UpdateOperation] | None = None
    readers: int = 0  # reads using the shard now
    retired: str = ""  # "swapped" (close it, then delete its folder) or "closed" (close it)


@dataclass
class Job:
    """A builder's work: index one sealed part, merge indexed ones, or compact the lexical
    part ("index", "merge", "compact"), into `target`."""

    kind: str
    sources: list[str]
    target: str
    folder: Path  # where the builder writes the target shard
    copies: list[Path] = field(default_factory=list)  # the sources' folders, as copied


@dataclass
class BuildStatus:
    """The builds of a collection that failed in a row, and when the next is tried."""

    failures: int = 0
    error: str = ""
    failed_at: float | None = None  # wall clock
    retry_at: float = 0.0  # time.monotonic(); not before this

    def record(self) -> dict[str, Any]:
        return {"failures": self.failures, "error": self.error, "failed_at": self.failed_at}

    def to_dict(self) -> dict[str, Any]:
        """What `bienc info` and /metrics show."""
        wait = max(0.0, self.retry_at - time.monotonic()) if self.failures else 0.0
        return {"build_failures": self.failures, "last_build_error": self.error or None,
                "last_build_failed_at": self.failed_at, "next_build_retry_s": round(wait, 1)}


class BuildCancelled(Exception):
    """The collection was closed (dropped, or the store closed) while its build ran."""


def clear_leftovers(folder: Path, known: set[str], building: str | None, retired: set[str],
                    next_part: int) -> None:
    """Remove what a crash left under `folder`/parts/ (a builder's dot-folders, the target of
    a build the crash kept from being swapped in, parts swapped out, a new part not yet named:
    begun_unnamed); quarantine any other folder no manifest names: it may hold data (a
    manifest from a backup, a person's copy), so it is kept for a person to look at."""
    parts_dir = folder / PARTS_DIR
    for leftover in sorted(parts_dir.iterdir()) if parts_dir.is_dir() else []:
        name = leftover.name
        if name in known:
            continue
        if name.startswith(".") or name == building or name in retired or \
                begun_unnamed(leftover, next_part):
            shutil.rmtree(leftover, ignore_errors=True)
            continue
        aside = folder / QUARANTINE / f"{name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        make_dir(aside.parent)
        os.replace(leftover, aside)
        fsync_dir(parts_dir)
        fsync_dir(aside.parent)
        log.warning("%s is a folder no part of %s is named after: moved to %s and kept. "
                    "Delete it once you know it holds nothing you need.", leftover,
                    folder / MANIFEST, aside)


def begun_unnamed(path: Path, next_part: int) -> bool:
    """Whether `path` is a part begun after the manifest was last written (named p<n>, n at
    least the manifest's `next`) that holds no point: the new active part that a crash caught
    between making its folder and naming it. A part is named before it takes writes, so
    such a folder holds nothing; one that holds points is kept (quarantined)."""
    match = re.fullmatch(r"p(\d+)", path.name)
    if match is None or int(match.group(1)) < next_part:
        return False
    try:
        shard = qe.EdgeShard.load(str(path))
    except Exception:  # not a part, or a damaged one: a person looks at it
        return False
    try:
        return bool(shard.info().points_count == 0)
    finally:
        shard.close()


def copy_tree(source: Path, into: Path, cancelled: Callable[[], bool]) -> None:
    """Copy a part's folder, file by file, while writes go on (bienc.store.parts says why
    that is safe); BuildCancelled as soon as `cancelled()`."""
    for root, _, files in os.walk(source):
        folder = into / Path(root).relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            if cancelled():
                raise BuildCancelled(f"the collection of {source} was closed during a copy")
            try:
                shutil.copy2(os.path.join(root, name), folder / name)
            except FileNotFoundError:  # removed meanwhile: a WAL segment Edge let go
                continue
            crash_point("parts.copy")


def has_index(shard: qe.EdgeShard, field_name: str, schema: qe.PayloadSchemaType) -> bool:
    info = shard.info().payload_schema.get(field_name)
    return info is not None and info.data_type == schema
