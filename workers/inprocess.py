"""A Celery worker running in a thread of the current process (the embedded default)."""

from __future__ import annotations

import threading
from types import TracebackType

from celery import Celery
from celery.worker import WorkController
from celery.worker import state as worker_state

from bienc.queue.celery_app import WORKER_QUEUES


class _ReadyWorkController(WorkController):  # type: ignore[misc]
    def __init__(self, *args: object, **kwargs: object) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        self.ready.set()


class InProcessWorker:
    """Consumes the broker's queue in a background thread with the solo pool.

    Tasks run in that thread and share this process's encoder and store. Use as a context
    manager; leaving it stops consuming after the task in hand (unacknowledged messages
    stay in the broker for the next worker).
    """

    def __init__(self, app: Celery, start_timeout_s: float = 30.0):
        self._app = app
        self._timeout_s = start_timeout_s
        self._controller: _ReadyWorkController | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> InProcessWorker:
        self._controller = _ReadyWorkController(
            app=self._app, queues=list(WORKER_QUEUES), pool="solo", concurrency=1,
            hostname=f"bienc-inprocess@{id(self)}",
            without_heartbeat=True, without_mingle=True, without_gossip=True, loglevel="WARNING",
        )
        self._thread = threading.Thread(target=self._controller.start, name="bienc-worker", daemon=True)
        self._thread.start()
        if not self._controller.ready.wait(self._timeout_s):
            raise RuntimeError(f"the in-process worker did not start in {self._timeout_s:.0f} s")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Ask the worker's own loop to stop (as a warm shutdown signal does), so that the
        # broker connection is closed by the thread that uses it.
        worker_state.should_stop = 0
        try:
            if self._thread is not None:
                self._thread.join(timeout=60)
        finally:
            worker_state.should_stop = None
