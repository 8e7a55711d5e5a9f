"""Memory figures for benchmarks that build big collections (Linux).

A process's resident set counts the pages of files it maps. Qdrant Edge maps its vectors,
graphs and write-ahead log, so a build's RSS counts much that the kernel can drop and read
back when memory is short. Beside the peak RSS (`peak_rss_mb`), two figures tell what a
machine needs:

- `AnonSampler`: the peak anonymous memory (heap, graph under construction: what cannot be
  dropped) of this process and its children together, sampled.
- `cap_memory`: this process, and every process it starts from then on, in a new memory
  cgroup with a hard limit. A run that ends inside the limit fits in that much memory, page
  cache included. `cap_report` reads the cgroup's peak and its OOM kills afterwards.
"""

from __future__ import annotations

import atexit
import os
import resource
import threading
import time
from pathlib import Path

_V1 = Path("/sys/fs/cgroup/memory")
_V2 = Path("/sys/fs/cgroup")


def parse_size(text: str) -> int:
    """Bytes of "8G", "512M", "1024K" or a plain number."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of the largest child it waited for)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def _anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:  # gone meanwhile
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # the command may hold spaces and brackets: the fields after its last ")"
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


class AnonSampler:
    """Samples, every `interval` s on a thread of its own, the anonymous memory of this
    process plus its children's; `peak_mb` is the largest sum seen."""

    def __init__(self, interval: float = 0.25) -> None:
        self.peak_kib = 0
        self._interval = interval
        threading.Thread(target=self._run, name="anon-sampler", daemon=True).start()

    @property
    def peak_mb(self) -> float:
        return self.peak_kib / 1024

    def _run(self) -> None:  # until the process exits (a daemon thread)
        me = os.getpid()
        while True:
            total = _anon_kib(me) + sum(_anon_kib(child) for child in _children(me))
            self.peak_kib = max(self.peak_kib, total)
            time.sleep(self._interval)


def cap_memory(limit: int) -> Path:
    """Move this process into a new memory cgroup of `limit` bytes (cgroup v1's memory
    controller, or v2's); its children join it as they start. Needs the right to make
    cgroups (root in most containers). Returns the cgroup's folder."""
    name = f"bienc-bench-{os.getpid()}"
    if (_V1 / "memory.limit_in_bytes").exists():
        group, limit_file = _V1 / name, "memory.limit_in_bytes"
    elif (_V2 / "cgroup.controllers").exists():
        group, limit_file = _V2 / name, "memory.max"
    else:
        raise SystemExit("no memory cgroup controller at /sys/fs/cgroup: run without --memory-limit")
    try:
        group.mkdir()
        (group / limit_file).write_text(str(limit))
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        raise SystemExit(f"cannot make a memory cgroup at {group} ({exc}): run as root, or "
                         "without --memory-limit") from exc
    atexit.register(_leave, group)
    return group


def _leave(group: Path) -> None:
    """Back to the parent cgroup, and the empty one removed (its children have exited)."""
    try:
        (group.parent / "cgroup.procs").write_text(str(os.getpid()))
        group.rmdir()
    except OSError:
        pass


def cap_report(group: Path) -> dict[str, int]:
    """The cgroup's peak memory (bytes; page cache included) and its OOM kills so far."""
    if (group / "memory.max_usage_in_bytes").exists():  # v1
        peak = int((group / "memory.max_usage_in_bytes").read_text())
        control = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
        return {"peak_bytes": peak, "oom_kills": int(control.get("oom_kill", 0))}
    events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
    peak_file = group / "memory.peak"
    peak = int(peak_file.read_text()) if peak_file.exists() else 0
    return {"peak_bytes": peak, "oom_kills": int(events.get("oom_kill", 0))}
