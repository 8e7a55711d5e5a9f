"""Job webhooks: which callback URLs a job may name, how a delivery is signed, and one
delivery attempt over HTTP.

A job that names a `callback_url` has its final status POSTed there once it ends: the job
tracker claims the delivery when the job reaches its final state (bienc.queue.jobs), a task
on the webhook queue makes the attempts and records them on the job
(bienc.workers.webhooks).

Only hosts in BIENC_WEBHOOK_ALLOWED_HOSTS are called, checked when the job is submitted and
again before every attempt (with the worker's own settings). An attempt resolves the host
once and connects to the address it resolved (no second lookup that DNS could answer
otherwise), verifies TLS against the host name, follows no redirect, and is cut off after
BIENC_WEBHOOK_TIMEOUT_S, whatever the receiver does.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bienc.config.errors import InvalidInputError
from bienc.config.settings import Settings

MAX_URL_CHARS = 2048
SIGNATURE_HEADER = "X-Bienc-Signature"
DELIVERY_HEADER = "X-Bienc-Delivery"  # the same for every attempt of one delivery
USER_AGENT = "bienc-webhook/1"
_ANSWER_CHARS = 200  # of a refusing receiver's answer, kept as the attempt's error


class WebhookError(Exception):
    """A delivery attempt failed; `permanent`: no later attempt can succeed (the worker's
    settings refuse it), so none is made."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    """Where a callback URL points."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int
    path: str  # path and query, as the request line sends them


def parse_target(url: str) -> Target:
    """The parts of a callback URL, or ValueError saying what is wrong with it."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("holds spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not hold credentials (user:password@); receivers check the "
                         "signature instead")
    if not parts.hostname:
        raise ValueError("names no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"has an invalid port ({exc})") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), path)


def _entry(entry: str) -> tuple[str, int | None]:
    """An allow-list entry as (host, port or None for any): `host`, `host:port`, an IPv6
    address, `[v6]` or `[v6]:port`."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None


def host_allowed(target: Target, allowed: list[str]) -> bool:
    return any(host == target.host and port in (None, target.port)
               for host, port in map(_entry, allowed))


def check_callback_url(settings: Settings, url: str, field: str = "callback_url") -> str:
    """`url` when a job may name it as its callback; else InvalidInputError (422) naming
    `field` and the setting that decides."""
    def refuse(reason: str) -> InvalidInputError:
        return InvalidInputError(f"field '{field}': {reason}")

    if not settings.webhook_host_list:
        raise refuse("webhooks are disabled on this service: set BIENC_WEBHOOK_ALLOWED_HOSTS to "
                     "the hosts that may receive them, and BIENC_WEBHOOK_SECRET")
    if not settings.webhook_secret:
        raise refuse("webhooks need BIENC_WEBHOOK_SECRET, the key they are signed with")
    try:
        target = parse_target(url)
    except ValueError as exc:
        raise refuse(f"{url[:100]!r} {exc}") from None
    if not host_allowed(target, settings.webhook_host_list):
        raise refuse(f"host {target.host!r} (port {target.port}) is not in "
                     "BIENC_WEBHOOK_ALLOWED_HOSTS")
    return url


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value: `t=TIMESTAMP,v1=HEX`, HEX being the HMAC-SHA256 of
    "TIMESTAMP." followed by the body, under `secret`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class _Attempt:
    """One POST, run in a thread of its own so that the caller can stop waiting at a deadline
    whatever the network does (a name that takes long to resolve, a receiver that trickles)."""

    def __init__(self, target: Target, body: bytes, headers: dict[str, str], timeout_s: float):
        self.target, self.body, self.headers, self.timeout_s = target, body, headers, timeout_s
        self.sock: socket.socket | None = None
        self.answer: tuple[int, str, str | None] | None = None  # status, start of body, Location
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.answer = self._post()
        except BaseException as exc:
            self.error = exc

    def _connect(self) -> socket.socket:
        """A socket to one address the host resolved to (resolved once, here)."""
        target = self.target
        failures = []
        for family, kind, proto, _, address in socket.getaddrinfo(target.host, target.port,
                                                                  type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                failures.append(f"{address[0]} port {target.port}: {exc}")
                continue
            if target.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
            return sock
        raise OSError("cannot connect to " + "; ".join(failures))

    def _post(self) -> tuple[int, str, str | None]:
        target = self.target
        connection: http.client.HTTPConnection = (
            http.client.HTTPSConnection(target.host, target.port, timeout=self.timeout_s)
            if target.scheme == "https"
            else http.client.HTTPConnection(target.host, target.port, timeout=self.timeout_s))
        self.sock = connection.sock = self._connect()  # so http.client never resolves the name
        try:
            connection.request("POST", target.path, body=self.body, headers=self.headers)
            response = connection.getresponse()
            text = response.read(_ANSWER_CHARS).decode("utf-8", "replace")
            return response.status, text, response.getheader("Location")
        finally:
            connection.close()

    def stop(self) -> None:
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it


def deliver(settings: Settings, url: str, body: bytes, delivery_id: str) -> int:
    """POST `body` (JSON) to `url`, signed; returns the receiver's 2xx status. WebhookError
    for anything else: the worker's settings refusing the URL (permanent), a network error, no
    answer within BIENC_WEBHOOK_TIMEOUT_S, or an answer other than 2xx (a redirect included:
    none is followed)."""
    secret, hosts = settings.webhook_secret, settings.webhook_host_list
    if not (secret and hosts):
        raise WebhookError("webhooks are disabled where this worker runs: set "
                           "BIENC_WEBHOOK_ALLOWED_HOSTS and BIENC_WEBHOOK_SECRET there",
                           permanent=True)
    try:
        target = parse_target(url)
    except ValueError as exc:
        raise WebhookError(f"callback_url {exc}", permanent=True) from None
    if not host_allowed(target, hosts):
        raise WebhookError(f"host {target.host!r} (port {target.port}) is not in the worker's "
                           "BIENC_WEBHOOK_ALLOWED_HOSTS", permanent=True)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "Connection": "close", DELIVERY_HEADER: delivery_id,
               SIGNATURE_HEADER: sign(secret, body, int(time.time()))}
    attempt = _Attempt(target, body, headers, settings.webhook_timeout_s)
    thread = threading.Thread(target=attempt.run, name="bienc-webhook", daemon=True)
    thread.start()
    thread.join(settings.webhook_timeout_s)
    if thread.is_alive() or isinstance(attempt.error, TimeoutError):  # a socket's own timeout
        attempt.stop()
        raise WebhookError(f"no answer within {settings.webhook_timeout_s:g} s "
                           "(BIENC_WEBHOOK_TIMEOUT_S)")
    if attempt.error is not None:
        error = attempt.error
        raise WebhookError(f"{type(error).__name__}: {error}"[:500])
    assert attempt.answer is not None
    status, text, location = attempt.answer
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        raise WebhookError(f"answered {status} to {location!r}; redirects are not followed: "
                           "name the final URL as callback_url")
    answer = " ".join(text.split())
    raise WebhookError(f"answered {status}" + (f": {answer}" if answer else ""))


def queue_delivery(settings: Settings, job_id: str, round_: int) -> None:
    """Queue the delivery of job `job_id`'s webhook (its `round_`-th end) for a worker."""
    from bienc.queue.celery_app import WEBHOOK_QUEUE, WEBHOOK_TASK, app, configure_app

    if app.conf.broker_url is None:  # a process that has not sent a task yet
        configure_app(settings)
    app.send_task(WEBHOOK_TASK, args=(job_id, round_), queue=WEBHOOK_QUEUE)
