"""The Celery application: broker from settings, reliability options in one place."""

from __future__ import annotations

import ssl

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from bienc.config.settings import Settings
from bienc.queue.broker import celery_broker_url, redis_url
from bienc.queue.transport import TRANSPORT

TRANSPORT_ALIASES[TRANSPORT] = "bienc.queue.transport:Transport"

INGEST_QUEUE = "bienc.ingest"
INDEX_BATCH_TASK = "bienc.index_batch"  # bienc.workers.tasks.index_batch
REINDEX_START_TASK = "bienc.reindex_start"  # and the tasks beside it
REINDEX_BATCH_TASK = "bienc.reindex_batch"
REINDEX_FINISH_TASK = "bienc.reindex_finish"
DELETE_TASK = "bienc.delete_matching"  # bienc.workers.tasks.delete_matching
# Webhooks have a queue of their own, so that a job's webhook never waits behind the batches
# of ingests queued after it ended; every worker consumes both.
WEBHOOK_QUEUE = "bienc.webhooks"
WEBHOOK_TASK = "bienc.deliver_webhook"  # bienc.workers.webhooks.deliver_webhook
WORKER_QUEUES = (INGEST_QUEUE, WEBHOOK_QUEUE)
UNACKED_MUTEX_EXPIRE_S = 10

app = Celery("bienc", include=["bienc.workers.tasks", "bienc.workers.webhooks"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=INGEST_QUEUE,
    # At-least-once: a batch is acknowledged only after its points are written, and a batch
    # whose worker died is redelivered. Safe because indexing a batch is idempotent.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def configure_app(settings: Settings) -> Celery:
    """Point the app at the configured broker (starting the embedded Redis if none is set)."""
    url = redis_url(settings)
    app.conf.broker_url = celery_broker_url(url)
    app.conf.broker_transport = TRANSPORT  # kombu's Redis transport, with a fetch that loses nothing
    # rediss: TLS, verifying the server against the system's CAs
    app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED} if url.startswith("rediss://") else None
    # The process's one app is the default one: a task that retries itself (a write held by
    # a reindex or a snapshot, a store outage) sends its retry through the app it resolves,
    # which, in a thread that never chose one (the in-process worker's), is the default app;
    # left unconfigured, that one publishes to amqp://localhost, fails, and the batch is
    # rejected for good.
    app.set_default()
    app.conf.worker_concurrency = settings.worker_concurrency
    # A batch unacknowledged for this long is handed to another worker (a dead worker's
    # batches come back this way); it must exceed the longest batch and retry wait.
    # kombu sweeps for such batches every interval x throttle seconds (100 s by default);
    # sweeping at a tenth of the timeout bounds the wait near the timeout itself.
    app.conf.broker_transport_options = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
        "unacked_restore_throttle": 1,
        # The sweep runs under a lock that a worker killed inside it holds until it expires
        # (kombu's default, 300 s, would hold back every dead worker's batches that long).
        # A sweep takes milliseconds, and two at once are safe: each restore is a transaction
        # that puts a message back only if it is still unacknowledged.
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE_S,
    }
    return app
