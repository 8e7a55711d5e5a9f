"""Ingest job state in Redis, readable from any process that reaches the broker.

A job's counts are derived from per-batch records, each written whole by the task that
indexed the batch. A redelivered batch overwrites its own record, so at-least-once delivery
never double-counts.

Keys of job J: `bienc:job:J` (meta), `:batches`, `:failures` and `:dead` (dead letters). The
first three are kept while J has documents queued, dead letters or is open, and expire
`ttl_s` after its last change once it has none: a job can always be followed to its end and
retried. Dead letters never expire; they are replayed or deleted.

A document that a newer version replaced before its own write (bienc.queue.versions) counts
as `superseded`: done, not failed.

A job is an ingest, a reindex or a delete (its `kind`). A reindex is open from its start until
its collection switched (or it failed or was cancelled, its `outcome`): before it knows how many
documents it copies and after the last one is copied, its counts alone would call it done. A
delete (by filter) is open until its last batch is recorded; its batches count the documents
they deleted as indexed (`deleted`) and those already gone as skipped.

A job may name a callback URL (its webhook, bienc.queue.webhooks). Every write that can end a
job also claims, in the same step, the webhook's delivery once the job is in a final state;
the one write that claims it hands the job to `notify` (which queues the delivery). Fields
`hook_*` of the meta record the delivery: its round (a job reopened by a dead-letter replay
ends again, and is delivered again), state, attempts and last error.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from bienc.queue.values import text

JobState = Literal["queued", "running", "retrying", "completed", "completed_with_errors", "failed",
                   "cancelled"]
JobKind = Literal["ingest", "reindex", "delete"]
JOB_KINDS: tuple[JobKind, ...] = ("ingest", "reindex", "delete")
_PREFIX = "bienc:job:"
_DEAD_JOBS = "bienc:dead-jobs"
_RECENT = "bienc:jobs"  # sorted set: job id -> created_at, for listing newest first
_CHANGES = "bienc:job-changed:"  # pub/sub channel per job (JobTracker.changes)
log = logging.getLogger(__name__)
WebhookState = Literal["waiting", "pending", "retrying", "delivered", "failed"]
# notify(job_id, round): queue the delivery of a job's webhook, claimed as it ended
Notify = Callable[[str, int], None]


@dataclass(frozen=True)
class BatchOutcome:
    """What one task did with its batch."""

    indexed: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    superseded: int = 0  # a newer version was written (or deleted) first: left as it was


@dataclass(frozen=True)
class WebhookDelivery:
    """Where a job's final status is POSTed, and how that went: `waiting` (the job has not
    ended), `pending` (queued), `retrying` (an attempt failed, another follows), `delivered`,
    or `failed` (attempts spent, or refused by the worker's settings)."""

    url: str
    state: WebhookState
    attempts: int
    last_error: str | None
    updated_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "attempts": self.attempts,
                "last_error": self.last_error, "updated_at": self.updated_at}


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    collection: str
    state: JobState
    total: int
    queued: int
    indexed: int
    skipped: int
    failed: int
    failures: dict[str, str]
    created_at: float
    updated_at: float
    last_error: str | None
    dead_letters: int = 0
    kind: JobKind = "ingest"
    open: bool = False  # work beyond the documents' counts remains (a reindex's switch)
    webhook: WebhookDelivery | None = None
    superseded: int = 0

    @property
    def finished(self) -> bool:
        return self.queued == 0 and not self.open

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "kind": self.kind, "collection": self.collection, "state": self.state,
            "total": self.total, "queued": self.queued, "indexed": self.indexed,
            "skipped": self.skipped, "superseded": self.superseded, "failed": self.failed,
            "failures": self.failures,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "last_error": self.last_error, "dead_letters": self.dead_letters,
            **({"deleted": self.indexed} if self.kind == "delete" else {}),
            "webhook": self.webhook.to_dict() if self.webhook is not None else None,
        }


def derive_state(total: int, indexed: int, skipped: int, failed: int, *, retrying: bool,
                 started: bool, open_: bool = False, outcome: str | None = None,
                 superseded: int = 0) -> JobState:
    """The job's state from its counts (pure). `started`: a worker has finished a batch;
    `open_`: work beyond the counts remains; `outcome`: how an open job ended early."""
    if outcome in ("failed", "cancelled"):
        return outcome  # type: ignore[return-value]
    done = indexed + skipped + failed + superseded
    if open_:
        return "retrying" if retrying else ("running" if started or done else "queued")
    if done < total:
        if retrying:
            return "retrying"
        return "running" if started else "queued"
    if failed == 0:
        return "completed"
    return "failed" if failed == total else "completed_with_errors"


# Atomically, beside a job's other writes: keep its record while documents are still queued,
# it has dead letters or it is open; else let it expire ttl seconds from now.
# KEYS: meta, batches, failures, dead. ARGV: ttl.
_REFRESH_TTL = """
local keep = redis.call('EXISTS', KEYS[4]) == 1 or redis.call('HGET', KEYS[1], 'open') == '1'
if not keep then
  local done = tonumber(redis.call('HGET', KEYS[1], 'rejected') or '0')
  for _, raw in ipairs(redis.call('HVALS', KEYS[2])) do
    local batch = cjson.decode(raw)
    done = done + batch.indexed + batch.skipped + batch.failed + (batch.superseded or 0)
  end
  keep = done < tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
end
for i = 1, 3 do
  if keep then redis.call('PERSIST', KEYS[i]) else redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return keep and 1 or 0
"""


# Beside a write that may end a job: claim its webhook once it is in a final state (an outcome,
# or closed with every document counted), unless claimed already for this end. Returns the
# delivery's round, or 0. KEYS: meta, batches. ARGV: now.
_CLAIM_WEBHOOK = """
if redis.call('HEXISTS', KEYS[1], 'callback_url') == 0
    or redis.call('HEXISTS', KEYS[1], 'hook_state') == 1 then
  return 0
end
if redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  if redis.call('HGET', KEYS[1], 'open') == '1' then return 0 end
  local done = tonumber(redis.call('HGET', KEYS[1], 'rejected') or '0')
  for _, raw in ipairs(redis.call('HVALS', KEYS[2])) do
    local batch = cjson.decode(raw)
    done = done + batch.indexed + batch.skipped + batch.failed + (batch.superseded or 0)
  end
  if done < tonumber(redis.call('HGET', KEYS[1], 'total') or '0') then return 0 end
end
redis.call('HSET', KEYS[1], 'hook_state', 'pending', 'hook_attempts', 0, 'hook_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'hook_error')
return redis.call('HINCRBY', KEYS[1], 'hook_round', 1)
"""
# The next attempt of a delivery: counts it and returns its number, or 0 when the delivery is
# over or another round replaced it. KEYS: meta. ARGV: round, now.
_START_ATTEMPT = """
local state = redis.call('HGET', KEYS[1], 'hook_state')
if redis.call('HGET', KEYS[1], 'hook_round') ~= ARGV[1] or not state
    or state == 'delivered' or state == 'failed' then
  return 0
end
redis.call('HSET', KEYS[1], 'hook_at', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'hook_attempts', 1)
"""
# Record how a delivery stands, if its round is still the job's. KEYS: meta.
# ARGV: round, state, error ('' for none), now.
_NOTE_WEBHOOK = """
if redis.call('HGET', KEYS[1], 'hook_round') ~= ARGV[1]
    or redis.call('HEXISTS', KEYS[1], 'hook_state') == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'hook_state', ARGV[2], 'hook_at', ARGV[4])
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 'hook_error')
else redis.call('HSET', KEYS[1], 'hook_error', ARGV[3]) end
return 1
"""


class JobTracker:
    """Creates jobs and records their progress. Every write is idempotent per batch.

    `notify`: called once each time a job with a callback URL ends (the module's docstring);
    without it, no webhook is claimed by this tracker's writes."""

    def __init__(self, client: redis.Redis, ttl_s: int, notify: Notify | None = None):
        self._redis = client
        self._ttl_s = ttl_s
        self._notify = notify

    def _refresh_ttl(self, pipe: Any, job_id: str) -> None:
        key = _PREFIX + job_id
        pipe.eval(_REFRESH_TTL, 4, key, key + ":batches", key + ":failures", key + ":dead",
                  self._ttl_s)

    def _execute(self, pipe: Any, job_id: str) -> list[Any]:
        """Run a pipeline of writes to a job, claiming the job's webhook in the same step
        when they end it; the claim's winner queues the delivery."""
        if self._notify is None:
            return cast(list[Any], pipe.execute())
        key = _PREFIX + job_id
        pipe.eval(_CLAIM_WEBHOOK, 2, key, key + ":batches", time.time())
        results = cast(list[Any], pipe.execute())
        if results[-1]:
            round_ = int(results[-1])
            try:
                self._notify(job_id, round_)
            except Exception as exc:  # the job's own writes are done; only its webhook fails
                log.exception("the webhook of job %s could not be queued", job_id)
                self.note_webhook(job_id, round_, "failed",
                                  f"could not be queued: {type(exc).__name__}: {exc}"[:500])
        return results[:-1]

    def create(self, collection: str, accepted: int, rejected: dict[str, str],
               kind: JobKind = "ingest", open_: bool = False,
               callback_url: str | None = None) -> str:
        """Register a job of `accepted` documents plus `rejected` records that never queue;
        `open_`: it stays open until `close()`, whatever its counts; `callback_url`: where its
        final status is POSTed once it ends (checked by the caller:
        bienc.queue.webhooks.check_callback_url)."""
        job_id = uuid.uuid4().hex
        now = time.time()
        key = _PREFIX + job_id
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={
            "collection": collection, "total": accepted + len(rejected),
            "rejected": len(rejected), "created_at": now, "updated_at": now, "kind": kind,
            "open": int(open_), **({"callback_url": callback_url} if callback_url else {}),
        })
        if rejected:
            pipe.hset(key + ":failures", mapping=cast(Any, rejected))
        self._refresh_ttl(pipe, job_id)
        pipe.zadd(_RECENT, {job_id: now})
        self._execute(pipe, job_id)
        return job_id

    def admit(self, job_id: str, accepted: int, rejected: dict[str, str]) -> None:
        """Give an open job (created with no documents, as an upload is, before its files are
        parsed) its `accepted` documents and the `rejected` records that never queue."""
        key = _PREFIX + job_id
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={"total": accepted + len(rejected), "rejected": len(rejected),
                                "updated_at": time.time()})
        if rejected:
            pipe.hset(key + ":failures", mapping=cast(Any, rejected))
        self._refresh_ttl(pipe, job_id)
        pipe.publish(_CHANGES + job_id, "meta")
        pipe.execute()

    def set_total(self, job_id: str, total: int) -> None:
        """How many documents the job counts (a reindex learns it once it has listed them)."""
        self._touch(job_id, {"total": total})

    def close(self, job_id: str, outcome: str | None = None, reason: str | None = None) -> None:
        """End an open job: done (outcome None), or "failed" / "cancelled" with `reason`."""
        fields: dict[str, Any] = {"open": 0}
        if outcome is not None:
            fields.update(outcome=outcome, reason=(reason or outcome)[:1000])
        self._touch(job_id, fields)

    def reopen(self, job_id: str) -> None:
        """Open an ended job again (a reindex resumed or aborted after it stopped): its outcome
        and reason are dropped, and its webhook will be delivered again when it ends again."""
        key = _PREFIX + job_id
        pipe = self._redis.pipeline()
        pipe.hdel(key, "outcome", "reason", "last_error", "hook_state", "hook_attempts",
                  "hook_error", "hook_at")
        pipe.hset(key, mapping={"open": 1, "updated_at": time.time()})
        self._refresh_ttl(pipe, job_id)
        pipe.publish(_CHANGES + job_id, "meta")
        pipe.execute()

    def _touch(self, job_id: str, fields: dict[str, Any]) -> None:
        key = _PREFIX + job_id
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping=cast(Any, {**fields, "updated_at": time.time()}))
        self._refresh_ttl(pipe, job_id)
        pipe.publish(_CHANGES + job_id, "meta")
        self._execute(pipe, job_id)

    def recent(self, offset: int = 0, limit: int = 20) -> tuple[list[JobStatus], int]:
        """Jobs newest first, `limit` from `offset`, and how many there are. Jobs whose record
        expired are dropped from the listing as they are met."""
        found: list[JobStatus] = []
        start = offset
        while len(found) < limit:
            ids = self._redis.zrevrange(_RECENT, start, start + limit - len(found) - 1)
            if not ids:
                break
            start += len(ids)
            for raw in ids:
                job_id = text(raw)
                status = self.get(job_id)
                if status is None:
                    self._redis.zrem(_RECENT, job_id)
                    start -= 1  # the listing moved up by one
                else:
                    found.append(status)
        return found, int(self._redis.zcard(_RECENT))

    def record_batch(self, job_id: str, batch_no: int, outcome: BatchOutcome,
                     doc_ids: Sequence[str] = ()) -> None:
        """Record what a batch did; a replayed batch replaces its earlier record, and reasons
        of its `doc_ids` that no longer failed are removed."""
        key = _PREFIX + job_id
        record = {"indexed": outcome.indexed, "skipped": outcome.skipped,
                  "failed": len(outcome.failures), "superseded": outcome.superseded}
        pipe = self._redis.pipeline()
        pipe.hset(key + ":batches", str(batch_no), json.dumps(record))
        resolved = [d for d in doc_ids if d not in outcome.failures]
        if resolved:
            pipe.hdel(key + ":failures", *resolved)
        if outcome.failures:
            pipe.hset(key + ":failures", mapping=cast(Any, outcome.failures))
        pipe.hset(key, "updated_at", time.time())
        pipe.hdel(key, "last_error")
        self._refresh_ttl(pipe, job_id)
        pipe.publish(_CHANGES + job_id, batch_no)
        self._execute(pipe, job_id)

    def dead_letter(self, job_id: str, batch_no: int, collection: str,
                    documents: list[dict[str, Any]], reason: str) -> None:
        """Keep a batch that exhausted its retries, and the job's record with it, without
        expiry, until it is replayed or deleted."""
        record = {"collection": collection, "documents": documents, "reason": reason}
        pipe = self._redis.pipeline()
        pipe.hset(_PREFIX + job_id + ":dead", str(batch_no), json.dumps(record))
        pipe.sadd(_DEAD_JOBS, job_id)
        self._refresh_ttl(pipe, job_id)
        pipe.execute()

    def dead_letters(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Dead-lettered batches of a job: batch number to {collection, documents, reason}."""
        raw = self._redis.hgetall(_PREFIX + job_id + ":dead")
        return {int(k): json.loads(v) for k, v in raw.items()}

    def jobs_with_dead_letters(self) -> list[str]:
        members = self._redis.smembers(_DEAD_JOBS)
        return sorted(text(m) for m in members)

    def reopen_batch(self, job_id: str, batch_no: int, doc_ids: Sequence[str]) -> None:
        """Count a batch as queued again (before it is re-sent), dropping its old outcome."""
        key = _PREFIX + job_id
        pipe = self._redis.pipeline()
        pipe.hdel(key + ":batches", str(batch_no))
        if doc_ids:
            pipe.hdel(key + ":failures", *doc_ids)
        pipe.hdel(key, "hook_state", "hook_attempts", "hook_error", "hook_at")  # it will end again
        pipe.hset(key, "updated_at", time.time())
        self._refresh_ttl(pipe, job_id)
        pipe.publish(_CHANGES + job_id, batch_no)
        pipe.execute()

    def forget_dead_letter(self, job_id: str, batch_no: int) -> None:
        """Drop a dead letter once its batch is queued again; with the job's last one, its
        record expires again like any other's."""
        self._forget_dead(job_id, [str(batch_no)])

    def delete_dead_letters(self, job_id: str) -> int:
        """Delete a job's dead letters without replaying them (their documents stay counted
        as failed); returns how many there were. The job's record then expires as usual."""
        batches = [text(b) for b in self._redis.hkeys(_PREFIX + job_id + ":dead")]
        if batches:
            self._forget_dead(job_id, batches)
        return len(batches)

    def _forget_dead(self, job_id: str, batches: Sequence[str]) -> None:
        key = _PREFIX + job_id + ":dead"
        pipe = self._redis.pipeline()
        pipe.hdel(key, *batches)
        self._refresh_ttl(pipe, job_id)
        pipe.execute()
        if not self._redis.exists(key):
            self._redis.srem(_DEAD_JOBS, job_id)

    def webhook_url(self, job_id: str, round_: int) -> str | None:
        """The callback URL of job `job_id` while its delivery `round_` is the current one and
        not over; else None (nothing left to deliver)."""
        raw: list[Any] = self._redis.hmget(_PREFIX + job_id, "callback_url", "hook_round",  # type: ignore[assignment]
                                           "hook_state")
        url, current, state = (v.decode() if isinstance(v, bytes) else v for v in raw)
        if url is None or current is None or int(current) != round_ \
                or state in (None, "delivered", "failed"):
            return None
        return str(url)

    def start_webhook_attempt(self, job_id: str, round_: int) -> int:
        """Count one more attempt of delivery `round_`; returns its number, or 0 when the
        delivery is over (delivered, failed, or replaced by a later round)."""
        return int(self._redis.eval(_START_ATTEMPT, 1, _PREFIX + job_id, round_, time.time()))

    def note_webhook(self, job_id: str, round_: int, state: WebhookState,
                     error: str | None = None) -> None:
        """Record how delivery `round_` of the job's webhook stands (ignored once another
        round replaced it)."""
        self._redis.eval(_NOTE_WEBHOOK, 1, _PREFIX + job_id, round_, state, error or "",
                         time.time())
        self._redis.publish(_CHANGES + job_id, "webhook")

    def note_retry(self, job_id: str, error: str) -> None:
        """Show a transient error on the job while its batch waits to be retried."""
        pipe = self._redis.pipeline()
        pipe.hset(_PREFIX + job_id, mapping={"last_error": error, "updated_at": time.time()})
        pipe.publish(_CHANGES + job_id, "retry")
        pipe.execute()

    @contextmanager
    def changes(self, job_id: str) -> Iterator[Callable[[float], bool]]:
        """Within the block, `changed(timeout_s)` returns True as soon as the job changes (a
        batch recorded or reopened, a retry noted; at once if one did since the last call),
        False after `timeout_s` without one. Lets a waiter return when the job finishes
        instead of at its next poll."""
        pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]

        def changed(timeout_s: float) -> bool:
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message["type"] == "message":
                    while pubsub.get_message(timeout=0) is not None:  # one wake-up per burst
                        pass
                    return True
            return False

        try:
            pubsub.subscribe(_CHANGES + job_id)
            # live once confirmed: from then on no change is missed (before, the caller's
            # fallback reads catch it)
            while (reply := pubsub.get_message(timeout=5)) is not None \
                    and reply["type"] != "subscribe":
                pass
            yield changed
        finally:
            pubsub.close()

    def get(self, job_id: str) -> JobStatus | None:
        key = _PREFIX + job_id
        pipe = self._redis.pipeline()
        pipe.hgetall(key)
        pipe.hvals(key + ":batches")
        pipe.hgetall(key + ":failures")
        pipe.hlen(key + ":dead")
        meta_raw, batches_raw, failures_raw, dead = pipe.execute()
        if not meta_raw:
            return None
        meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
        indexed = skipped = superseded = 0
        failed = int(meta.get("rejected", 0))
        for raw in batches_raw:
            record = json.loads(raw)
            indexed += record["indexed"]
            skipped += record["skipped"]
            failed += record["failed"]
            superseded += record.get("superseded", 0)  # absent: recorded by an older bienc
        total = int(meta["total"])
        last_error = meta.get("reason") or meta.get("last_error")
        open_ = meta.get("open") == "1"
        webhook = None
        if "callback_url" in meta:
            at = meta.get("hook_at")
            webhook = WebhookDelivery(
                url=meta["callback_url"], state=cast(WebhookState, meta.get("hook_state", "waiting")),
                attempts=int(meta.get("hook_attempts", 0)), last_error=meta.get("hook_error"),
                updated_at=float(at) if at else None)
        return JobStatus(
            job_id=job_id,
            collection=meta["collection"],
            state=derive_state(total, indexed, skipped, failed, retrying="last_error" in meta,
                               started=bool(batches_raw), open_=open_, outcome=meta.get("outcome"),
                               superseded=superseded),
            total=total,
            queued=max(total - indexed - skipped - failed - superseded, 0),
            indexed=indexed,
            skipped=skipped,
            failed=failed,
            failures={k.decode(): v.decode() for k, v in failures_raw.items()},
            created_at=float(meta["created_at"]),
            updated_at=float(meta["updated_at"]),
            last_error=last_error,
            dead_letters=int(dead),
            kind=next((k for k in JOB_KINDS if k == meta.get("kind")), "ingest"),
            open=open_,
            webhook=webhook,
            superseded=superseded,
        )
