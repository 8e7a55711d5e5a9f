"""A reindex's shared state in Redis: which collection is being rebuilt into which, its phase,
the documents written meanwhile, and the writers in flight. Any process that reaches the
broker reads and writes it; workers do the rebuilding (bienc.workers.reindexing).

The protocol, per collection name N (its physical collection S, the new one T):

    copy     workers copy every document of S into T, with T's encoding. Meanwhile writes to
             N go on as usual (to S, the alias's target), each writer registered while it
             writes and recording the documents it wrote or deleted as dirty.
    fence    once every document is copied and the dirty ones copied again: writers hold
             their batches (a task retries shortly) while the last writers in flight finish,
             then every dirty document is copied once more, now that none is being written.
    (gone)   the alias N switches to T, S is dropped, the state is deleted: writes go to T.

So a document ingested or deleted during the rebuild is in T as S has it at the switch, and a
search of N reads S until the switch and T after it. Every writer of N, reindex or not, is
registered from before it looks at the phase until it is done, with the time it started, so
that a phase change can wait for the writers that started before it (the start waits for
those that could not know of the reindex; the fence, for those still copying). A writer
older than the broker's visibility timeout is taken for dead (its batch is redelivered).

Holds. A snapshot, and a restore at its switch, hold the writers of N the way the fence does,
without a reindex: while `bienc:holds:N` has a live hold, writers hold their batches, and the
holder waits for the writers that started before it (bienc.snapshots). A hold expires unless
renewed, so a holder that dies releases it.

Keys: `bienc:reindex:N` (hash: job, phase, source, target, options, batch counters),
`:batches` (batch number -> the document ids to copy), `:dirty` (set of document ids),
`bienc:writers:N` (sorted set: writer -> start time), `bienc:holds:N` (sorted set: holder ->
expiry time), and `bienc:reindex-job:J` -> N.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from bienc.queue.values import text

_PREFIX = "bienc:reindex:"
_BY_JOB = "bienc:reindex-job:"
_WRITERS = "bienc:writers:"
_HOLDS = "bienc:holds:"
Phase = Literal["copy", "fence"]

# Times are Redis's own clock, so that processes on several machines agree on an order.
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
# Register a writer, then say the phase (nil: no reindex; 'held': a live hold); one step, so
# that a phase change or a hold and the writers registered before it are seen in one order.
# KEYS: state, writers, holds. ARGV: writer.
_ENTER = _NOW + """
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) > 0 then
  return 'held'
end
return redis.call('HGET', KEYS[1], 'phase')
"""
# Hold a name's writers until ARGV[2] seconds from now (again: renew); returns when (as a
# string). KEYS: holds. ARGV: holder, seconds.
_HOLD = _NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return string.format('%.6f', now)
"""
# Change the phase; returns when (as a string). KEYS: state. ARGV: phase.
_SET_PHASE = _NOW + """
redis.call('HSET', KEYS[1], 'phase', ARGV[1], 'phase_at', tostring(now))
return tostring(now)
"""
# Writers that started before ARGV[1], dropping those older than ARGV[2] seconds (dead).
# KEYS: writers.
_WRITERS_BEFORE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
"""


@dataclass(frozen=True)
class Reindex:
    name: str
    job_id: str
    phase: Phase
    options: dict[str, Any]  # what was asked: model, chunk_tokens, chunk_overlap, lexical, keep_old
    source: str | None  # physical collections, once the start task chose them
    target: str | None
    cancelled: bool
    phase_at: float  # when the phase began


@dataclass(frozen=True)
class Write:
    """How a writer of a collection goes about it (ReindexRegistry.writing)."""

    hold: bool  # a reindex is switching, or a snapshot is taken: hold the write, retry shortly
    mark: bool  # a reindex is copying: record what is written as dirty

    def __bool__(self) -> bool:
        return not self.hold


class ReindexRegistry:
    def __init__(self, client: redis.Redis, writer_deadline_s: float):
        self._redis = client
        self._deadline_s = writer_deadline_s

    # Lifecycle

    def begin(self, name: str, job_id: str, options: dict[str, Any]) -> bool:
        """Register a reindex of `name`; False when one is already registered (one at a
        time per name)."""
        key = _PREFIX + name
        if not self._redis.hsetnx(key, "job", job_id):
            return False
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={"options": json.dumps(options)})
        pipe.set(_BY_JOB + job_id, name)
        pipe.execute()
        self._redis.eval(_SET_PHASE, 1, key, "copy")
        return True

    def get(self, name: str) -> Reindex | None:
        raw: dict[Any, Any] = self._redis.hgetall(_PREFIX + name)  # type: ignore[assignment]
        fields = {text(k): text(v) for k, v in raw.items()}
        if "phase" not in fields:
            return None
        return Reindex(name=name, job_id=fields["job"], phase=cast(Phase, fields["phase"]),
                       options=json.loads(fields.get("options", "{}")),
                       source=fields.get("source"), target=fields.get("target"),
                       cancelled=fields.get("cancelled") == "1",
                       phase_at=float(fields.get("phase_at", 0)))

    def of_job(self, job_id: str) -> Reindex | None:
        name = self._redis.get(_BY_JOB + job_id)
        return self.get(text(name)) if name else None

    def active(self) -> list[Reindex]:
        found = []
        for key in self._redis.scan_iter(match=_PREFIX + "*", count=100):
            name = text(key).removeprefix(_PREFIX)
            if ":" not in name and (reindex := self.get(name)) is not None:
                found.append(reindex)
        return sorted(found, key=lambda r: r.name)

    def set_plan(self, name: str, source: str, target: str) -> None:
        self._redis.hset(_PREFIX + name, mapping={"source": source, "target": target})

    def set_batches(self, name: str, batches: Sequence[Sequence[str]]) -> None:
        """The documents to copy, batch by batch; none is queued yet."""
        key = _PREFIX + name
        pipe = self._redis.pipeline()
        pipe.delete(key + ":batches")
        if batches:
            pipe.hset(key + ":batches", mapping={str(n): json.dumps(list(ids))
                                                  for n, ids in enumerate(batches)})
        pipe.hset(key, mapping={"batches": len(batches), "queued": 0})
        pipe.execute()

    def batch(self, name: str, batch_no: int) -> list[str]:
        raw = self._redis.hget(_PREFIX + name + ":batches", str(batch_no))
        return list(json.loads(raw)) if raw else []

    def take_next_batch(self, name: str) -> int | None:
        """The number of the next batch to queue, once each; None when all are queued."""
        key = _PREFIX + name
        taken = int(self._redis.hincrby(key, "queued", 1)) - 1
        return taken if taken < int(self._redis.hget(key, "batches") or 0) else None

    def cancel(self, name: str) -> None:
        self._redis.hset(_PREFIX + name, "cancelled", 1)

    def claim_finish(self, name: str) -> bool:
        """True once per reindex: whoever gets it queues the finishing task."""
        return bool(self._redis.hsetnx(_PREFIX + name, "finishing", 1))

    def end(self, reindex: Reindex) -> None:
        """Forget the reindex: from now on writes to its name go where the name resolves."""
        key = _PREFIX + reindex.name
        self._redis.delete(key, key + ":dirty", key + ":batches", _BY_JOB + reindex.job_id)

    # Writers

    @contextmanager
    def writing(self, name: str) -> Iterator[Write]:
        """Around a write of collection `name` (an upsert or a delete through its name): the
        writer is registered while inside, and told how to write (the module's docstring)."""
        writers = _WRITERS + name
        token = uuid.uuid4().hex
        raw = self._redis.eval(_ENTER, 3, _PREFIX + name, writers, _HOLDS + name, token)
        phase = text(raw) if raw is not None else None
        try:
            yield Write(hold=phase in ("fence", "held"), mark=phase == "copy")
        finally:
            self._redis.zrem(writers, token)

    def mark_dirty(self, name: str, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._redis.sadd(_PREFIX + name + ":dirty", *doc_ids)

    def pop_dirty(self, name: str, count: int) -> list[str]:
        popped: list[Any] = self._redis.spop(_PREFIX + name + ":dirty", count) or []  # type: ignore[assignment]
        return sorted(text(d) for d in popped)

    def fence(self, name: str) -> float:
        """Enter the fence; returns when it began."""
        return float(self._redis.eval(_SET_PHASE, 1, _PREFIX + name, "fence"))

    def hold(self, name: str, holder: str, ttl_s: float) -> float:
        """Hold the writers of `name` for `ttl_s` seconds (again: renew the hold); returns when
        the hold began, for writers_before."""
        return float(self._redis.eval(_HOLD, 1, _HOLDS + name, holder, repr(ttl_s)))

    def release(self, name: str, holder: str) -> None:
        self._redis.zrem(_HOLDS + name, holder)

    def writers_before(self, name: str, since: float) -> int:
        """Writers of `name` still in flight that started before `since` (and are younger
        than the deadline: older ones died)."""
        return int(self._redis.eval(_WRITERS_BEFORE, 1, _WRITERS + name, repr(since), self._deadline_s))
