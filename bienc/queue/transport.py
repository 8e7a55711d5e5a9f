"""kombu's Redis transport with a fetch that a killed worker cannot lose a message in.

Stock kombu takes a message with BRPOP and then, in a second command, records it as
delivered and unacknowledged (the `unacked` hash that a dead worker's messages are restored
from). A worker killed between the two, or stopped while a BRPOP reply is in flight (celery
#7950), loses the message for good: it is in no queue and in no record.

Here the take and the record are one Lua script (`CLAIM`), so a message is always in a queue
or in `unacked`. The script cannot block, so a worker waits on a doorbell list instead: each
publish, and each restore, pushes a token to it; a woken worker claims, and the claim leaves
a token behind while messages remain, so a backlog is drained without waiting. A worker also
claims when its wait times out (`brpop_timeout`, 1 s), which bounds the wait for a message
whose token was taken by a worker that found nothing or died.

A message kombu could not read (not its JSON, or a body it cannot decode) is moved to
`UNREADABLE_KEY` instead of being delivered, or lost. Deliveries to a consumer without
acknowledgements (Celery's replies) are not left recorded. Message priorities keep kombu's
meaning (the same keys, in the same order). `basic_get` (kombu's synchronous get, which no
bienc worker uses) is kombu's own. Used through `TRANSPORT`, the alias
`bienc.queue.celery_app` registers for the broker URL.
"""

# kombu's transport classes are untyped: calls into them are what this module is made of
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import logging
import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from bienc.config.crash import crash_point

log = logging.getLogger(__name__)
TRANSPORT = "bienc"  # the kombu alias of `Transport`
DOORBELL_KEY = "bienc:doorbell"
DOORBELL_TOKENS = 64  # at most this many waiting tokens: enough to wake every idle worker
UNREADABLE_KEY = "bienc:unreadable"  # messages found in a queue that are not kombu's JSON

# KEYS: unacked index, unacked hash, doorbell, unreadable list, then the queue keys in the
# order to try.
# ARGV: the time to record the delivery at (the client's clock, as kombu's own restore reads).
CLAIM = """
local function field(value)  -- a delivery field as kombu's own record spells it, or nil
  if type(value) == 'string' then return cjson.encode(value) end
  if value == nil or value == cjson.null then return 'null' end
  return nil
end
local function readable(item)  -- the tag and record of a message kombu wrote, or nil
  local read, message = pcall(cjson.decode, item)
  if not read or type(message) ~= 'table' then return nil end
  local properties = message['properties']
  if type(properties) ~= 'table' or type(properties['delivery_tag']) ~= 'string'
     or type(properties['delivery_info']) ~= 'table' then return nil end
  local info = properties['delivery_info']
  local exchange, routing_key = field(info['exchange']), field(info['routing_key'])
  if not exchange or not routing_key then return nil end
  return {properties['delivery_tag'], '[' .. item .. ',' .. exchange .. ',' .. routing_key .. ']'}
end
for i = 5, #KEYS do
  local item = redis.call('RPOP', KEYS[i])
  local record = item and readable(item)
  while item and not record do
    redis.call('LPUSH', KEYS[4], item)  -- kept aside for a person to read, never dropped
    item = redis.call('RPOP', KEYS[i])
    record = item and readable(item)
  end
  if item then
    redis.call('ZADD', KEYS[1], ARGV[1], record[1])
    redis.call('HSET', KEYS[2], record[1], record[2])
    for j = i, #KEYS do
      if redis.call('LLEN', KEYS[j]) > 0 then
        if redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], 1) end
        break
      end
    end
    return {KEYS[i], item, record[1]}
  end
end
return false
"""


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.claimed: set[str] = set()  # delivery tags whose record the claim already wrote

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.claimed:
            self.claimed.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # this process's bookkeeping only
        else:
            super().append(message, delivery_tag)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        crash_point("queue.restore")  # putting a message back (in the sweep: under its lock)
        super().restore_by_tag(tag, client, leftmost)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        if connection.client.transport_options.get("global_keyprefix"):
            raise ValueError("bienc's broker transport does not support global_keyprefix")
        super().__init__(connection, *args, **kwargs)
        self._claim_script: Any = None
        self._no_ack: set[str] = set()  # queues consumed without acknowledgement (replies)

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        no_ack = args[0] if args else kwargs.get("no_ack", False)
        (self._no_ack.add if no_ack else self._no_ack.discard)(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self._queue_cycle.consume(len(self.active_queues)):
            return
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]  # None in kombu's stub
        wait = (self.brpop_timeout if timeout is None else timeout) or 1
        self.client.connection.send_command("BRPOP", DOORBELL_KEY, wait)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:  # a token, or the wait's timeout: either way, claim
                self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()
        if self._closing:  # kombu reads the pending reply as it closes: take nothing new
            raise virtual.Empty()
        claimed = self.claim()
        if claimed is None:
            raise virtual.Empty()
        crash_point("queue.claimed")  # taken, not yet handed to the task
        key, item, tag = claimed
        queue = key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        payload = self._readable(item, tag)
        if payload is None:
            raise virtual.Empty()
        self.qos.claimed.add(tag)
        try:
            self.connection._deliver(payload, queue)
        finally:
            self.qos.claimed.discard(tag)  # appended by now, or never will be
            if queue in self._no_ack:  # kombu keeps no record of these deliveries
                self.qos._remove_from_indices(tag).execute()
        return True

    def claim(self) -> tuple[str, str, str] | None:
        """Take the next message of the consumed queues and record it as unacknowledged, in
        one step: (queue key, message, delivery tag); None when they are empty."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if not keys:
            return None
        with self.conn_or_acquire() as client:
            if self._claim_script is None:
                self._claim_script = client.register_script(CLAIM)
            found = self._claim_script(
                keys=[self.unacked_index_key, self.unacked_key, DOORBELL_KEY, UNREADABLE_KEY, *keys],
                args=[time.time()], client=client)
        if not found:
            return None
        key, item, tag = (bytes_to_str(part) for part in found)
        return key, item, tag

    def _readable(self, item: str, tag: str) -> dict[str, Any] | None:
        """The message as kombu will read it; one it cannot read (its JSON or body) is moved
        from its record to the unreadable list instead."""
        try:
            payload: dict[str, Any] = loads(item)
            self.Message(payload, channel=self)  # decodes the body, as delivery will
            return payload
        except Exception:  # anything kombu would raise on: it would do so at every delivery
            log.exception("a queued message cannot be read; kept in %s", UNREADABLE_KEY)
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()  # one transaction: in the record or in the list
            self.qos._remove_from_indices(tag, pipe).lpush(UNREADABLE_KEY, item).execute()
        return None

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        super()._put(queue, message, **kwargs)
        if batch is not None:  # sent with the batch's other commands
            batch.add("lpush", DOORBELL_KEY, 1)
            return
        try:  # the message is queued: a token lost here only delays it to a worker's next wait
            with self.conn_or_acquire() as client:
                self._ring(client.pipeline()).execute()
        except self.connection_errors:
            log.debug("the doorbell was not rung for a message queued in %s", queue, exc_info=True)

    def _do_restore_message(self, payload: Any, exchange: str, routing_key: str, pipe: Any,
                            leftmost: bool = False) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        self._ring(pipe)

    @staticmethod
    def _ring(pipe: Any) -> Any:
        return pipe.lpush(DOORBELL_KEY, 1).ltrim(DOORBELL_KEY, 0, DOORBELL_TOKENS - 1)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
