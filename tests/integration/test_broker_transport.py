"""bienc's broker transport (bienc/queue/transport.py) on the real Redis, driven through
kombu as Celery drives it, without a model: a consumer gone after taking a message, and a
message nobody can read."""

from __future__ import annotations

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
    received: list[Any] = []
    with Consumer(connection.channel(), [QUEUE], accept=["json"],
                  callbacks=[lambda body, message: received.append((body, message))]):
        connection.drain_events(timeout=timeout_s)
    return received


def test_a_consumer_gone_after_taking_a_message_leaves_it_to_come_back(
        connection: Connection, redis_db: redis.Redis) -> None:
    connection.Producer().publish({"n": 1}, routing_key=QUEUE.routing_key, declare=[QUEUE])
    channel = connection.channel()
    Consumer(channel, [QUEUE], accept=["json"]).consume()
    key, message = channel.claim()  # the step a worker killed at queue.claimed had made
    assert key == QUEUE.name and message["properties"]["delivery_tag"]
    channel.close()  # gone without a word: nothing acknowledged, nothing restored by it
    assert redis_db.llen(QUEUE.name) == 0 and redis_db.hlen("unacked") == 1

    with _connection(visibility_timeout=0) as sweeper:  # a live worker's sweep, past the timeout
        sweeper.default_channel.qos.restore_visible(num=None)
        [(body, delivered)] = _receive(sweeper)
    assert body == {"n": 1} and delivered.delivery_info["redelivered"]


def test_a_message_nobody_can_read_is_kept_aside_and_the_next_one_delivered(
        connection: Connection, redis_db: redis.Redis) -> None:
    connection.Producer().publish({"n": 2}, routing_key=QUEUE.routing_key, declare=[QUEUE])
    for unreadable in (b"not json", b'{"properties": "none"}'):
        redis_db.rpush(QUEUE.name, unreadable)  # taken before the message
    [(body, message)] = _receive(connection)
    message.ack()
    assert body == {"n": 2}
    assert sorted(redis_db.lrange(UNREADABLE_KEY, 0, -1)) == [b"not json", b'{"properties": "none"}']
    assert redis_db.llen(QUEUE.name) == 0 and redis_db.hlen("unacked") == 0
