"""Files of the embedded store that must survive a crash or a power cut as written, or not at all.

A rename is atomic but not durable: until the folder that holds the name is fsync'd, a power
cut can bring back the old name (or none), and until the file is fsync'd the new name can
point at empty or partial contents. So a manifest is written to a temporary file, fsync'd,
renamed over the old one, and then its folder is fsync'd; a new folder (a part, a
collection) is fsync'd into its parent before anything that refers to it is written.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

# how Edge (Rust) reports an operating system error: "... No space left on device (os error 28)"
_EDGE_OS_ERROR = re.compile(r"\(os error \d+\)|IO Error")


def is_io_error(exc: BaseException) -> bool:
    """Whether `exc` is the disk's failure (full, read-only, broken), not the data's."""
    return isinstance(exc, OSError) or bool(_EDGE_OS_ERROR.search(str(exc)))


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` (files created, renamed or removed there) durable."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`: a reader (or a restart after a crash or a power cut) sees
    the old contents or the new ones, whole, never a mix or nothing."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with tmp.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def make_dir(folder: Path) -> None:
    """Create `folder` (and its parents) and make its name durable in its parent."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for created in missing:
        fsync_dir(created.parent)


def fsync_tree(folder: Path) -> None:
    """Make every file and folder under `folder` durable (a built part before its rename)."""
    for root, _, files in os.walk(folder):
        for name in files:
            handle = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        fsync_dir(Path(root))
