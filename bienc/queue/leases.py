"""Leases in Redis (a hold, a restore's claim, documents' locks): each lapses unless its
holder, alive, renews it, so that a holder that dies releases it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def renewed(renew: Callable[[], Any], every_s: float, what: str) -> Iterator[None]:
    """Call `renew` every `every_s` seconds in a thread while inside; `what` names the lease
    in the log when a renewal fails (Redis away: the lease may lapse)."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(every_s):
            try:
                renew()
            except Exception:  # the next one may get through
                log.exception("renewing %s failed", what)

    renewer = threading.Thread(target=run, name="bienc-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
