"""A reindex's shared state in Redis: which collection is being rebuilt into which, its state,
the documents written meanwhile, and the writers in flight. Any process that reaches the
broker reads and writes it; workers do the rebuilding (bienc.workers.reindexing).

States, per collection name N (its physical collection S, the new one T); every change of
state is one Redis script that checks the state it leaves, so two processes never both make
one change:

    copying   workers copy every document of S into T, with T's encoding. Meanwhile writes to
              N go on as usual (to S, the alias's target), each writer registered while it
              writes and recording the documents it wrote or deleted as dirty.
    fencing   once every document is copied and the dirty ones copied again: writers hold
              their batches (a task retries shortly) while the last writers in flight finish,
              then every dirty document is copied once more, now that none is being written,
              and the alias N switches to T.
    switched  N serves T; writes go on, to T. S is dropped (`keep_old`: kept).
    aborting  a cancel, an abort or a failed copy: T is dropped, N keeps serving S.
    failed    a step stopped on an error nobody planned for (a Redis error while waiting for
              writers, an OSError removing files, a Qdrant 4xx on the alias), or its process
              died in `fencing`. Writes are never held in this state (those made where a
              fence will come again are marked dirty); `failed_in` says where it stopped.
              `bienc reindex N --resume` goes on from there, `--abort` drops T.
    (gone)    done or aborted: the record is deleted, the job says how it ended.

Order without clocks. Every writer of N registers, in the script that tells it the state,
with the next number of N's sequence (`bienc:seq:N`, INCR). Entering `copying` or `fencing`
takes a number of that sequence in the same way, so a writer numbered below it registered
before the change (and may not know of it: it is waited for), one numbered above it sees
the new state. Snapshots' holds take a number too. No time is compared to order anything.

Leases (bienc.queue.leases). The step running a reindex (its start, its finish, its abort)
holds `bienc:reindex-lease:N` and renews it; a second task for the same reindex finds it
held and tries again later. If the holder dies, the lease lapses after BIENC_LEASE_S (at
once on the embedded queue, whose holders all run on this machine): a writer that meets a
fence whose lease has lapsed turns it into `failed` and writes (marked), so a dead finisher
holds writes for a lease's length, not for the broker's visibility timeout; and the next
task for the reindex (its redelivered message, or `--resume`) takes the lease over. Writers
hold a lease of their own, renewed while they write: a writer whose process died stops
counting once it lapses, or at once on the embedded queue. A writer that outlived its lease
(a process frozen longer than it) learns so as it leaves, and its batch is written again.

Holds. A snapshot, and a restore at its switch, hold the writers of N the way the fence does,
without a reindex: while `bienc:holds:N` has a live hold, writers hold their batches, and the
holder waits for the writers numbered before its hold (bienc.snapshots). A hold expires
unless renewed, so a holder that dies releases it.

Keys: `bienc:reindex:N` (hash: job, state, failed_in, error, source, target, options, batch
counters, begin_seq, fence_seq), `:batches` (batch number -> the document ids to copy),
`:copied` (set of batch numbers), `:dirty` (set of document ids), `bienc:reindex-lease:N`
(the step's holder, with a TTL), `bienc:seq:N` (the sequence), `bienc:writers:N` (sorted
set: writer -> its number), `bienc:writer-leases:N` (sorted set: writer -> lease expiry),
`bienc:holds:N` (sorted set: holder -> expiry), and `bienc:reindex-job:J` -> N.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from bienc.config.errors import StoreUnavailableError
from bienc.queue.leases import holder_dead, new_holder, renewed
from bienc.queue.values import text

_PREFIX = "bienc:reindex:"
_LEASE = "bienc:reindex-lease:"
_BY_JOB = "bienc:reindex-job:"
_SEQ = "bienc:seq:"
_WRITERS = "bienc:writers:"
_WRITER_LEASES = "bienc:writer-leases:"
_HOLDS = "bienc:holds:"
State = Literal["copying", "fencing", "switched", "aborting", "failed"]
STATES: tuple[State, ...] = ("copying", "fencing", "switched", "aborting", "failed")
LAPSED = "the process running the reindex stopped (its lease lapsed) while writes were held"

# Redis's own clock, for leases only: when a claim lapses, never which of two came first.
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
# Register a writer with the next number of the name's sequence and a lease, then say how it
# writes: 'held' (a live hold), the state ('failed' answers 'copying' where a fence comes
# again, else nothing). A fence whose lease lapsed turns failed here: its finisher is dead.
# KEYS: state, writers, writer leases, holds, seq, lease. ARGV: writer, lease seconds.
_ENTER = _NOW + """
local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) > 0 then
  return 'held'
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'fencing' and redis.call('EXISTS', KEYS[6]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'failed_in', 'fencing', 'error', ARGV[3])
  state = 'failed'
end
if state == 'failed' then
  local was = redis.call('HGET', KEYS[1], 'failed_in')
  if was == 'copying' or was == 'fencing' then return 'copying' end
  return false
end
return state
"""
# A writer is done; 1 if it was still registered, 0 if its lease lapsed and a fence or a hold
# went on without it. KEYS: writers, writer leases. ARGV: writer.
_EXIT = """
local registered = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return registered
"""
# Renew a writer's lease, unless it lapsed already. KEYS: writer leases. ARGV: writer, seconds.
_RENEW_WRITER = _NOW + """
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""
# Writers numbered below ARGV[1], after dropping those whose lease lapsed (dead).
# KEYS: writers, writer leases.
_WRITERS_BEFORE = _NOW + """
for _, writer in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[1], writer)
  redis.call('ZREM', KEYS[2], writer)
end
return redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
"""
# Hold a name's writers for ARGV[2] seconds (again: renew); returns the hold's number in the
# name's sequence. KEYS: holds, seq. ARGV: holder, seconds.
_HOLD = _NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return redis.call('INCR', KEYS[2])
"""
# Register a reindex, in state copying, numbered in the name's sequence; 0 if one is there.
# KEYS: state, by job, seq. ARGV: job, options, name.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'job', ARGV[1], 'state', 'copying', 'options', ARGV[2],
           'begin_seq', redis.call('INCR', KEYS[3]))
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""
# Change the state of job ARGV[1]'s reindex from one of ARGV[2] (space-separated: a state,
# or failed:WHERE) to ARGV[3] ('': keep it), taking the lease for holder ARGV[4] ('': none)
# for ARGV[5] ms, unless another live holder has it (ARGV[6] = '1': whoever has it). Entering
# fencing takes a number of the sequence. Then sets the field/value pairs that follow.
# Returns {outcome, the state found}: ok, gone (no such reindex), state (not one of ARGV[2]),
# leased (held by another).
# KEYS: state, seq, lease.
_TRANSITION = """
if redis.call('HGET', KEYS[1], 'job') ~= ARGV[1] then return {'gone', ''} end
local state = redis.call('HGET', KEYS[1], 'state')
local found = state
if state == 'failed' then found = 'failed:' .. (redis.call('HGET', KEYS[1], 'failed_in') or '') end
local allowed = false
for wanted in string.gmatch(ARGV[2], '%S+') do
  if wanted == found or wanted == state then allowed = true end
end
if not allowed then return {'state', found} end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[4] and ARGV[6] ~= '1' then return {'leased', found} end
if ARGV[3] == 'failed' then
  if state ~= 'failed' then redis.call('HSET', KEYS[1], 'state', 'failed', 'failed_in', state) end
elseif ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'state', ARGV[3])
  redis.call('HDEL', KEYS[1], 'failed_in', 'error')
end
if ARGV[3] == 'fencing' then
  redis.call('HSET', KEYS[1], 'fence_seq', redis.call('INCR', KEYS[2]))
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5]) end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {'ok', found}
"""
# Renew (ARGV[2] ms) or, with '0', let go of the lease, if ARGV[1] still holds it. KEYS: lease.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
# Drop a lease whose holder is known dead (still that holder). KEYS: lease. ARGV: holder.
_DROP_DEAD_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Forget job ARGV[1]'s reindex, if holder ARGV[2] has the lease (or nobody has).
# KEYS: state, dirty, batches, copied, by job, lease.
_END = """
if redis.call('HGET', KEYS[1], 'job') ~= ARGV[1] then return 0 end
local holder = redis.call('GET', KEYS[6])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 1
"""
# Count batch ARGV[1] as copied (once, however often it runs); 1 when every batch of the plan
# is. KEYS: state, copied.
_COPIED = """
if ARGV[1] ~= '' then redis.call('SADD', KEYS[2], ARGV[1]) end
local batches = redis.call('HGET', KEYS[1], 'batches')
if not batches then return 0 end
return redis.call('SCARD', KEYS[2]) >= tonumber(batches) and 1 or 0
"""


class WriterLeaseLost(StoreUnavailableError):
    """A writer outlived its lease (its process froze longer than BIENC_LEASE_S): a fence or
    a hold went on without it, so its write may have missed them. Transient: write again."""


class LeaseLost(RuntimeError):
    """The step running a reindex lost its lease: another process may have taken over."""


@dataclass(frozen=True)
class Reindex:
    name: str
    job_id: str
    state: State
    options: dict[str, Any]  # what was asked: model, chunk_tokens, chunk_overlap, lexical, keep_old
    source: str | None  # physical collections, once the start task chose them
    target: str | None
    failed_in: State | None = None  # where a failed reindex stopped
    error: str | None = None  # why
    begin_seq: int = 0  # its numbers in the name's sequence (the module's docstring)
    fence_seq: int = 0
    leased: bool = False  # a live process runs one of its steps now
    abort_outcome: str | None = None  # aborting: how the job ends ("cancelled", "failed")
    abort_reason: str | None = None

    @property
    def at(self) -> str:
        """Its state as transitions name it: failed:WHERE for a failed one."""
        return f"failed:{self.failed_in}" if self.state == "failed" else self.state

    @property
    def where(self) -> str:
        """Its state as users read it: `failed (in fencing)`."""
        return f"failed (in {self.failed_in})" if self.state == "failed" else self.state

    @property
    def finishing(self) -> bool:
        """Past its copy: a cancel can no longer end it (an abort can)."""
        return self.state != "copying" and not (self.state == "failed" and self.failed_in == "copying")

    def way_out(self) -> str:
        """What a user can do about it, in its state."""
        if self.state == "failed":
            return (f"`bienc reindex {self.name} --resume` (POST /v1/collections/{self.name}/"
                    f"reindex/resume) goes on from there, `bienc reindex {self.name} --abort` "
                    f"(.../reindex/abort) drops its new collection")
        if self.state == "copying":
            return f"wait for it, or cancel it with `bienc jobs cancel {self.job_id}`"
        return (f"wait for it to end (a worker runs it; if that worker stops, "
                f"`bienc reindex {self.name} --resume` or `--abort` once its lease lapses)")

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "into": self.target, "state": self.state,
                **({"failed_in": self.failed_in, "error": self.error}
                   if self.state == "failed" else {})}


@dataclass(frozen=True)
class Transition:
    """What a change of state found: `ok`, `gone` (no such reindex), `state` (another state
    than the ones it leaves), `leased` (another live process runs a step)."""

    outcome: Literal["ok", "gone", "state", "leased"]
    found: str  # the state found (failed:WHERE for a failed one)

    def __bool__(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class Write:
    """How a writer of a collection goes about it (ReindexRegistry.writing)."""

    hold: bool  # a reindex is switching, or a snapshot is taken: hold the write, retry shortly
    mark: bool  # a reindex is copying: record what is written as dirty

    def __bool__(self) -> bool:
        return not self.hold


def _state(value: str | None) -> State | None:
    return next((state for state in STATES if state == value), None)


class ReindexRegistry:
    """`lease_s`: how long a lease lasts unrenewed (BIENC_LEASE_S). `local`: every holder runs
    on this machine (the embedded queue), so one whose process is gone is dead at once."""

    def __init__(self, client: redis.Redis, lease_s: float, local: bool = False):
        self._redis = client
        self._lease_s = lease_s
        self._local = local

    @property
    def lease_ms(self) -> int:
        return max(1, int(self._lease_s * 1000))

    # Lifecycle

    def begin(self, name: str, job_id: str, options: dict[str, Any]) -> bool:
        """Register a reindex of `name`, copying; False when one is already registered (one
        at a time per name, whatever its state)."""
        return bool(self._redis.eval(_BEGIN, 3, _PREFIX + name, _BY_JOB + job_id, _SEQ + name,
                                     job_id, json.dumps(options), name))

    def get(self, name: str) -> Reindex | None:
        pipe = self._redis.pipeline()
        pipe.hgetall(_PREFIX + name)
        pipe.get(_LEASE + name)
        raw, holder = pipe.execute()
        fields = {text(k): text(v) for k, v in raw.items()}
        state = _state(fields.get("state"))
        if state is None:
            return None
        return Reindex(
            name=name, job_id=fields["job"], state=state,
            options=json.loads(fields.get("options", "{}")),
            source=fields.get("source"), target=fields.get("target"),
            failed_in=_state(fields.get("failed_in")),
            error=fields.get("error"), begin_seq=int(fields.get("begin_seq", 0)),
            fence_seq=int(fields.get("fence_seq", 0)),
            leased=holder is not None and not (self._local and holder_dead(text(holder))),
            abort_outcome=fields.get("abort_outcome"), abort_reason=fields.get("abort_reason"))

    def of_job(self, job_id: str) -> Reindex | None:
        name = self._redis.get(_BY_JOB + job_id)
        reindex = self.get(text(name)) if name else None
        return reindex if reindex is not None and reindex.job_id == job_id else None

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
        """The documents to copy, batch by batch; none is queued yet, no finish claimed."""
        key = _PREFIX + name
        pipe = self._redis.pipeline()
        pipe.delete(key + ":batches", key + ":copied")
        if batches:
            pipe.hset(key + ":batches", mapping={str(n): json.dumps(list(ids))
                                                  for n, ids in enumerate(batches)})
        pipe.hset(key, mapping={"batches": len(batches), "queued": 0})
        pipe.hdel(key, "finishing")
        pipe.execute()

    def batch(self, name: str, batch_no: int) -> list[str]:
        raw = self._redis.hget(_PREFIX + name + ":batches", str(batch_no))
        return list(json.loads(raw)) if raw else []

    def take_next_batch(self, name: str) -> int | None:
        """The number of the next batch to queue, once each; None when all are queued."""
        key = _PREFIX + name
        taken = int(self._redis.hincrby(key, "queued", 1)) - 1
        return taken if taken < int(self._redis.hget(key, "batches") or 0) else None

    def planned(self, name: str) -> bool:
        """Whether the start task listed the documents to copy."""
        return bool(self._redis.hexists(_PREFIX + name, "batches"))

    def copied(self, name: str, batch_no: int | None = None) -> bool:
        """Count batch `batch_no` as copied (None: none); whether every batch of the plan is."""
        key = _PREFIX + name
        return bool(self._redis.eval(_COPIED, 2, key, key + ":copied",
                                     "" if batch_no is None else str(batch_no)))

    def batches_left(self, name: str) -> list[int]:
        """The batches of the plan not copied yet."""
        key = _PREFIX + name
        total = int(self._redis.hget(key, "batches") or 0)
        done = {int(text(n)) for n in cast(set[Any], self._redis.smembers(key + ":copied"))}
        return [n for n in range(total) if n not in done]

    def claim_finish(self, name: str) -> bool:
        """True once per plan: whoever gets it queues the finishing task."""
        return bool(self._redis.hsetnx(_PREFIX + name, "finishing", 1))

    def reset_finish(self, name: str) -> None:
        """Let the finishing task be queued again (a resume, when its message was lost)."""
        self._redis.hdel(_PREFIX + name, "finishing")

    def transition(self, reindex: Reindex, leaving: str, to: State | None, holder: str = "", *,
                   force: bool = False, fields: dict[str, str] | None = None) -> Transition:
        """Change the state of `reindex` (its job's, whatever this copy of it says) from one
        of `leaving` (space-separated: a state, or failed:WHERE) to `to` (None: keep it),
        taking its lease for `holder`, unless another live process holds it (`force`: even
        then), and set `fields`. A lease whose holder is known dead is dropped first."""
        self._drop_dead_lease(reindex.name)
        args: list[Any] = [reindex.job_id, leaving, to or "", holder, self.lease_ms,
                           "1" if force else "0"]
        for field, value in (fields or {}).items():
            args += [field, value]
        raw = self._redis.eval(_TRANSITION, 3, _PREFIX + reindex.name, _SEQ + reindex.name,
                               _LEASE + reindex.name, *args)
        outcome, found = (text(v) for v in cast(list[Any], raw))
        return Transition(cast(Any, outcome), found)

    def _drop_dead_lease(self, name: str) -> None:
        if not self._local:
            return
        holder = self._redis.get(_LEASE + name)
        if holder is not None and holder_dead(text(holder)):
            self._redis.eval(_DROP_DEAD_LEASE, 1, _LEASE + name, text(holder))

    @contextmanager
    def leased(self, reindex: Reindex, holder: str) -> Iterator[Lease]:
        """Inside: `holder` (which took the lease in a transition) renews it; let go after."""
        lease = Lease(self, reindex.name, holder)
        try:
            with renewed(lease.renew, self._lease_s / 3, f"the lease on the reindex of {reindex.name!r}"):
                yield lease
        finally:
            self._redis.eval(_RENEW_LEASE, 1, _LEASE + reindex.name, holder, "0")

    def renew_lease(self, name: str, holder: str) -> bool:
        return bool(self._redis.eval(_RENEW_LEASE, 1, _LEASE + name, holder, self.lease_ms))

    def end(self, reindex: Reindex, holder: str = "") -> bool:
        """Forget the reindex (if `holder` has its lease, or nobody has): from now on writes to
        its name go where the name resolves. False if it ended already, or another holds it."""
        key = _PREFIX + reindex.name
        return bool(self._redis.eval(_END, 6, key, key + ":dirty", key + ":batches", key + ":copied",
                                     _BY_JOB + reindex.job_id, _LEASE + reindex.name,
                                     reindex.job_id, holder))

    # Writers

    @contextmanager
    def writing(self, name: str) -> Iterator[Write]:
        """Around a write of collection `name` (an upsert or a delete through its name): the
        writer is registered while inside, its lease renewed, and told how to write (the
        module's docstring). WriterLeaseLost as it leaves if its lease lapsed meanwhile."""
        writers, leases = _WRITERS + name, _WRITER_LEASES + name
        writer = new_holder()
        state = self._enter(name, writer)
        try:
            with renewed(lambda: self._redis.eval(_RENEW_WRITER, 1, leases, writer, self._lease_s),
                         self._lease_s / 3, f"the writer lease on {name!r}"):
                yield Write(hold=state in ("fencing", "held"), mark=state == "copying")
        finally:
            registered = self._redis.eval(_EXIT, 2, writers, leases, writer)
        if not registered:
            raise WriterLeaseLost(
                f"this write of {name!r} outlived its lease (BIENC_LEASE_S={self._lease_s:g}): a "
                "reindex's fence or a snapshot may have gone on without it; it is written again")

    def _enter(self, name: str, writer: str) -> str | None:
        keys = (_PREFIX + name, _WRITERS + name, _WRITER_LEASES + name, _HOLDS + name, _SEQ + name,
                _LEASE + name)
        raw = self._redis.eval(_ENTER, len(keys), *keys, writer, self._lease_s, LAPSED)
        if raw is not None and text(raw) == "fencing" and self._local:
            self._drop_dead_lease(name)  # a finisher that died here: known at once
            raw = self._redis.eval(_ENTER, len(keys), *keys, writer, self._lease_s, LAPSED)
        return text(raw) if raw is not None else None

    def mark_dirty(self, name: str, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._redis.sadd(_PREFIX + name + ":dirty", *doc_ids)

    def pop_dirty(self, name: str, count: int) -> list[str]:
        popped: list[Any] = self._redis.spop(_PREFIX + name + ":dirty", count) or []  # type: ignore[assignment]
        return sorted(text(d) for d in popped)

    def hold(self, name: str, holder: str, ttl_s: float) -> int:
        """Hold the writers of `name` for `ttl_s` seconds (again: renew the hold); returns the
        hold's number, for writers_before."""
        return int(self._redis.eval(_HOLD, 2, _HOLDS + name, _SEQ + name, holder, repr(ttl_s)))

    def release(self, name: str, holder: str) -> None:
        self._redis.zrem(_HOLDS + name, holder)

    def writers_before(self, name: str, seq: int) -> int:
        """Writers of `name` still in flight that registered before number `seq` of its
        sequence (those whose lease lapsed, or, on this machine, whose process is gone, died:
        they are dropped)."""
        writers, leases = _WRITERS + name, _WRITER_LEASES + name
        if self._local:
            raw: list[Any] = self._redis.zrangebyscore(writers, "-inf", f"({seq}")  # type: ignore[assignment]
            dead = [w for w in map(text, raw) if holder_dead(w)]
            if dead:
                pipe = self._redis.pipeline()
                pipe.zrem(writers, *dead)
                pipe.zrem(leases, *dead)
                pipe.execute()
        return int(self._redis.eval(_WRITERS_BEFORE, 2, writers, leases, seq))


class Lease:
    """The lease of the step running a reindex, as its holder sees it."""

    def __init__(self, registry: ReindexRegistry, name: str, holder: str):
        self.registry, self.name, self.holder = registry, name, holder

    def renew(self) -> bool:
        return self.registry.renew_lease(self.name, self.holder)

    def check(self) -> None:
        """Renew now, or raise LeaseLost: before a step that must not run twice (the switch),
        so that a full lease's length is left for it."""
        if not self.renew():
            raise LeaseLost(f"the reindex of {self.name!r} was taken over by another process "
                            "(this one's lease lapsed)")
