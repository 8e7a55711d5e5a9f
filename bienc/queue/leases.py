"""Leases: a claim in Redis that lapses unless its holder, alive, renews it.

A writer of a collection, the step running a reindex, a snapshot's hold: each is held by a
process that may die at any moment without a word. A lease says how long the others wait
for it: its holder renews it every third of its length from a thread of its own, so a live
holder never loses it (the thread runs while the main one encodes), and a dead one's lapses
one length later at most.

Holders are named `PID-RANDOM`. Where every holder runs on this machine (the embedded
queue: one Redis on a unix socket in the data folder), a holder whose process is gone is
known dead at once, without waiting for its lease to lapse (`holder_dead`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


def new_holder() -> str:
    """A holder name for this process: its pid, then a random part."""
    return f"{os.getpid()}-{uuid.uuid4().hex}"


def holder_dead(holder: str) -> bool:
    """Whether `holder`'s process, on this machine, has exited (a name of another form, or
    a process that lives or that this user may not signal: not known dead)."""
    pid_text, _, rest = holder.partition("-")
    if not pid_text.isdigit() or not rest:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (EPERM: another user's)
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that exited but that its parent has not reaped yet (state Z) is dead too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def renewed(renew: Callable[[], Any], every_s: float, what: str) -> Iterator[None]:
    """Call `renew` every `every_s` seconds while inside, from a thread of its own."""
    done = threading.Event()

    def run() -> None:
        while not done.wait(every_s):
            try:
                renew()
            except Exception:  # Redis away: the lease lapses, which is what a lease is for
                log.exception("renewing %s failed", what)

    renewer = threading.Thread(target=run, name="bienc-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
