"""Crash points do nothing unless BIENC_CRASH_AT names them, then kill the process outright
(SIGKILL, as `kill -9` would) or raise, for the fault tier (tests/faults/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bienc.config.crash import InjectedFault, crash_point

CHILD = "from bienc.config.crash import crash_point; crash_point('a.b'); print('passed')"


def _run(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BIENC_CRASH_AT"}
    if value is not None:
        env["BIENC_CRASH_AT"] = value
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_named_point_kills_the_process_with_sigkill() -> None:
    done = _run("a.b")
    assert done.returncode == -signal.SIGKILL and "passed" not in done.stdout


def test_other_points_and_no_variable_do_nothing() -> None:
    for value in (None, "", "a.c", "a.b.c", "a"):
        done = _run(value)
        assert (done.returncode, done.stdout.strip()) == (0, "passed"), value


def test_the_raise_variant_raises_an_injected_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIENC_CRASH_AT", "a.b:raise")
    with pytest.raises(InjectedFault, match=r"'a\.b'"):
        crash_point("a.b")
    crash_point("a.c")


def test_the_counted_variant_kills_at_the_nth_time_the_point_is_reached() -> None:
    env = {**os.environ, "BIENC_CRASH_AT": "a.b#3"}
    child = ("from bienc.config.crash import crash_point\n"
             "for n in range(1, 5):\n    print(n, flush=True)\n    crash_point('a.b')")
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["1", "2", "3"]
