"""Shared fixtures: the real model loaded once, a private Redis database, temp folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.encoder import Encoder, load_encoder
from core.encoding_plan import resolve_model_location
from core.settings import Settings

# Tests use their own Redis database on the machine's server, flushed before and after.
TEST_REDIS_URL = os.environ.get("BIENC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def model_path() -> str:
    return resolve_model_location("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tokenizer(model_path: str) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return load_encoder(Settings(qdrant_path=":memory:", dtype="float32"))


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
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
    """A clean current directory with no BIENC_* variables inherited from the shell."""
    for name in list(os.environ):
        if name.startswith("BIENC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
