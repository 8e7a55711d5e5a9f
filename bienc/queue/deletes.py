"""A delete-by-filter job's plan in Redis, so that whichever worker runs (or runs again) its task
deletes the same documents and counts them once (bienc.workers.deleting does the work).

The plan is fixed once: the ids of the documents the filter matched when the first task ran,
cut into batches. A batch's count (the documents it found, so deleted) is kept from its first
try, so a batch run again after its worker died counts as it did the first time. Batches are
marked done once recorded on the job; the task skips those.

The delete's version (bienc.queue.versions) is fixed when it is accepted, the client's or the
collection's next one.

Keys of job J: `bienc:delete:J` (hash: collection, filter (JSON), version, batches once planned),
`:batches` (batch number -> document ids, JSON), `:counts` (batch number -> documents found)
and `:done` (set of batch numbers). They live until the job ends (`end`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bienc.queue.values import text

_PREFIX = "bienc:delete:"
# Plan once: the first plan written stays. KEYS: plan, batches. ARGV: the batches (JSON list).
_PLAN = """
if redis.call('HEXISTS', KEYS[1], 'batches') == 1 then return 0 end
local batches = cjson.decode(ARGV[1])
for number, ids in ipairs(batches) do
  redis.call('HSET', KEYS[2], tostring(number - 1), cjson.encode(ids))
end
redis.call('HSET', KEYS[1], 'batches', #batches)
return 1
"""


@dataclass(frozen=True)
class DeletePlan:
    job_id: str
    collection: str
    filter: dict[str, Any]  # as the request gave it (validated then)
    batches: int | None  # None until the first task planned it
    version: int | None = None  # None: accepted by an older bienc (DeletePlans.version_once)


class DeletePlans:
    def __init__(self, client: redis.Redis):
        self._redis = client

    def create(self, job_id: str, collection: str, raw_filter: dict[str, Any],
               version: int) -> None:
        self._redis.hset(_PREFIX + job_id, mapping={"collection": collection,
                                                     "filter": json.dumps(raw_filter),
                                                     "version": version})

    def version_once(self, job_id: str, version: int) -> int:
        """The delete's version: `version`, unless it has one already (then that one)."""
        pipe = self._redis.pipeline()
        pipe.hsetnx(_PREFIX + job_id, "version", version)
        pipe.hget(_PREFIX + job_id, "version")
        return int(pipe.execute()[1])

    def get(self, job_id: str) -> DeletePlan | None:
        raw: dict[Any, Any] = self._redis.hgetall(_PREFIX + job_id)  # type: ignore[assignment]
        fields = {text(k): text(v) for k, v in raw.items()}
        if "collection" not in fields:
            return None
        return DeletePlan(job_id, fields["collection"], json.loads(fields["filter"]),
                          int(fields["batches"]) if "batches" in fields else None,
                          int(fields["version"]) if "version" in fields else None)

    def plan(self, job_id: str, batches: Sequence[Sequence[str]]) -> None:
        """Fix the batches, unless a plan is fixed already (then that one stands)."""
        key = _PREFIX + job_id
        self._redis.eval(_PLAN, 2, key, key + ":batches", json.dumps([list(b) for b in batches]))

    def batch(self, job_id: str, batch_no: int) -> list[str]:
        raw = self._redis.hget(_PREFIX + job_id + ":batches", str(batch_no))
        return list(json.loads(raw)) if raw else []

    def total(self, job_id: str) -> int:
        """Documents in the plan."""
        raws: list[Any] = self._redis.hvals(_PREFIX + job_id + ":batches")  # type: ignore[assignment]
        return sum(len(json.loads(raw)) for raw in raws)

    def count_once(self, job_id: str, batch_no: int, found: int) -> int:
        """The batch's count from its first try (`found`, if this is it)."""
        key = _PREFIX + job_id + ":counts"
        pipe = self._redis.pipeline()
        pipe.hsetnx(key, str(batch_no), found)
        pipe.hget(key, str(batch_no))
        return int(pipe.execute()[1])

    def mark_done(self, job_id: str, batch_no: int) -> None:
        self._redis.sadd(_PREFIX + job_id + ":done", batch_no)

    def done(self, job_id: str) -> set[int]:
        members: set[Any] = self._redis.smembers(_PREFIX + job_id + ":done")  # type: ignore[assignment]
        return {int(m) for m in members}

    def end(self, job_id: str) -> None:
        key = _PREFIX + job_id
        self._redis.delete(key, key + ":batches", key + ":counts", key + ":done")
