"""The one deployment decision: from the settings and what a process is for, where the queue
and the store live and whether this process runs the worker.

Every entry point (CLI, HTTP API, runtime) asks `decide()` and acts on its answer; nothing
else looks at `BIENC_BROKER_URL`, `BIENC_QDRANT_URL` or `BIENC_QDRANT_PATH` to guess the
deployment. A combination that cannot work is refused here, before anything starts, with a
message naming the variables to set.

    queue     embedded   no BIENC_BROKER_URL: a private Redis in BIENC_DATA_DIR
              redis      BIENC_BROKER_URL: a Redis shared by API, producers and workers
    store     edge       no BIENC_QDRANT_URL, BIENC_EMBEDDED_STORE=edge (default): a folder
              local      no BIENC_QDRANT_URL, BIENC_EMBEDDED_STORE=qdrant-local: a folder
              memory     as local, with BIENC_QDRANT_PATH=:memory: (this process only)
              server     BIENC_QDRANT_URL: a Qdrant server or cluster

Who consumes the queue (`runs_worker`):
    * an embedded queue has no other consumer: every process that submits work (serve,
      ingest, demo) runs the worker in-process, whatever the store;
    * an embedded store admits one process: `bienc serve` on it runs the worker itself, and
      a separate `bienc worker` may own it instead of a server;
    * with a shared queue and a Qdrant server, `bienc worker` processes consume it; serve and
      ingest only submit. `bienc demo` always runs one, so that it finishes by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from bienc.config.errors import ConfigError
from bienc.config.settings import Settings

QueueKind = Literal["embedded", "redis"]
StoreKind = Literal["edge", "local", "memory", "server"]


class Role(Enum):
    """What a process is for."""

    SERVE = "serve"    # the HTTP API
    SUBMIT = "submit"  # bienc ingest, bienc jobs retry: queue work, maybe wait for it
    DEMO = "demo"      # ingest the sample and search it, alone
    WORKER = "worker"  # bienc worker: consume the shared queue
    READ = "read"      # search, info, eval, jobs show: no work is queued


@dataclass(frozen=True)
class Topology:
    queue: QueueKind
    queue_location: str  # the broker URL, or the folder of the embedded Redis
    store: StoreKind
    store_location: str  # the server URL, the store folder, or ":memory:"
    runs_worker: bool

    @property
    def embedded_queue(self) -> bool:
        return self.queue == "embedded"

    @property
    def embedded_store(self) -> bool:
        return self.store != "server"

    def describe(self) -> str:
        """One line for start-up messages."""
        queue = "embedded Redis" if self.embedded_queue else self.queue_location
        worker = "worker in this process" if self.runs_worker else "workers elsewhere"
        return f"store {self.store} {self.store_location}, queue {queue}, {worker}"


def store_kind(settings: Settings) -> StoreKind:
    """Which engine holds the vectors, refusing settings that name two."""
    explicit = settings.model_fields_set
    if settings.qdrant_url:
        clashes = [f"BIENC_{name.upper()}" for name in ("qdrant_path", "embedded_store")
                   if name in explicit and getattr(settings, name)]
        if clashes:
            raise ConfigError(
                f"BIENC_QDRANT_URL names a Qdrant server, and {' and '.join(clashes)} an embedded "
                f"store: unset {' and '.join(clashes)}, or BIENC_QDRANT_URL to keep the store embedded"
            )
        return "server"
    if settings.qdrant_path == ":memory:":
        if settings.embedded_store != "qdrant-local":
            raise ConfigError(
                "BIENC_QDRANT_PATH=:memory: is qdrant-client's in-memory mode: set "
                "BIENC_EMBEDDED_STORE=qdrant-local with it, or give BIENC_QDRANT_PATH a folder "
                "(Qdrant Edge keeps its data on disk)"
            )
        return "memory"
    return "edge" if settings.embedded_store == "edge" else "local"


def store_location(settings: Settings, kind: StoreKind) -> str:
    if kind == "server":
        return str(settings.qdrant_url)
    if kind == "memory":
        return ":memory:"
    return settings.qdrant_path or str(settings.data_dir / ("edge" if kind == "edge" else "qdrant"))


def _runs_worker(role: Role, queue: QueueKind, store: StoreKind) -> bool:
    if role is Role.READ:
        return False
    if role in (Role.WORKER, Role.DEMO):
        return True
    if queue == "embedded":
        return True
    return role is Role.SERVE and store != "server"


def decide(settings: Settings, role: Role) -> Topology:
    """The topology of a process with `role` under `settings`; ConfigError for a combination
    that would leave accepted work with nobody to do it."""
    queue: QueueKind = "redis" if settings.broker_url else "embedded"
    store = store_kind(settings)
    if role is Role.WORKER and queue == "embedded":
        raise ConfigError(
            "`bienc worker` consumes a shared queue: set BIENC_BROKER_URL=redis://HOST:6379/0 "
            "(without one, `bienc serve` and `bienc ingest` run their worker in-process)"
        )
    if role is Role.WORKER and store == "memory":
        raise ConfigError(
            "`bienc worker` with BIENC_QDRANT_PATH=:memory: would write vectors no other process "
            "can read: set BIENC_QDRANT_URL to a Qdrant server, or BIENC_QDRANT_PATH to a folder"
        )
    return Topology(
        queue=queue,
        queue_location=settings.broker_url or str(settings.data_dir),
        store=store,
        store_location=store_location(settings, store),
        runs_worker=_runs_worker(role, queue, store),
    )
