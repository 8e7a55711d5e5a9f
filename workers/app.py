"""The Celery application: broker from settings, reliability options in one place."""

from __future__ import annotations

from celery import Celery

from core.broker import celery_broker_url, redis_url
from core.settings import Settings

INGEST_QUEUE = "bienc.ingest"
# A batch unacknowledged for this long is handed to another worker (Redis visibility
# timeout); it must exceed the longest batch, including its retries' waits.
VISIBILITY_TIMEOUT_S = 3600

app = Celery("bienc", include=["workers.tasks"])
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
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    worker_hijack_root_logger=False,
)


def configure_app(settings: Settings) -> Celery:
    """Point the app at the configured broker (starting the embedded Redis if none is set)."""
    app.conf.broker_url = celery_broker_url(redis_url(settings))
    app.conf.worker_concurrency = settings.worker_concurrency
    return app
