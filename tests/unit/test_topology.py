"""The one deployment decision: every combination of settings either has a topology or is
refused with the variables to set."""

from pathlib import Path

import pytest

from bienc.config.errors import ConfigError
from bienc.config.settings import Settings
from bienc.config.topology import Role, decide

BROKER = "redis://127.0.0.1:6379/0"
SERVER = "http://qdrant:6333"


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, data_dir=Path("/data"), **values)  # type: ignore[arg-type, call-arg]


@pytest.mark.parametrize(("values", "queue", "store", "location"), [
    ({}, "embedded", "edge", "/data/edge"),
    ({"embedded_store": "qdrant-local"}, "embedded", "local", "/data/qdrant"),
    ({"embedded_store": "qdrant-local", "qdrant_path": ":memory:"}, "embedded", "memory", ":memory:"),
    ({"qdrant_path": "/srv/vectors"}, "embedded", "edge", "/srv/vectors"),
    ({"qdrant_url": SERVER}, "embedded", "server", SERVER),
    ({"broker_url": BROKER}, "redis", "edge", "/data/edge"),
    ({"broker_url": BROKER, "qdrant_url": SERVER}, "redis", "server", SERVER),
])
def test_settings_name_one_queue_and_one_store(values: dict[str, object], queue: str, store: str,
                                               location: str) -> None:
    topology = decide(_settings(**values), Role.READ)
    assert (topology.queue, topology.store, topology.store_location) == (queue, store, location)


@pytest.mark.parametrize(("values", "serve", "submit", "demo", "worker"), [
    # embedded queue: whoever submits work consumes it; there is no shared queue to serve
    ({}, True, True, True, None),
    ({"qdrant_url": SERVER}, True, True, True, None),
    # shared queue, embedded store: the API owns the store and encodes; a worker may own it instead
    ({"broker_url": BROKER}, True, False, True, True),
    # shared queue and server: workers elsewhere
    ({"broker_url": BROKER, "qdrant_url": SERVER}, False, False, True, True),
    ({"broker_url": BROKER, "embedded_store": "qdrant-local", "qdrant_path": ":memory:"},
     True, False, True, None),
])
def test_who_runs_the_worker(values: dict[str, object], serve: bool, submit: bool, demo: bool,
                             worker: bool | None) -> None:
    settings = _settings(**values)
    assert decide(settings, Role.SERVE).runs_worker is serve
    assert decide(settings, Role.SUBMIT).runs_worker is submit
    assert decide(settings, Role.DEMO).runs_worker is demo
    assert decide(settings, Role.READ).runs_worker is False
    if worker is None:
        with pytest.raises(ConfigError, match="BIENC_"):
            decide(settings, Role.WORKER)
    else:
        assert decide(settings, Role.WORKER).runs_worker is worker


def test_a_qdrant_server_without_a_broker_is_served_by_the_api_itself() -> None:
    """The case that once left jobs queued for ever: nobody consumed the private queue."""
    topology = decide(_settings(qdrant_url=SERVER), Role.SERVE)
    assert topology.embedded_queue and topology.store == "server" and topology.runs_worker


@pytest.mark.parametrize(("values", "names"), [
    ({"qdrant_path": ":memory:"}, ["BIENC_QDRANT_PATH=:memory:", "BIENC_EMBEDDED_STORE=qdrant-local"]),
    ({"qdrant_url": SERVER, "qdrant_path": "/srv"}, ["BIENC_QDRANT_URL", "BIENC_QDRANT_PATH"]),
    ({"qdrant_url": SERVER, "embedded_store": "qdrant-local"},
     ["BIENC_QDRANT_URL", "BIENC_EMBEDDED_STORE"]),
])
def test_settings_that_name_two_stores_are_refused(values: dict[str, object], names: list[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        decide(_settings(**values), Role.READ)
    assert all(name in str(refused.value) for name in names), refused.value


def test_a_worker_needs_a_shared_queue_and_a_store_others_can_read() -> None:
    with pytest.raises(ConfigError, match="BIENC_BROKER_URL"):
        decide(_settings(), Role.WORKER)
    with pytest.raises(ConfigError, match="BIENC_QDRANT_URL"):
        decide(_settings(broker_url=BROKER, embedded_store="qdrant-local", qdrant_path=":memory:"),
               Role.WORKER)
