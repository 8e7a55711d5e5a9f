"""Deployments the topology decides, run for real: a Qdrant server with no broker is served
by the API's own worker; settings that cannot work stop every command at start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import bienc_env, run_bienc
from tests.integration.test_api import SHORT, _free_port, serve


def test_a_qdrant_server_without_a_broker_is_worked_by_the_api(tmp_path: Path) -> None:
    """No Qdrant server runs here: the URL is a closed local port. The job leaving `queued`
    for `retrying`, with the URL in its error, shows that a worker took the batch."""
    closed = f"http://127.0.0.1:{_free_port()}"
    env = bienc_env(qdrant_url=closed, qdrant_timeout_s="1", retry_backoff_s="1")
    with serve(tmp_path, env, ready_path="/healthz") as running, running.client() as client:
        accepted = client.post("/v1/collections/s/documents", json={"documents": SHORT})
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 60
        while (status := client.get(f"/v1/jobs/{accepted.json()['job_id']}").json())["state"] \
                == "queued":
            assert time.monotonic() < deadline, f"no worker took the job in 60 s: {status}"
            time.sleep(0.5)
        assert status["state"] == "retrying", status
        assert closed in status["last_error"], status
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "store" in " ".join(ready.json()["reasons"])


@pytest.mark.parametrize(("command", "settings", "named"), [
    (["worker"], {}, "BIENC_BROKER_URL"),
    (["info"], {"qdrant_path": ":memory:"}, "BIENC_EMBEDDED_STORE=qdrant-local"),
    (["search", "x"], {"qdrant_url": "http://127.0.0.1:1", "qdrant_path": "/tmp/x"},
     "BIENC_QDRANT_PATH"),
    (["serve"], {"qdrant_url": "http://127.0.0.1:1", "embedded_store": "qdrant-local"},
     "BIENC_EMBEDDED_STORE"),
])
def test_settings_that_cannot_work_are_refused_at_start(tmp_path: Path, command: list[str],
                                                        settings: dict[str, str], named: str) -> None:
    result = run_bienc(*command, cwd=tmp_path, env=bienc_env(**settings), timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("bienc: ") and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
