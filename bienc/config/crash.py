"""Named crash points for the fault tests (tests/faults/).

Code that must survive a crash at a given step calls `crash_point("reindex.finish.switched")`
there. Nothing happens unless the one variable BIENC_CRASH_AT names that point:

    BIENC_CRASH_AT=<name>        the process kills itself with SIGKILL at the point: no
                                 `finally`, no atexit, no flush -- what `kill -9` or the OOM
                                 killer does at the worst moment
    BIENC_CRASH_AT=<name>:raise  the point raises InjectedFault instead: an error nobody
                                 planned for, so that the caller's error path is what is tested
    BIENC_CRASH_AT=<name>#<n>    the kill, at the n-th time this process reaches the point

The variable is read at every call (a dictionary lookup), so a test can set it in a child's
environment only, and production code pays nothing measurable.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

VARIABLE = "BIENC_CRASH_AT"
_reached: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """Raised by a crash point set to `<name>:raise`; deliberately of no kind any code catches
    on purpose (not OSError, not a BiencError), like the bug or outage nobody foresaw."""


def crash_point(name: str) -> None:
    """Kill this process (or raise InjectedFault) here if BIENC_CRASH_AT names this point."""
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted.startswith(f"{name}#"):
        _reached[name] += 1
        if str(_reached[name]) == wanted.removeprefix(f"{name}#"):
            os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"{name}:raise":
        raise InjectedFault(f"injected fault at crash point {name!r} ({VARIABLE}={wanted})")
