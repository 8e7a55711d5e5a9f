"""A real HTTP server on loopback that receives webhooks, for the tests: it records every POST
and answers each path as told (a status per request, 200 once the list is spent), and the
signature check of docs/webhooks.md, taken from the page as a receiver would copy it."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECRET = "webhook-secret-for-the-tests-0123"


def documented_verify() -> Callable[..., bool]:
    """`verify(secret, header, body)` exactly as docs/webhooks.md gives it."""
    page = (ROOT / "docs" / "webhooks.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int
    answers: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses, in order
    received: list[Received] = field(default_factory=list)
    hold_s: float = 0.0  # how long to wait before answering /slow
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout_s: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(found := self.at(path)) < count:
            assert time.monotonic() < deadline, f"{path}: {len(found)} of {count} webhooks came"
            time.sleep(0.05)
        return found


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiver on a free port of 127.0.0.1, served from a thread while inside."""
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append(Received(self.path, dict(self.headers.items()), body))
                statuses = state.answers.get(self.path, [])
                status = statuses.pop(0) if statuses else 200
            if self.path == "/slow":
                time.sleep(state.hold_s)
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            answer = b"receiver says no" if status >= 300 else b"ok"
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
