"""Helpers to run the real `bienc` command and a real `bienc worker` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bienc.config.settings import Settings
from bienc.queue.broker import embedded_socket_path
from bienc.store.factory import open_store
from bienc.store.record import Chunking, CollectionEncoding
from tests.conftest import KEPT_VARIABLES

BIENC = [sys.executable, "-m", "bienc.cli"]


def bienc_env(**settings: str) -> dict[str, str]:
    """The environment of a bienc process: this one's, with only the given BIENC_* settings
    (and the session's model cache)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_") or k in KEPT_VARIABLES}
    env.update({f"BIENC_{k.upper()}": v for k, v in settings.items()})
    return env


def run_bienc(*args: str, cwd: Path, env: dict[str, str],
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIENC, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_json(*args: str, cwd: Path, env: dict[str, str]) -> Any:
    result = run_bienc(*args, "--json", cwd=cwd, env=env)
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def stop_gracefully(process: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    """SIGTERM (a worker finishes its batch, a server drains), then SIGKILL if it hangs."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def worker_process(cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A `bienc worker` process; stopped with SIGTERM (warm shutdown) on exit."""
    log = (cwd / "worker.log").open("w")
    process = subprocess.Popen([*BIENC, "worker", "--loglevel", "INFO"], cwd=cwd, env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        stop_gracefully(process)
        log.close()


def _embedded_client(data_dir: Path) -> redis.Redis:
    """A client of the embedded Redis of `data_dir` that tries each command once."""
    return redis.Redis(unix_socket_path=str(embedded_socket_path(data_dir)), socket_timeout=5,
                       retry=Retry(NoBackoff(), 0))


def embedded_unacknowledged(data_dir: Path) -> int:
    """Batches (messages) delivered and not acknowledged in the embedded queue of `data_dir`."""
    client = _embedded_client(data_dir)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


def stop_embedded_redis(data_dir: Path) -> None:
    """Shut down the embedded Redis of `data_dir`, if one runs: a killed bienc process leaves
    its server running (a later command would reuse it)."""
    with contextlib.suppress(redis.RedisError, OSError):
        _embedded_client(data_dir).shutdown(nosave=True)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def long_document() -> dict[str, Any]:
    """A document far over the model's 256-token window, with a distinctive closing sentence."""
    filler = " ".join(
        f"Paragraph {i} discusses routine laboratory procedures and general observations."
        for i in range(60)
    )
    ending = "The final section reports that the migratory hummingbirds navigate by polarised light."
    return {"id": "long-1", "title": "A long report", "text": f"{filler} {ending}"}


# a collection of a model that is not on this machine
OTHER_MODELS = CollectionEncoding(model="other/model-768", dimension=768, encoding="torch/float32",
                                  source="other/model-768", chunking=Chunking(True, 128, 16))


def create_other_models_collection(data_dir: Path, name: str = "wide") -> None:
    """A collection filled by a 768-d model, made in the default embedded store before a
    bienc process opens it."""
    store = open_store(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
    try:
        store.ensure_collection(name, OTHER_MODELS)
    finally:
        store.close()
