"""Parsing files in separate processes under a time limit, so that a parser that hangs or
crashes on one file fails that file only.

A parse process is started once and reused for file after file (starting Python and the
parsers costs ~0.5 s; parsing a page costs milliseconds). One that overruns its time limit
is killed and a fresh one takes its place; one that dies (a crash in native code) is replaced
the same way. Processes are spawned, not forked: the API and the in-process worker hold
threads and locks that a fork would copy in an unknown state.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType

from bienc.ingest.formats import Format
from bienc.ingest.parsers import Parsed, ParseError, parse_file


@dataclass(frozen=True)
class ParseFailure:
    reason: str


def _serve(conn: Connection) -> None:
    """A parse process: load the parsers, say so, then parse each (path, format) received and
    answer with the result."""
    import docx  # noqa: F401 - loaded before the first file, so that its time limit is parsing's
    import markdown_it  # noqa: F401
    import pypdfium2  # noqa: F401
    import trafilatura  # noqa: F401

    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        path, fmt = request
        try:
            result: Parsed | ParseFailure = parse_file(Path(path), fmt)
        except ParseError as exc:
            result = ParseFailure(str(exc))
        except MemoryError:
            result = ParseFailure("the parser ran out of memory on this file")
        except Exception as exc:
            result = ParseFailure(f"the parser failed: {type(exc).__name__}: {exc}"[:500])
        conn.send(result)


_START_TIMEOUT_S = 120.0


class _ParseProcess:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process: BaseProcess = context.Process(target=_serve, args=(child,),
                                                     name="bienc-parse", daemon=True)
        self._process.start()
        child.close()
        try:
            ready = self._conn.poll(_START_TIMEOUT_S) and self._conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            code = self._process.exitcode
            self.stop()
            raise RuntimeError(f"a parse process did not start (exit status {code}); are the "
                               "parsers installed? pip install bienc")

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def parse(self, path: Path, fmt: Format, timeout_s: float) -> Parsed | ParseFailure:
        try:
            self._conn.send((str(path), fmt))
            if not self._conn.poll(timeout_s):
                self.stop()
                return ParseFailure(
                    f"parsing took longer than {timeout_s:g} s and was stopped (setting "
                    "parse_timeout_s, BIENC_PARSE_TIMEOUT_S)")
            result: Parsed | ParseFailure = self._conn.recv()
            return result
        except (EOFError, OSError, BrokenPipeError):
            self._process.join(timeout=5)
            code = self._process.exitcode
            self.stop()
            return ParseFailure(f"the parser crashed on this file (exit status {code})")

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()


class ParsePool:
    """Up to `processes` parse processes, started on first use, shared by threads. Use as a
    context manager (or call close()) so that they stop with their user."""

    def __init__(self, processes: int = 1, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self._idle: queue.LifoQueue[_ParseProcess | None] = queue.LifoQueue()
        for _ in range(max(1, processes)):
            self._idle.put(None)  # a slot; its process starts when first needed
        self._lock = threading.Lock()
        self._all: list[_ParseProcess] = []
        self._closed = False

    def parse(self, path: Path, fmt: Format) -> Parsed | ParseFailure:
        """The file parsed as `fmt`, or why it could not be; never raises for the file's sake."""
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive:
                worker = _ParseProcess()
                with self._lock:
                    self._all.append(worker)
            result = worker.parse(path, fmt, self.timeout_s)
            if not worker.alive:
                worker = None
            return result
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
