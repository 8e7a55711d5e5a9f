"""The sentence-transformers model as an OpenVINO graph: converted locally from the loaded torch
model (no hub, no ONNX step), optionally quantised to int8, and cached on disk.

The graph takes the tokenizer's tensors and returns the model's sentence embedding, so the
model's own pooling and dense layers travel with it; tokenising and normalising stay in Python.

Cache layout: ``cache_dir/<key>/model.xml`` (+ ``.bin``). The key hashes the weights, the
kind of graph (float or int8) and the OpenVINO version, so a different model, a fine-tuned copy or an upgraded
OpenVINO exports again, and the same model under another name or path does not. A folder is
written under a temporary name and renamed into place, so concurrent workers never read half
an export; the one that loses the race uses the winner's copy.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import queue
import shutil
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the exported graph changes meaning
_CALIBRATION_TEXTS = 256
_PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "int8": "bf16"}
# Linux scheduling priority (nice) of the threads that encode documents: the lowest, so that
# where documents and queries share the cores (a server with its worker in the process, or a
# worker beside an API on one host) a query's threads get them (CFS gives a nice-0 thread ~68
# times the share of a nice-19 one) and an ingest runs at full speed when no query does.
DOCUMENT_NICE = 19


def cache_key(digest: Any, dtype: str) -> str:
    """Hash of the weights (bienc.encoding.encoder.weights_digest), the kind of graph and the
    OpenVINO version. float32 and bfloat16 share one graph (the precision is chosen when it
    is compiled); int8 has its own."""
    import openvino

    digest = digest.copy()
    graph = "int8" if dtype == "int8" else "float"
    digest.update(f"|{graph}|{openvino.__version__}|{EXPORT_FORMAT}".encode())
    return str(digest.hexdigest()[:24])


def calibration_texts(limit: int = _CALIBRATION_TEXTS) -> list[str]:
    """English prose of varied length for int8 calibration, found offline on any machine: the
    docstrings of Python's standard library, in a fixed order."""
    import argparse
    import collections
    import email.message
    import json as json_module
    import logging as logging_module
    import pathlib
    import subprocess
    import threading
    import unittest

    texts: list[str] = []
    for module in (argparse, collections, email.message, json_module, logging_module, pathlib,
                   subprocess, threading, unittest.case):
        for _, member in sorted(inspect.getmembers(module), key=lambda item: item[0]):
            for paragraph in (inspect.getdoc(member) or "").split("\n\n"):
                words = paragraph.split()
                if len(words) >= 12:
                    texts.append(" ".join(words))
    unique = list(dict.fromkeys(texts))
    # Paragraphs first (they are 12 to 256 words); should a Python ship fewer than `limit`,
    # neighbours joined four at a time fill up the set.
    mixed = unique + [" ".join(unique[i : i + 4]) for i in range(0, len(unique), 4)]
    return mixed[:limit]


def _embedding_module(model: SentenceTransformer, names: Sequence[str]) -> Any:
    """A torch module around the sentence-transformers model: tensors in, embedding out."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and "token_type_ids" in names:
                features["token_type_ids"] = token_type_ids
            return self.model(features)["sentence_embedding"]

    return SentenceEmbedding().eval()


def _tensors(model: SentenceTransformer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    features = model.preprocess(list(texts))
    return {k: v.numpy() for k, v in features.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")}


def _convert(model: SentenceTransformer, dtype: str) -> Any:
    import openvino as ov
    import torch

    example = _tensors(model, ["an example sentence", "a second, somewhat longer example text"])
    wrapped = _embedding_module(model, list(example))
    with torch.no_grad(), warnings.catch_warnings():
        # tracing notes shape checks it freezes (they hold for every input of this graph) and
        # torch's deprecation of the tracer OpenVINO uses; neither is the user's to act on
        warnings.simplefilter("ignore")
        graph = ov.convert_model(wrapped, example_input={k: torch.from_numpy(v)
                                                         for k, v in example.items()})
    if dtype == "int8":
        import nncf

        texts = calibration_texts()
        batches = [_tensors(model, texts[i : i + 8]) for i in range(0, len(texts), 8)]
        graph = nncf.quantize(graph, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(batches))
    return graph


def load_compiled(model: SentenceTransformer, digest: Any, dtype: str, cache_dir: Path,
                  threads: int) -> Callable[[str], Any]:
    """What compiles the OpenVINO model for `model` (its weights_digest) at `dtype`, exported
    once and then read from `cache_dir`: each call compiles one more copy (~1 s) for a
    performance hint ("LATENCY" or "THROUGHPUT"), with its own executor."""
    import openvino as ov

    folder = Path(cache_dir) / cache_key(digest, dtype)
    xml = folder / "model.xml"
    if not xml.is_file():
        log.warning("converting model to OpenVINO (%s graph), once; cached in %s",
                    "int8" if dtype == "int8" else "float", folder)
        started = time.monotonic()
        graph = _convert(model, dtype)
        tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
        tmp.mkdir(parents=True)
        ov.save_model(graph, tmp / "model.xml", compress_to_fp16=False)
        (tmp / "export.json").write_text(json.dumps({"graph": "int8" if dtype == "int8" else "float",
                                                     "format": EXPORT_FORMAT}))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process exported it first
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported the model to OpenVINO %s in %.1f s: %s", dtype,
                 time.monotonic() - started, folder)
    core = ov.Core()

    def compile_model(hint: str) -> Any:
        config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[dtype], "PERFORMANCE_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        return core.compile_model(str(xml), "CPU", config)

    return compile_model


def _compiled_at(nice: int, compile_model: Callable[[str], Any], hint: str) -> Any:
    """`compile_model(hint)` run on a thread of priority `nice`: OpenVINO starts the threads
    of the model's streams as it compiles it, and a Linux thread takes the priority of the
    thread that starts it, so the model then runs its batches at that priority whoever hands
    them over."""
    done: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)  # on Linux: this thread only
        except OSError as error:  # the model then runs at the process's priority
            log.warning("cannot lower the document threads' priority: %s", error)
        try:
            done.append(compile_model(hint))
        except BaseException as error:  # raised again in the caller's thread
            failed.append(error)

    compiler = threading.Thread(target=run, name="bienc-compile-documents")
    compiler.start()
    compiler.join()
    if failed:
        raise failed[0]
    return done[0]


INT8_AVOID_WIDTHS = frozenset({32})  # batch widths the int8 graph gets wrong (OpenVINORunner)


class OpenVINORunner:
    """Embeds tokenised batches with a compiled OpenVINO model, several batches at once.

    Documents run under the THROUGHPUT hint: OpenVINO splits the cores into streams (two on
    two cores, one thread each) and `start` keeps one batch in flight per stream, so that no
    core waits for the other at each layer's synchronisation point (docs/performance.md,
    "Streams": `python bench/encoder_levers.py` compares it with one request on every core),
    on threads of priority DOCUMENT_NICE (on Linux). Queries run on a `twin` under the
    LATENCY hint: one request on every core, the shortest time for one batch, on threads of
    the process's own priority.

    `avoid_widths`: batch widths (tokens) run one padding column wider. Measured with the
    int8 graph (OpenVINO 2026.4, bf16 inference hint) on an Intel Xeon with AMX: every text
    in a batch exactly 32 tokens wide came out wrong (cosine ~0.91 to float32, against
    ~0.996 at any other width from 2 to 256, and for the same text padded to 33), so 9 of
    SciFact's 300 test queries scored nDCG@10 0.6380 against 0.6445. The float graphs matched
    at every width. The extra column is masked out: it changes nothing else.
    """

    def __init__(self, compile_model: Callable[[str], Any], *, hint: str = "THROUGHPUT",
                 avoid_widths: frozenset[int] = frozenset()):
        self._compile = compile_model
        compiled = _compiled_at(DOCUMENT_NICE, compile_model, hint) \
            if hint == "THROUGHPUT" and sys.platform == "linux" else compile_model(hint)
        self.depth = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(self.depth):
            self._free.put(compiled.create_infer_request())
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._avoid_widths = avoid_widths

    def twin(self) -> OpenVINORunner:
        """A runner of its own copy of the compiled model, under the LATENCY hint, which runs
        while this one does (the queries' beside the documents'). A request of the documents'
        model would not: a query would wait for a document batch (measured: 141 ms p50 while
        a reindex encoded, against 5 ms)."""
        return OpenVINORunner(self._compile, hint="LATENCY", avoid_widths=self._avoid_widths)

    def start(self, features: Mapping[str, Any]) -> Callable[[], np.ndarray]:
        """Start embedding one batch on a free request (waiting for one if all are busy);
        returns what waits for its vectors. Call that exactly once: it hands the request
        back."""
        inputs = self._inputs_of(features)
        request = self._free.get()
        try:
            request.start_async(inputs)
        except BaseException:
            self._free.put(request)
            raise

        def result() -> np.ndarray:
            try:
                request.wait()
                # a copy: the request reuses its output buffer on its next call
                return np.array(request.get_output_tensor(0).data, dtype=np.float32)
            finally:
                self._free.put(request)

        return result

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        """One batch's vectors, run on the calling thread (OpenVINO's synchronous `infer`):
        no hand-over to the request's own thread and back, ~0.15 ms less for one query."""
        inputs = self._inputs_of(features)
        request = self._free.get()
        try:
            request.infer(inputs)
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)
        finally:
            self._free.put(request)

    def _inputs_of(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        inputs = {k: v.numpy() for k, v in features.items() if k in self._inputs}
        width = next(iter(inputs.values())).shape[1]
        if width in self._avoid_widths:  # one more column: pad id 0, attention mask 0
            inputs = {k: np.pad(v, ((0, 0), (0, 1))) for k, v in inputs.items()}
        return inputs
