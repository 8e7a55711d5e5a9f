"""The webhook task: POST a finished job's status to its callback URL, a bounded number of
times with a growing wait between attempts, each attempt recorded on the job.

The delivery is claimed when the job ends (bienc.queue.jobs) and queued on the webhook queue.
Its attempts are counted in Redis, so that the bound holds across workers and crashes: a
worker that dies during an attempt leaves the message unacknowledged, another worker takes it
up (after BIENC_VISIBILITY_TIMEOUT_S; on the embedded queue, at the next start), and that
attempt counts as one of the bound.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from bienc.queue.celery_app import WEBHOOK_QUEUE, WEBHOOK_TASK, app
from bienc.queue.jobs import JobStatus
from bienc.queue.webhooks import WebhookError, deliver
from bienc.resources import get_resources
from bienc.workers.tasks import retry_delay_s

log = logging.getLogger(__name__)


def webhook_body(status: JobStatus) -> bytes:
    """What is POSTed: the job's status as GET /v1/jobs/{job_id} answers it, without the
    webhook's own delivery state."""
    fields: dict[str, Any] = {k: v for k, v in status.to_dict().items() if k != "webhook"}
    return json.dumps(fields, ensure_ascii=False).encode()


@app.task(  # type: ignore[untyped-decorator]
    name=WEBHOOK_TASK, acks_late=True, reject_on_worker_lost=True
)
def deliver_webhook(job_id: str, round_: int) -> None:
    """One attempt to deliver a finished job's webhook; the next one is queued with a delay
    while attempts remain (BIENC_WEBHOOK_MAX_ATTEMPTS). It is sent through this module's
    app, configured for the broker, as a new message (Task.retry would send it through the
    task's own app, which a worker thread of the embedded runtime does not configure), before
    this one is acknowledged."""
    resources = get_resources()
    settings, jobs = resources.settings, resources.jobs
    url = jobs.webhook_url(job_id, round_)
    status = jobs.get(job_id)
    if url is None or status is None:
        return  # delivered or given up already, replaced by a later end, or expired
    attempt = jobs.start_webhook_attempt(job_id, round_)
    if attempt == 0:
        return
    if attempt > settings.webhook_max_attempts:  # the last attempt's worker died
        earlier = status.webhook.last_error if status.webhook is not None else None
        jobs.note_webhook(job_id, round_, "failed",
                          earlier or "the worker stopped during the last attempt")
        return
    try:
        deliver(settings, url, webhook_body(status), f"{job_id}.{round_}")
    except WebhookError as exc:
        error = f"attempt {attempt}: {exc}"[:1000]
        if exc.permanent or attempt >= settings.webhook_max_attempts:
            log.warning("webhook of job %s to %s failed: %s", job_id, url, error)
            jobs.note_webhook(job_id, round_, "failed", error)
            return
        jobs.note_webhook(job_id, round_, "retrying", error)
        delay = retry_delay_s(attempt - 1, settings.webhook_backoff_s, settings.webhook_backoff_max_s)
        app.send_task(WEBHOOK_TASK, args=(job_id, round_), queue=WEBHOOK_QUEUE, countdown=delay)
        return
    jobs.note_webhook(job_id, round_, "delivered")
