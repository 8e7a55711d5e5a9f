"""Files uploaded to the API: checked against the limits, named, staged on disk for parsing."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path as FsPath
from pathlib import PurePosixPath
from typing import Any

from fastapi import HTTPException
from starlette.datastructures import UploadFile

from bienc.config.errors import (
    InvalidInputError,
)
from bienc.ingest.documents import MAX_ID_CHARS, json_problem
from bienc.ingest.files import FileEntry

UPLOAD_FIELD = "files"
CALLBACK_FIELD = "callback_url"  # optional text part: the job's webhook (bienc.queue.webhooks)


UPLOAD_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": [UPLOAD_FIELD],
        "properties": {UPLOAD_FIELD: {"type": "array", "items": {"type": "string",
                                                                  "format": "binary"}},
                       CALLBACK_FIELD: {"type": "string", "description": "the job's webhook URL"}}}}}}}


def staging_dir(parent: Any) -> str:
    return tempfile.mkdtemp(prefix="bienc-upload-", dir=parent)


def upload_id(filename: str | None) -> str:
    """A document id from an uploaded file's name (its path, where the client sends one);
    InvalidInputError for none. The name is an id only: files are stored under names made
    here, never under this one."""
    doc_id = (filename or "").replace("\\", "/").lstrip("/")
    if not doc_id.strip():
        raise InvalidInputError(f"every '{UPLOAD_FIELD}' part needs a filename (its document id)")
    if len(doc_id) > MAX_ID_CHARS or json_problem(doc_id):
        raise InvalidInputError(f"file name {doc_id[:80]!r} is not a valid document id (at most "
                                f"{MAX_ID_CHARS} characters of valid Unicode)")
    return doc_id


def checked_uploads(items: Iterable[tuple[str, Any]], max_file_bytes: int) -> list[UploadFile]:
    """The uploaded files of a form, checked: at least one, each within the per-file limit."""
    uploads = []
    for name, value in items:
        if not isinstance(value, UploadFile):
            continue
        if name != UPLOAD_FIELD:
            raise InvalidInputError(f"unknown form field {name!r}: send each file as a part named "
                                    f"'{UPLOAD_FIELD}'")
        doc_id = upload_id(value.filename)
        if value.size is not None and value.size > max_file_bytes:
            raise HTTPException(413, f"file {doc_id!r} is {value.size} bytes, over the per-file "
                                     f"limit of {max_file_bytes} (setting max_file_bytes, "
                                     "BIENC_MAX_FILE_BYTES)")
        uploads.append(value)
    if not uploads:
        raise InvalidInputError(f"no files: send one or more parts named '{UPLOAD_FIELD}'")
    return uploads


def stage_upload(upload: UploadFile, staging: str, number: int) -> FileEntry:
    """Copy an upload out of the request (whose files close with it) into the staging folder,
    under a name made here that keeps only the suffix (formats are told by it)."""
    doc_id = upload_id(upload.filename)
    suffix = re.sub(r"[^A-Za-z0-9.]", "", PurePosixPath(doc_id).suffix)[:16]
    target = PurePosixPath(staging) / f"{number:06d}{suffix}"
    upload.file.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)
    return FileEntry(doc_id, FsPath(str(target)), FsPath(str(target)).stat().st_size)
