"""Versions of documents: the newest write of a document wins, whatever order the writes
reach the store in (a redelivered batch, a retry after an outage, a replayed dead letter, two
workers on two jobs). The rules, which bienc.workers.indexing and the deletes apply:

Every accepted write of a document, an upsert or a delete, has a version, an integer:
    - the client's own (a document's `version` field; a delete's `version`), from 0 to
      MAX_VERSION (exact in JSON everywhere and in Redis's Lua), used as given, as with
      Elasticsearch's external versioning;
    - else the next number of the collection's sequence, taken when the write is accepted
      (`assign`): above every version accepted in the collection before it, the clients'
      included, and at least Redis's clock in microseconds. So a write without a version is
      newer than everything accepted before it, even after Redis lost its last second of
      writes (the sequence never goes back) or a snapshot restored versions from elsewhere.
A document stored by an older bienc, without a version, is at version 0.

An upsert of version v applies when v >= the stored document's version (equal: the same
write again, as a redelivered batch is; it is treated as before versions existed) and
v > the document's tombstone; else it is superseded: counted as such on its job, not written.
A delete of version v applies to a document when v >= its stored version, and leaves a
tombstone of v (the highest kept). Versions are compared as plain integers whichever their
source: mixing them for one document means a client version must exceed the last write
without one (a number of today's microseconds) to win.

Tombstones are kept `retention_s` (BIENC_TOMBSTONE_RETENTION_S) after the delete, at least,
and forgotten with their collection (`forget`); an older upsert arriving after that (a dead
letter replayed weeks later) brings the document back.

Why a lock. No store compares and writes in one step for us (a document is several points,
and a delete leaves none to compare with), so the comparison and the write must not be
interleaved with another writer's. Every write of a document therefore holds the document's
lock in Redis (`locked`) from before it reads the stored version and tombstone until its
write, stale-chunk cleanup included, is done: all the documents of a batch at once or none
(so two batches never wait for each other), under a lease renewed by a thread while held, so
that a writer that died releases them after LOCK_TTL_S. Redis is the queue's own server (the
embedded one, too), so this holds for any number of workers on any engine, provided a live
holder is not stalled longer than the lease. Keyed by the collection's name (not its physical
collection), so a reindex's copy and the live writers see the same locks and tombstones.

Keys, per collection name N: `bienc:version-seq:N` (the last number given), `bienc:tombstones:N`
(hash: document -> version), `bienc:tombstone-times:N` (sorted set: document -> time of its
last delete), `bienc:doc-lock:N:ID` (a lock's token).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from bienc.config.errors import DocumentsBusyError
from bienc.queue.leases import renewed

log = logging.getLogger(__name__)
MAX_VERSION = 2**53 - 1  # exact in JSON everywhere, and in the doubles of Redis's Lua
LOCK_TTL_S = 30.0  # a dead holder's documents are free again this long after its last renewal
LOCK_WAIT_S = 120.0  # how long a writer waits for documents another one holds
_SEQ = "bienc:version-seq:"
_TOMBSTONES = "bienc:tombstones:"
_TOMBSTONE_TIMES = "bienc:tombstone-times:"
_LOCK = "bienc:doc-lock:"
_NOW_US = ("local t = redis.call('TIME')\n"
           "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n")

# Give ARGV[2] numbers, above the last one given and ARGV[1] (the highest client version of the
# writes accepted with them), and at least now; returns the first. KEYS: seq.
_ASSIGN = _NOW_US + """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = math.max(last, tonumber(ARGV[1])) + 1
if now > first then first = now end
redis.call('SET', KEYS[1], string.format('%d', first + tonumber(ARGV[2]) - 1))
return first
"""
# Forget tombstones older than ARGV[1] seconds (a thousand at a time). KEYS: tombstones, times.
_PRUNE = """
local t = redis.call('TIME')
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', tonumber(t[1]) - tonumber(ARGV[1]),
                       'LIMIT', 0, 1000)
if #old > 0 then
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
"""
# Prune, then the tombstones of documents ARGV[2..]. KEYS: tombstones, times.
_READ = _PRUNE + """
return redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
"""
# Prune, then record tombstones: ARGV[2..] are document, version pairs (the highest version of
# a document is kept). KEYS: tombstones, times.
_RECORD = _PRUNE + """
for i = 2, #ARGV, 2 do
  local kept = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > kept then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('ZADD', KEYS[2], t[1], ARGV[i])
end
"""
# Take every lock KEYS for token ARGV[1] for ARGV[2] ms, or none (0) if one is held.
_LOCK_ALL = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
# Extend the locks KEYS still held by token ARGV[1] to ARGV[2] ms; returns how many.
_RENEW = """
local held = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held = held + 1
  end
end
return held
"""
# Release the locks KEYS held by token ARGV[1].
_UNLOCK = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
"""
_READ_CHUNK = 4096  # ids per script call: Lua's unpack has a limit of a few thousand values


def stored_version(head: Mapping[str, Any] | None) -> int:
    """The version of a stored document from its chunk 0's payload (0: stored without one)."""
    if head is None:
        return -1
    return int(head.get("version") or 0)


def applies(version: int, head: Mapping[str, Any] | None, tombstone: int | None) -> bool:
    """Whether an upsert of `version` may replace the stored document (`head`, its chunk 0's
    payload; None: absent) given its tombstone (None: none)."""
    return version >= stored_version(head) and (tombstone is None or version > tombstone)


class Versions:
    """The versions' state in Redis (the module's docstring), for collection names."""

    def __init__(self, client: redis.Redis, retention_s: int):
        self._redis = client
        self._retention_s = retention_s

    def assign(self, name: str, count: int, highest_given: int = 0) -> int:
        """The first of `count` consecutive new versions of collection `name` (the writes
        accepted with them give `highest_given` at most)."""
        return int(self._redis.eval(_ASSIGN, 1, _SEQ + name, highest_given, count))

    def tombstones(self, name: str, doc_ids: Sequence[str]) -> dict[str, int]:
        """The tombstones of those of `doc_ids` deleted within the retention."""
        keys = (_TOMBSTONES + name, _TOMBSTONE_TIMES + name)
        found: dict[str, int] = {}
        for at in range(0, len(doc_ids), _READ_CHUNK):
            chunk = list(doc_ids[at:at + _READ_CHUNK])
            raws = self._redis.eval(_READ, 2, *keys, self._retention_s, *chunk)
            found.update({d: int(raw) for d, raw in zip(chunk, raws, strict=True) if raw is not None})
        return found

    def record_tombstones(self, name: str, deleted: Mapping[str, int]) -> None:
        """Record that documents were deleted at these versions."""
        items = list(deleted.items())
        for at in range(0, len(items), _READ_CHUNK // 2):
            args = [value for pair in items[at:at + _READ_CHUNK // 2] for value in pair]
            self._redis.eval(_RECORD, 2, _TOMBSTONES + name, _TOMBSTONE_TIMES + name,
                             self._retention_s, *args)

    def forget(self, name: str) -> None:
        """Drop the tombstones of a collection that is gone (its sequence stays: versions given
        later stay above those of writes still in flight)."""
        self._redis.delete(_TOMBSTONES + name, _TOMBSTONE_TIMES + name)

    @contextmanager
    def locked(self, name: str, doc_ids: Sequence[str], wait_s: float = LOCK_WAIT_S
               ) -> Iterator[None]:
        """Hold the locks of `doc_ids` of collection `name` inside the block (all of them:
        waits while another writer holds any); DocumentsBusyError after `wait_s`."""
        keys = sorted({f"{_LOCK}{name}:{doc_id}" for doc_id in doc_ids})
        if not keys:
            yield
            return
        token, lease_ms = uuid.uuid4().hex, int(LOCK_TTL_S * 1000)
        deadline = time.monotonic() + wait_s
        while not self._redis.eval(_LOCK_ALL, len(keys), *keys, token, lease_ms):
            if time.monotonic() > deadline:
                raise DocumentsBusyError(
                    f"documents of collection {name!r} were held by another writer for over "
                    f"{wait_s:.0f} s; try again (a worker tries its batch again by itself)")
            time.sleep(random.uniform(0.01, 0.05))  # spread: two waiters do not retry in step

        def renew() -> None:
            held = int(self._redis.eval(_RENEW, len(keys), *keys, token, lease_ms))
            if held < len(keys):
                log.error("%d locks of documents expired while held (this process stalled over "
                          "%.0f s); another writer may have written them meanwhile",
                          len(keys) - held, LOCK_TTL_S)

        try:
            with renewed(renew, LOCK_TTL_S / 3, f"the locks of {len(keys)} documents"):
                yield
        finally:
            self._redis.eval(_UNLOCK, len(keys), *keys, token)

    def release_all_locks(self) -> int:
        """Drop every document lock; returns how many. Only where every writer is known dead:
        a process taking over the embedded queue, whose writers were all its predecessor."""
        released = 0
        for key in self._redis.scan_iter(match=_LOCK + "*", count=1000):
            released += int(self._redis.delete(key))
        return released
