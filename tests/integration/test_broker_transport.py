"""bienc's broker transport (bienc/queue/transport.py) on the real Redis, driven through
kombu as Celery drives it, without a model: a consumer gone after taking a message, and a
message nobody can read."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Queue

from bienc.config.settings import Settings
from bienc.queue.celery_app import configure_app
from bienc.queue.transport import UNREADABLE_KEY
from tests.conftest import TEST_REDIS_URL

QUEUE = Queue("bienc.test-transport", routing_key="bienc.test-transport")


def _connection(**options: Any) -> Connection:
    app = configure_app(Settings(_env_file=None, broker_url=TEST_REDIS_URL))  # type: ignore[call-arg]
    return app.connection_for_write(transport_options={**app.conf.broker_transport_options, **options})


@pytest.fixture
def connection(redis_db: redis.Redis) -> Iterator[Connection]:
    with _connection() as connection:
        yield connection


def _receive(connection: Connection, timeout_s: float = 10) -> list[Any]:
    """The first message (body, message) of QUEUE delivered within `timeout_s`, in a list."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout_s
    with Consumer(connection.channel(), [QUEUE], accept=["json"],
                  callbacks=[lambda body, message: received.append((body, message))]):
        while not received and time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                connection.drain_events(timeout=1)
    return received


def test_a_consumer_gone_after_taking_a_message_leaves_it_to_come_back(
        connection: Connection, redis_db: redis.Redis) -> None:
    connection.Producer().publish({"n": 1}, routing_key=QUEUE.routing_key, declare=[QUEUE])
    channel = connection.channel()
    Consumer(channel, [QUEUE], accept=["json"]).consume()
    key, message, tag = channel.claim()  # the step a worker killed at queue.claimed had made
    assert key == QUEUE.name and json.loads(message)["properties"]["delivery_tag"] == tag
    channel.close()  # gone without a word: nothing acknowledged, nothing restored by it
    assert redis_db.llen(QUEUE.name) == 0 and redis_db.hlen("unacked") == 1

    with _connection(visibility_timeout=0) as sweeper:  # a live worker's sweep, past the timeout
        sweeper.default_channel.qos.restore_visible(num=None)
        [(body, delivered)] = _receive(sweeper)
    assert body == {"n": 1} and delivered.delivery_info["redelivered"]


def test_a_message_nobody_can_read_is_kept_aside_and_the_next_one_delivered(
        connection: Connection, redis_db: redis.Redis) -> None:
    connection.Producer().publish({"n": 2}, routing_key=QUEUE.routing_key, declare=[QUEUE])
    bad_body = {"body": "%%% not base64", "properties": {
        "delivery_tag": "t-1", "body_encoding": "base64",
        "delivery_info": {"exchange": "", "routing_key": QUEUE.routing_key}}}
    unreadable = [b"not json", b'{"properties": "none"}', json.dumps(bad_body).encode()]
    for item in unreadable:
        redis_db.rpush(QUEUE.name, item)  # each taken before the message
    [(body, message)] = _receive(connection)
    message.ack()
    assert body == {"n": 2}
    assert sorted(redis_db.lrange(UNREADABLE_KEY, 0, -1)) == sorted(unreadable)
    assert redis_db.llen(QUEUE.name) == 0 and redis_db.hlen("unacked") == 0


def test_a_message_consumed_without_acknowledgement_leaves_no_record(
        connection: Connection, redis_db: redis.Redis) -> None:
    """Replies (Celery's control and inspect answers) are consumed with no_ack: a record of
    them would be put back in their queue by the sweep."""
    connection.Producer().publish({"reply": 1}, routing_key=QUEUE.routing_key, declare=[QUEUE])
    received: list[Any] = []
    with Consumer(connection.channel(), [QUEUE], accept=["json"], no_ack=True,
                  callbacks=[lambda body, message: received.append(body)]):
        connection.drain_events(timeout=10)
    assert received == [{"reply": 1}]
    assert redis_db.hlen("unacked") == 0 and redis_db.zcard("unacked_index") == 0
