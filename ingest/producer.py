"""Accepting documents: validate, de-duplicate, register a job, enqueue batches; then wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from bienc.config.errors import InvalidInputError
from bienc.ingest.documents import Document
from bienc.ingest.readers import BadRecord, Item, Unchanged
from bienc.queue.jobs import BatchOutcome, JobStatus, JobTracker
from bienc.queue.versions import Versions
from bienc.store.record import invalid_name, is_collection_name

# enqueue(job_id, collection, batch_no, documents as messages)
Enqueue = Callable[[str, str, int, list[dict[str, Any]]], None]


def validate_collection_name(name: str, physical: bool = False) -> str:
    """`name`, or InvalidInputError. `physical`: a physical collection's name (NAME@N) is
    accepted too, as where a kept collection is read or dropped."""
    if not is_collection_name(name, physical):
        raise invalid_name(name, " (or NAME@N for a kept physical collection)" if physical else "")
    return name


@dataclass
class Submission:
    job_id: str
    accepted: int
    rejected: list[BadRecord] = field(default_factory=list)
    duplicates: int = 0
    unchanged: int = 0  # files not parsed again: counted as skipped on the job


@dataclass
class Collected:
    documents: list[Document]
    bad: list[BadRecord]
    duplicates: int
    unchanged: list[str] = field(default_factory=list)


def collect(items: Iterable[Item]) -> Collected:
    """Valid documents (the last occurrence of each id wins, in order of that occurrence),
    bad records, how many earlier occurrences of repeated ids were dropped, and the ids of
    unchanged files."""
    latest: dict[str, Document] = {}
    bad: list[BadRecord] = []
    unchanged: list[str] = []
    duplicates = 0
    for item in items:
        if isinstance(item, BadRecord):
            bad.append(item)
            continue
        if isinstance(item, Unchanged):
            unchanged.append(item.doc_id)
            continue
        if item.id in latest:
            duplicates += 1
            del latest[item.id]  # re-insert so order follows the winning occurrence
        latest[item.id] = item
    return Collected(list(latest.values()), bad, duplicates, unchanged)


def by_length(documents: list[Document]) -> list[Document]:
    """Longest first. Batches cut from this order hold documents of about the same length, so a
    worker's forward batches pad less than in file order (1,000 SciFact documents in one
    window, tasks of 64: 2.8% of the padded tokens in this order, as bench/throughput.py
    --sweep-task-size prints; 6.3% in file order, measured once outside the bench). Documents
    are independent and repeated ids are resolved before this, so the order changes nothing
    else."""
    return sorted(documents, key=lambda d: -(len(d.text) + len(d.title or "")))


def batched(documents: list[Document], size: int, max_chars: int | None = None
            ) -> Iterator[list[Document]]:
    """Batches of at most `size` documents and, where given, about `max_chars` characters of
    text (a batch holds at least one document), so that a task message stays small however
    long the documents (a 500-page manual's text is one document)."""
    batch: list[Document] = []
    chars = 0
    for document in documents:
        length = len(document.text) + len(document.title or "")
        if batch and (len(batch) == size or (max_chars is not None and chars + length > max_chars)):
            yield batch
            batch, chars = [], 0
        batch.append(document)
        chars += length
    if batch:
        yield batch


UNCHANGED_BATCH = -1  # the job's record of files not parsed again (no task has this number)


def versioned(documents: list[Document], collection: str, versions: Versions) -> list[Document]:
    """`documents` with their versions: the client's, else the collection's next numbers, in
    the order given (bienc.queue.versions), taken in one step when they are accepted."""
    unversioned = [d for d in documents if d.version is None]
    highest = max((d.version for d in documents if d.version is not None), default=0)
    first = versions.assign(collection, len(unversioned), highest)
    given = {d.id: first + n for n, d in enumerate(unversioned)}
    return [replace(d, version=given[d.id]) if d.version is None else d for d in documents]


def submit(items: Iterable[Item], collection: str, *, jobs: JobTracker, enqueue: Enqueue,
           versions: Versions, batch_size: int, batch_chars: int | None = None,
           job_id: str | None = None, callback_url: str | None = None) -> Submission:
    """Register a job for `items` and enqueue its batches; returns once all are queued.

    Bad records are part of the job as failures named by their line (or file), and do not
    stop the rest; unchanged files count as skipped. Each document gets its version (`versioned`)
    before anything is queued. If the broker fails part-way, the batches
    not queued are marked failed on the job (so its counts stay true) and the error
    propagates. `job_id`: an open job (JobTracker.create(open_=True)) that these items fill
    and that is closed once they are queued, instead of a new one. `callback_url`: the new
    job's webhook (bienc.queue.webhooks), checked by the caller.
    """
    validate_collection_name(collection)
    found = collect(items)
    documents = by_length(versioned(found.documents, collection, versions))
    rejected = {r.where: r.reason for r in found.bad}
    total = len(documents) + len(found.unchanged)
    if job_id is None:
        job_id = jobs.create(collection, total, rejected, callback_url=callback_url)
    else:
        jobs.admit(job_id, total, rejected)
    if found.unchanged:
        jobs.record_batch(job_id, UNCHANGED_BATCH, BatchOutcome(skipped=len(found.unchanged)))
    batches = list(batched(documents, batch_size, batch_chars))
    try:
        for batch_no, batch in enumerate(batches):
            try:
                enqueue(job_id, collection, batch_no, [d.to_message() for d in batch])
            except Exception as exc:
                reason = f"not queued: broker error {type(exc).__name__}: {exc}"[:500]
                for later_no, later in enumerate(batches):
                    if later_no >= batch_no:
                        jobs.record_batch(job_id, later_no,
                                          BatchOutcome(failures={d.id: reason for d in later}))
                raise
    finally:
        jobs.close(job_id)
    return Submission(job_id, len(documents), found.bad, found.duplicates, len(found.unchanged))


def replay_dead_letters(jobs: JobTracker, job_id: str, enqueue: Enqueue) -> int:
    """Queue a job's dead-lettered batches again; returns how many. Each dead letter is
    dropped only after its batch is queued, so a broker error loses nothing."""
    letters = jobs.dead_letters(job_id)
    for batch_no, letter in sorted(letters.items()):
        doc_ids = [d["id"] for d in letter["documents"]]
        jobs.reopen_batch(job_id, batch_no, doc_ids)
        try:
            enqueue(job_id, letter["collection"], batch_no, letter["documents"])
        except Exception:
            jobs.record_batch(job_id, batch_no,
                              BatchOutcome(failures=dict.fromkeys(doc_ids, letter["reason"])))
            raise
        jobs.forget_dead_letter(job_id, batch_no)
    return len(letters)


def wait_for_job(jobs: JobTracker, job_id: str, *, timeout_s: float | None = None,
                 on_progress: Callable[[JobStatus], None] | None = None,
                 poll_s: float = 2.0) -> JobStatus:
    """Wait until every document of the job is indexed, skipped or failed. Wakes on each
    batch a worker records (Redis pub/sub), and reads the job at least every `poll_s` in case
    a notice was missed."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with jobs.changes(job_id) as changed:  # subscribed before the first read
        while True:
            status = jobs.get(job_id)
            if status is None:
                raise InvalidInputError(f"job {job_id} is unknown (expired or never created)")
            if on_progress is not None:
                on_progress(status)
            if status.finished:
                return status
            wait_s = poll_s
            if deadline is not None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still has {status.queued} documents queued")
                wait_s = min(wait_s, max(0.0, deadline - time.monotonic()) + 0.01)
            changed(wait_s)
