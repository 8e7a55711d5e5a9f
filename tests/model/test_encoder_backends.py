"""Encoder backends with the real model: each agrees with torch float32, the converted model is
cached, and batching by tokens does not change a vector."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from bienc.config.errors import ModelLoadError
from bienc.config.settings import Settings
from bienc.encoding.encoder import Encoder, load_encoder


def _sample_texts() -> list[str]:
    lines = resources.files("bienc").joinpath("sample_corpus.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def reference() -> Encoder:
    return load_encoder(Settings(backend="torch", dtype="float32"))


@pytest.mark.parametrize(("backend", "dtype", "min_cosine"), [
    ("torch", "bfloat16", 0.999), ("openvino", "float32", 0.9999),
    ("openvino", "bfloat16", 0.999), ("openvino", "int8", 0.97),
])
def test_each_backend_agrees_with_torch_float32(reference: Encoder, cache_dir: Path, backend: str,
                                                dtype: str, min_cosine: float) -> None:
    encoder = load_encoder(Settings(backend=backend, dtype=dtype, model_cache_dir=cache_dir))
    assert encoder.encoding == f"{backend}/{dtype}"
    texts = _sample_texts()
    want, got = reference.encode_documents(texts), encoder.encode_documents(texts)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cosines = (want * got).sum(axis=1)
    assert cosines.min() >= min_cosine, cosines
    # the same document wins each query as with float32
    queries = ["Where is the Eiffel Tower?", "a language for programming", "the capital of Germany"]
    assert list((reference.encode_queries(queries) @ want.T).argmax(axis=1)) == \
        list((encoder.encode_queries(queries) @ got.T).argmax(axis=1))


def test_the_converted_model_is_cached(cache_dir: Path) -> None:
    settings = Settings(backend="openvino", dtype="bfloat16", model_cache_dir=cache_dir)
    load_encoder(settings)
    exports = sorted(cache_dir.iterdir())
    assert [p.name for p in exports if p.name.startswith(".")] == []  # no half-written export
    model_files = sorted(cache_dir.glob("*/model.xml"))
    stamps = [p.stat().st_mtime_ns for p in model_files]
    load_encoder(settings)
    assert sorted(cache_dir.glob("*/model.xml")) == model_files  # found, not exported again
    assert [p.stat().st_mtime_ns for p in model_files] == stamps


def test_token_batching_changes_no_vector(reference: Encoder) -> None:
    texts = ["short", "a somewhat longer sentence about tidal energy and the moon", "x " * 300,
             *_sample_texts()]
    together = reference.encode_documents(texts)
    alone = np.vstack([reference.encode_documents([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    streamed = list(reference.encode_stream(texts))  # what a worker consumes, batch by batch
    assert sorted(i for rows, _ in streamed for i in rows) == list(range(len(texts)))
    assert streamed[0][0][0] == 2  # the longest text comes first
    for rows, vectors in streamed:
        assert np.allclose(vectors, together[rows], atol=1e-5)


def test_an_impossible_combination_says_what_to_set() -> None:
    with pytest.raises(ModelLoadError, match="BIENC_BACKEND=openvino"):
        load_encoder(Settings(backend="torch", dtype="int8"))


def test_warm_up_passes_one_query_of_every_length() -> None:
    """A server warms each query shape at start (OpenVINO prepares kernels per shape). Its own
    encoder: the session's shared one may have been warmed by an earlier test's server."""
    encoder = load_encoder(Settings(dtype="float32"))
    calls = encoder.calls
    assert encoder.warm_up(16) == list(range(3, 17))  # [CLS] word... [SEP]
    assert encoder.calls - calls == 14
    assert encoder.warm_up(18) == list(range(3, 19))
    assert encoder.calls - calls == 16  # a second start warms only what is new


def test_int8_vectors_do_not_depend_on_the_batch_width(cache_dir: Path) -> None:
    """A text encoded alone (its batch exactly as wide as it) and padded inside a wider batch
    must get the same vector, at every width up to the model's window. OpenVINO's int8 graph
    broke this at width 32 on an AMX CPU (bienc.encoding.openvino.OpenVINORunner)."""
    encoder = load_encoder(Settings(backend="openvino", dtype="int8", model_cache_dir=cache_dir))
    words = ["the", "cell", "membrane", "protein", "binds", "calcium", "and", "regulates"]
    # every width from 3 to 256 tokens, [CLS] and [SEP] included
    texts = [" ".join(words[i % len(words)] for i in range(n)) for n in range(1, 254)]
    alone = np.vstack([encoder.encode_queries([t]) for t in texts])
    padded = np.vstack([encoder.encode_queries([t, t + " and four more words"])[:1]
                        for t in texts])
    cosines = (alone * padded).sum(axis=1)
    widths = [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
    assert {w: round(float(c), 3) for w, c in zip(widths, cosines, strict=True) if c < 0.999} == {}
