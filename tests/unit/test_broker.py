"""The broker connection as workers and producers build it (no server needed)."""

from __future__ import annotations

import ssl

from bienc.config.settings import Settings
from bienc.queue.celery_app import configure_app
from bienc.queue.transport import Transport


def _connection(broker_url: str):  # type: ignore[no-untyped-def]
    app = configure_app(Settings(_env_file=None, broker_url=broker_url))  # type: ignore[call-arg]
    return app.connection_for_write()


def test_every_broker_url_uses_the_transport_that_takes_and_records_in_one_step() -> None:
    for url in ("redis://127.0.0.1:6379/13", "rediss://:secret@10.0.0.5:6380/0",
                "unix:///tmp/bienc-test.sock"):
        with _connection(url) as connection:
            assert connection.transport.__class__ is Transport, url


def test_a_rediss_url_verifies_the_servers_certificate() -> None:
    with _connection("rediss://:secret@10.0.0.5:6380/0") as connection:
        assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    with _connection("redis://127.0.0.1:6379/13") as connection:
        assert not connection.ssl
