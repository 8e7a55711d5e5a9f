"""Who may call what: every route declares a level, keys are checked at start, and serving a
network without a key is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from bienc.access import Access, check_exposure, is_loopback, route_levels
from bienc.api import create_app
from bienc.config.errors import ConfigError
from bienc.config.settings import Settings

ADMIN_KEY = "admin-key-0123456789"
READ_KEY = "read-key-0123456789"

# What each route needs. A route missing here fails the first test: a new route must be
# given a level on purpose, and listed.
EXPECTED = {
    "GET /healthz": Access.PUBLIC, "GET /readyz": Access.PUBLIC, "GET /metrics": Access.PUBLIC,
    "GET /openapi.json": Access.PUBLIC, "GET /docs": Access.PUBLIC, "HEAD /docs": Access.PUBLIC,
    "GET /docs/oauth2-redirect": Access.PUBLIC, "HEAD /docs/oauth2-redirect": Access.PUBLIC,
    "GET /redoc": Access.PUBLIC, "HEAD /redoc": Access.PUBLIC, "HEAD /openapi.json": Access.PUBLIC,
    "POST /v1/collections/{collection}/documents": Access.ADMIN,
    "POST /v1/collections/{collection}/files": Access.ADMIN,
    "GET /v1/jobs": Access.READ, "GET /v1/jobs/{job_id}": Access.READ,
    "POST /v1/jobs/{job_id}/cancel": Access.ADMIN,
    "POST /v1/collections/{collection}/reindex": Access.ADMIN,
    "POST /v1/collections/{collection}/reindex/resume": Access.ADMIN,
    "POST /v1/collections/{collection}/reindex/abort": Access.ADMIN,
    "POST /v1/collections/{collection}/delete": Access.ADMIN,
    "GET /ui": Access.PUBLIC, "GET /ui/{name}": Access.PUBLIC,
    "POST /v1/collections/{collection}/search": Access.READ,
    "GET /v1/collections": Access.READ,
    "GET /v1/collections/{collection}": Access.READ,
    "DELETE /v1/collections/{collection}": Access.ADMIN,
    "GET /v1/collections/{collection}/documents/{doc_id}": Access.READ,
    "DELETE /v1/collections/{collection}/documents/{doc_id}": Access.ADMIN,
    "GET /v1/collections/{collection}/documents": Access.READ,
    "POST /v1/collections/{collection}/snapshot": Access.ADMIN,
    "POST /v1/snapshots/restore": Access.ADMIN,
}


@pytest.fixture
def app(workdir: Path) -> FastAPI:
    return create_app()  # built, not started: no model, no Redis


def test_every_route_declares_its_level(app: FastAPI) -> None:
    assert route_levels(app) == EXPECTED


def test_a_route_without_a_level_is_refused(app: FastAPI) -> None:
    @app.get("/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="/v1/forgotten"):
        route_levels(app)


def test_keys_are_checked_at_start_and_never_echoed() -> None:
    for bad, reason in (("short-key", "16 characters"), (" " + ADMIN_KEY, "spaces"),
                        (ADMIN_KEY + "\n", "control")):
        with pytest.raises(ValidationError, match=reason) as refused:
            Settings(_env_file=None, api_key=bad)  # type: ignore[call-arg]
        assert bad.strip() not in str(refused.value)
    with pytest.raises(ValidationError, match="BIENC_API_KEY too"):
        Settings(_env_file=None, read_api_key=READ_KEY)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="differ"):
        Settings(_env_file=None, api_key=ADMIN_KEY, read_api_key=ADMIN_KEY)  # type: ignore[call-arg]
    both = Settings(_env_file=None, api_key=ADMIN_KEY, read_api_key=READ_KEY,  # type: ignore[call-arg]
                    cors_origins=" https://a.test , https://b.test,")
    assert both.cors_origin_list == ["https://a.test", "https://b.test"]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.test", False),
])
def test_only_loopback_counts_as_private(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serving_a_network_needs_a_key_or_a_knowing_opt_out() -> None:
    open_settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert check_exposure("127.0.0.1", open_settings) is None  # as before, on loopback
    with pytest.raises(ConfigError) as refused:
        check_exposure("0.0.0.0", open_settings)
    assert "BIENC_API_KEY" in str(refused.value) and "BIENC_ALLOW_ANONYMOUS=true" in str(refused.value)
    assert check_exposure("0.0.0.0", Settings(_env_file=None, api_key=ADMIN_KEY)) is None  # type: ignore[call-arg]
    warning = check_exposure("0.0.0.0", Settings(_env_file=None, allow_anonymous=True))  # type: ignore[call-arg]
    assert warning is not None and "no API key" in warning
