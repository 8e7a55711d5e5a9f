"""Progress of a job on the terminal, for the commands that wait for one."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bienc.queue.jobs import JobStatus


def progress_printer(total_hint: int) -> tuple[Any, Callable[[JobStatus], None]]:
    """A progress bar on stderr (none when it is not a terminal) and the function that
    moves it to a job's status."""
    from tqdm import tqdm

    bar = tqdm(total=total_hint, unit="doc", file=sys.stderr, disable=None, dynamic_ncols=True)

    def update(status: JobStatus) -> None:
        bar.total = status.total
        bar.n = status.total - status.queued
        counts = {"indexed": status.indexed, "skipped": status.skipped, "failed": status.failed}
        if status.superseded:
            counts["superseded"] = status.superseded
        bar.set_postfix(counts, refresh=False)
        if status.last_error:
            bar.set_description("retrying", refresh=False)
        bar.refresh()

    return bar, update
