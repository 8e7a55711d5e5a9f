"""Shared fixtures and the test tiers.

Tiers, by folder, each marked by what it needs (the marker is added here, from the folder):
    unit/         nothing: no services, no model; `pytest tests/unit` passes with Redis stopped
    model/        `model`: loads the real model (from its PyPI package), nothing running
    integration/  `integration`: Redis on 127.0.0.1:6379, the real model, real processes, HTTP
    browser/      `browser`: Debian's chromium (Playwright drives it), a live `bienc serve`
    faults/       `faults`: subprocesses killed at named crash points (BIENC_CRASH_AT, see
                  bienc/config/crash.py), then reopened and checked; Redis and the real model

Converted models and data folders live under temporary directories, never in the user's
cache: BIENC_MODEL_CACHE_DIR points at one for the whole session (subprocesses included).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

    from bienc.encoding.encoder import Encoder
    from bienc.store.interface import Store

# Tests use their own Redis database on the machine's server, flushed before and after.
TEST_REDIS_URL = os.environ.get("BIENC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
MODEL_CACHE_DIR = Path(tempfile.mkdtemp(prefix="bienc-test-models-"))
os.environ["BIENC_MODEL_CACHE_DIR"] = str(MODEL_CACHE_DIR)
KEPT_VARIABLES = frozenset({"BIENC_MODEL_CACHE_DIR", "BIENC_TEST_REDIS_URL", "BIENC_TEST_STRICT"})


def skip_without(tool: str, why: str) -> None:
    """Skip a test whose tool is not installed; fail it where BIENC_TEST_STRICT is set (CI),
    so that a missing install step cannot pass as a skip."""
    skip_unless_strict(f"{tool} is not installed ({why}); .ci/run installs it")


def skip_unless_strict(reason: str) -> None:
    """Skip a test that this machine cannot run; fail it where BIENC_TEST_STRICT is set (CI,
    which has what every test needs), so that it cannot pass there as a skip."""
    if os.environ.get("BIENC_TEST_STRICT"):
        pytest.fail(reason)
    pytest.skip(reason)

_TIERS = {"model": ("model",), "integration": ("integration", "model"),
          "browser": ("browser", "model"), "faults": ("faults", "model")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(root).parts[0]
        for marker in _TIERS.get(tier, ()):
            item.add_marker(marker)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(MODEL_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def model_path() -> str:
    from bienc.encoding.plan import resolve_model_location

    return resolve_model_location("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tokenizer(model_path: str) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    from bienc.config.settings import Settings
    from bienc.encoding.encoder import load_encoder

    return load_encoder(Settings(_env_file=None, dtype="float32",  # type: ignore[call-arg]
                                 model_cache_dir=MODEL_CACHE_DIR))


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {TEST_REDIS_URL} (set BIENC_TEST_REDIS_URL)")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean current directory with no BIENC_* settings inherited from the shell."""
    for name in list(os.environ):
        if name.startswith("BIENC_") and name not in KEPT_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=["qdrant-local", "edge"])
def each_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each embedded engine: qdrant-client's local mode (the server's
    request path) and Qdrant Edge."""
    from qdrant_client import QdrantClient

    from bienc.store.edge import EdgeVectorStore
    from bienc.store.qdrant import VectorStore

    opened: Store = (VectorStore(QdrantClient(location=":memory:"), ":memory:", remote=False)
                     if request.param == "qdrant-local" else EdgeVectorStore(tmp_path / "edge"))
    yield opened
    opened.close()
