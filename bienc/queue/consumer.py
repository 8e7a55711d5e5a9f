"""The embedded queue's one consumer: the lock that makes a process the worker of a data
folder's queue, and the recovery of batches a dead worker left unacknowledged.

A shared Redis has many workers and gets a dead worker's batches back after the visibility
timeout (BIENC_VISIBILITY_TIMEOUT_S), since a batch unacknowledged that long may still be in
a live worker's hands. The embedded queue has exactly one consumer, held by `sole_consumer`,
so a batch found unacknowledged when a process takes it over was left by a process that
died: it is restored at once, by kombu's own restore, run with a visibility timeout of zero.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery

from bienc.config.errors import ConfigError

log = logging.getLogger(__name__)
_LOCK_FILE = "queue.lock"


@contextmanager
def sole_consumer(data_dir: Path) -> Iterator[None]:
    """Hold the right to consume `data_dir`'s embedded queue, or raise ConfigError when
    another live process holds it. The operating system releases it if the process dies."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / _LOCK_FILE).open("ab") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise ConfigError(
                f"another bienc process (`bienc serve`, `bienc ingest` or `bienc demo`) is the "
                f"worker of the embedded queue in {data_dir}: wait for it or stop it, or set "
                "BIENC_BROKER_URL to a Redis server that several processes can share"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def restore_unacknowledged(app: Celery) -> int:
    """Put every batch that was delivered but not acknowledged back at the head of the queue;
    returns how many. Only for a queue whose consumers are all known dead (the embedded queue,
    under `sole_consumer`): a live worker's batch would be delivered twice."""
    options: dict[str, Any] = {**(app.conf.broker_transport_options or {}), "visibility_timeout": 0}
    with app.connection_for_write(transport_options=options) as connection:
        channel: Any = connection.default_channel
        client = channel.client
        left = int(client.zcard(channel.unacked_index_key))
        if left:
            # the sweep's lock, if a dead process held it, would make this restore a no-op
            client.delete(channel.unacked_mutex_key)
            channel.qos.restore_visible(start=0, num=None)
            restored = left - int(client.zcard(channel.unacked_index_key))
            log.warning("queued again %d batches that a stopped process left unfinished", restored)
            return restored
        return 0
