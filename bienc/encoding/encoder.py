"""Text to unit-length vectors with a sentence-transformers model, loaded once per process and
run by torch or by OpenVINO (bienc.encoding.openvino), in forward batches planned by tokens."""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bienc.config.errors import ModelLoadError
from bienc.config.settings import Settings
from bienc.encoding.plan import (
    choose_backend,
    choose_dtype,
    model_identity,
    openvino_available,
    resolve_model_location,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from bienc.encoding.openvino import OpenVINORunner


def plan_batches(lengths: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Group text indices into forward batches, longest first. A batch holds at most
    `max_texts` texts and `max_tokens` padded tokens (texts x its longest text), and padding
    is at most a quarter of it, so that one long text never pads a batch of short ones. A text
    longer than `max_tokens` gets a batch alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    useful = 0
    for index in order:
        if current:
            padded = (len(current) + 1) * lengths[current[0]]
            if (len(current) >= max_texts or padded > max_tokens
                    or 4 * (useful + lengths[index]) < 3 * padded):
                batches.append(current)
                current, useful = [], 0
        current.append(index)
        useful += lengths[index]
    if current:
        batches.append(current)
    return batches


Runner = Callable[[Mapping[str, Any]], np.ndarray]
QUERY_WARM_UP_TOKENS = 64  # query lengths warmed at a server's start (Encoder.warm_up)
TOKENIZE_WINDOW = 2048  # texts tokenised at once (bounds the padded tensors)
QUERY_YIELD_S = 0.25  # the longest a document batch waits to start while queries are encoded


def _rows(value: Any, rows: list[int], width: int, n: int) -> Any:
    """`rows` of a per-text tensor, its token axis cut to `width`; anything else unchanged."""
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0 or shape[0] != n:
        return value
    picked = value[rows]
    return picked[:, :width] if len(shape) == 2 else picked


class _TorchRunner:
    def __init__(self, model: SentenceTransformer):
        self._model = model

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        import torch
        from sentence_transformers.util import batch_to_device

        with torch.inference_mode():
            output = self._model(batch_to_device(dict(features), self._model.device))
            return output["sentence_embedding"].float().cpu().numpy()  # type: ignore[no-any-return]


class _WaitingQueries:
    """One caller's queries, waiting for the query runner; answered with their vectors or
    with the error that encoding them raised."""

    __slots__ = ("error", "texts", "vectors")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self.vectors is not None or self.error is not None


def _own_copy(error: BaseException) -> BaseException:
    """A new instance of `error` (the same class and arguments, else a RuntimeError saying
    it), for another thread to raise: raising one instance in several threads mixes their
    tracebacks."""
    try:
        return copy.copy(error)
    except Exception:
        return RuntimeError(f"encoding the queries failed: {error!r}")


class Encoder:
    """A loaded model. `encode_*` return float32 arrays of shape (n, dimension), rows of norm 1.

    `backend` and `dtype` say what computes the vectors (torch or openvino; float32, bfloat16
    or int8); `encoding` names the pair, which a collection records. Texts are batched by
    tokens (plan_batches). Thread-safe: the tokenizer is used by one caller at a time (a short
    lock); documents take turns on the model batch by batch, and queries run on a runner of
    their own (their own OpenVINO infer request), so that a query never waits for a document
    batch to finish; queries that wait for the query runner are encoded together. `calls`
    counts encode requests with non-empty input, so tests can assert that unchanged
    documents cost no encoding; `query_passes` counts the queries' forward passes.
    """

    def __init__(self, model: SentenceTransformer, identity: str, *, backend: str = "torch",
                 dtype: str = "float32", batch_size: int = 32, max_batch_tokens: int = 8192,
                 runner: Runner | None = None, query_runner: Runner | None = None,
                 weights: str | None = None, source: str | None = None, query_cache: int = 0):
        self._model = model
        self._runner: Runner = runner or _TorchRunner(model)
        # a torch module serves concurrent forward passes; another runner is shared unless a
        # twin is given
        self._query_runner: Runner = query_runner or (_TorchRunner(model) if runner is None else runner)
        self.identity = identity
        self.weights = weights  # sha256 of the weights (a collection records it)
        self.source = source  # what BIENC_MODEL named
        self.backend = backend
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        dimension = model.get_embedding_dimension()
        if dimension is None:
            raise ModelLoadError(f"model {identity!r} does not report its embedding dimension")
        self.dimension: int = dimension
        self.max_seq_length: int = model.max_seq_length or 512
        self.calls = 0
        self._calls_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        # queries are tokenised apart from documents, by a copy of the model's preprocessing
        # with a tokenizer of its own: a query never waits while a window of documents (up to
        # TOKENIZE_WINDOW texts) is tokenised
        own = _own_preprocessing(model)
        self._query_preprocessing = own or (model.preprocess, model.tokenizer)
        self._query_tokenizer_lock = threading.Lock() if own else self._tokenizer_lock
        self._runner_lock = threading.Lock()
        self._query_lock = self._runner_lock if self._query_runner is self._runner else threading.Lock()
        self._waiting: list[_WaitingQueries] = []  # queries waiting for a leader to take them
        self._waiting_changed = threading.Condition()
        self._leading = False  # a caller is encoding the queries it took
        self.query_passes = 0  # forward passes run for queries
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()  # least recent first
        self._query_cache_size = query_cache
        self._queries = 0  # queries being encoded now; documents yield to them
        self._queries_changed = threading.Condition()
        self._warm_lengths: set[int] = set()  # query lengths warm_up() has passed

    @property
    def encoding(self) -> str:
        return f"{self.backend}/{self.dtype}"

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries' vectors, on the query runner: never behind a document batch. The vectors
        of the last `query_cache` distinct queries are kept: a repeated one costs nothing."""
        texts = list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing = []
        with self._calls_lock:
            for row, text in enumerate(texts):
                if (cached := self._query_cache.get(text)) is not None:
                    self._query_cache.move_to_end(text)
                    out[row] = cached
                else:
                    missing.append(row)
        if missing:
            out[missing] = self._encode_queries([texts[row] for row in missing])
            self._remember([texts[row] for row in missing], out[missing])
        return out

    def _remember(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if not self._query_cache_size:
            return
        with self._calls_lock:
            for text, vector in zip(texts, vectors, strict=True):
                self._query_cache[text] = vector.copy()
                self._query_cache.move_to_end(text)
            while len(self._query_cache) > self._query_cache_size:
                self._query_cache.popitem(last=False)

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        """`texts`' vectors on the query runner, together with those of every other caller
        waiting meanwhile: one caller at a time leads, taking every query waiting and
        encoding them together (in one forward pass where the batching plan keeps them in
        one batch), while the others wait for it and return as soon as it has answered
        theirs. No timer: a query that finds no leader starts at once. On two cores one pass
        of 4 queries took 1.21 ms a query against 1.68 ms one by one (int8, AMD EPYC Zen 5),
        so concurrent searches share the encoder's cost."""
        waiting = _WaitingQueries(texts)
        self._count_call()
        with self._queries_changed:
            self._queries += 1
        try:
            with self._waiting_changed:
                self._waiting.append(waiting)
                while self._leading and not waiting.answered:
                    self._waiting_changed.wait()
                leads = not waiting.answered
                if leads:  # the queries waiting now are this caller's to encode
                    self._leading = True
                    together, self._waiting = self._waiting, []
            if leads:
                try:
                    with self._query_lock:
                        self._encode_together(together)
                finally:
                    with self._waiting_changed:
                        self._leading = False
                        self._waiting_changed.notify_all()
        finally:
            with self._queries_changed:
                self._queries -= 1
                self._queries_changed.notify_all()
        if waiting.error is not None:
            if leads:
                raise waiting.error
            raise _own_copy(waiting.error) from waiting.error  # one instance per thread
        assert waiting.vectors is not None
        return waiting.vectors

    def _encode_together(self, together: list[_WaitingQueries]) -> None:
        """Encode the queries of all `together` in one go (on the query runner, its lock
        held) and hand each its vectors, or the error."""
        try:
            texts = [text for waiting in together for text in waiting.texts]
            out = np.empty((len(texts), self.dimension), dtype=np.float32)
            with self._query_tokenizer_lock:
                planned = list(self._batches(texts, *self._query_preprocessing))
            for rows, features in planned:
                out[rows] = _unit_rows(self._query_runner(features))
                self.query_passes += 1
        except BaseException as error:
            for waiting in together:
                waiting.error = error
            raise
        start = 0
        for waiting in together:
            waiting.vectors = out[start:start + len(waiting.texts)]
            start += len(waiting.texts)

    def _yield_to_queries(self) -> None:
        """Hold a document batch back while queries are being encoded (QUERY_YIELD_S at
        most, so that a steady stream of queries slows documents down but never stops them):
        the cores go to the query that a user is waiting for."""
        with self._queries_changed:
            self._queries_changed.wait_for(lambda: self._queries == 0, timeout=QUERY_YIELD_S)

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character offsets of each text's tokens (no special tokens), as chunking reads them."""
        with self._tokenizer_lock:
            offsets: list[list[tuple[int, int]]] = self.tokenizer(
                list(texts), add_special_tokens=False, return_offsets_mapping=True,
                verbose=False)["offset_mapping"]
        return offsets

    def warm_up(self, max_tokens: int = QUERY_WARM_UP_TOKENS) -> list[int]:
        """Encode one query of each length up to `max_tokens` tokens (once per encoder), so
        that a single query's latency does not include the backend's first pass at its
        shape. OpenVINO prepares its kernels per input shape on first sight: encoding 300
        SciFact queries (median 21 tokens) one by one with int8 took p90 11.9 / p99 15.2 ms
        cold, 3.8 / 5.2 ms after this (which takes ~0.9 s). Returns the lengths warmed."""
        limit = min(max_tokens, self.max_seq_length)
        texts = [" ".join(["a"] * words) for words in range(1, limit)]
        for text, length in zip(texts, self.token_lengths(texts), strict=True):
            if length <= limit and length not in self._warm_lengths:
                self._encode_queries([text])  # not kept: no user asked
                self._warm_lengths.add(length)
        return sorted(n for n in self._warm_lengths if n <= limit)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model sees of each text (special tokens included, truncated)."""
        with self._tokenizer_lock:
            return self._token_lengths(texts)

    def _token_lengths(self, texts: Sequence[str], tokenizer: Any = None) -> list[int]:
        ids = (tokenizer or self.tokenizer)(list(texts), truncation=True,
                                            max_length=self.max_seq_length,
                                            verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with contextlib.closing(self.encode_stream(texts)) as stream:
            for rows, vectors in stream:
                out[rows] = vectors
        return out

    def encode_stream(self, texts: Sequence[str]) -> Generator[tuple[list[int], np.ndarray]]:
        """Encode `texts` forward batch by forward batch, longest texts first: yields the
        indices of a batch's texts and their unit vectors, so that a caller can use the first
        vectors while the rest are computed. A runner that runs several batches at once
        (OpenVINO's streams) gets the next batches while the first one runs; concurrent
        callers take turns batch by batch."""
        texts = list(texts)
        if not texts:
            return
        self._count_call()
        depth = getattr(self._runner, "depth", 1)
        running: deque[tuple[list[int], Callable[[], np.ndarray]]] = deque()
        try:
            for start in range(0, len(texts), TOKENIZE_WINDOW):
                # a generator: its first step tokenises the window (the tokenizer takes one
                # caller at a time), the next ones cut its tensors batch by batch
                batches = self._batches(texts[start : start + TOKENIZE_WINDOW],
                                        self._model.preprocess, self.tokenizer)
                while True:
                    with self._tokenizer_lock:
                        planned = next(batches, None)
                    if planned is None:
                        break
                    if len(running) >= depth:
                        rows, result = running.popleft()
                        yield rows, _unit_rows(result())
                    self._yield_to_queries()
                    running.append(([start + i for i in planned[0]], self._start(planned[1])))
            while running:
                rows, result = running.popleft()
                # a new array: the caller may keep it while the next batch runs
                yield rows, _unit_rows(result())
        finally:
            # a caller that stopped early, or a batch that failed: hand the requests back
            # (the error that ended the stream is the one raised)
            for _, result in running:
                with contextlib.suppress(Exception):
                    result()

    def _start(self, features: Mapping[str, Any]) -> Callable[[], np.ndarray]:
        start = getattr(self._runner, "start", None)
        if start is not None:  # runs batches side by side, hands out its requests itself
            return start(features)  # type: ignore[no-any-return]
        with self._runner_lock:
            vectors = self._runner(features)
        return lambda: vectors

    def _count_call(self) -> None:
        with self._calls_lock:
            self.calls += 1

    def _batches(self, texts: list[str], preprocess: Callable[[list[str]], Mapping[str, Any]],
                 tokenizer: Any) -> Iterator[tuple[list[int], Mapping[str, Any]]]:
        """Forward batches of `texts` (plan_batches) with their model inputs. The texts are
        tokenised once, by the model's own preprocessing (`preprocess`, whose tokenizer is
        `tokenizer`); each batch takes its rows of the padded tensors, cut to its longest
        text."""
        features = preprocess(texts)
        mask = features.get("attention_mask")
        if mask is None or getattr(tokenizer, "padding_side", "right") != "right":
            # cannot cut columns: tokenise each batch
            lengths = self._token_lengths(texts, tokenizer)
            for batch in plan_batches(lengths, self.batch_size, self.max_batch_tokens):
                yield batch, preprocess([texts[i] for i in batch])
            return
        lengths = mask.sum(dim=1).tolist()
        for batch in plan_batches(lengths, self.batch_size, self.max_batch_tokens):
            width = max(lengths[i] for i in batch)
            yield batch, {key: _rows(value, batch, width, len(texts)) for key, value in features.items()}


def _own_preprocessing(model: SentenceTransformer
                       ) -> tuple[Callable[[list[str]], Mapping[str, Any]], Any] | None:
    """The model's preprocessing on a tokenizer of its own (a fast tokenizer takes one caller
    at a time) and that tokenizer: a shallow copy of the model's first module, sharing its
    weights, with a deep copy of its processor. None where the first module keeps no
    `processor` (an older or custom module): then queries share the documents' tokenizer."""
    try:
        first: Any = model[0]
        processor = first.processor
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    twin = copy.copy(first)  # its own attribute dict; modules and weights shared
    twin.processor = copy.deepcopy(processor)
    return twin.preprocess, twin.tokenizer


def weights_digest(model: SentenceTransformer) -> Any:
    """sha256 over the model's weights (names and float32 values, in state-dict order): the
    model's identity that a collection records (`.hexdigest()`), and the OpenVINO cache's key."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    unit: np.ndarray = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit


def load_encoder(settings: Settings, model_source: str | None = None, encoding: str = "") -> Encoder:
    """Load a model (`model_source`, default BIENC_MODEL) with a backend and precision
    (`encoding`, "backend/dtype"; default the settings' choice), or raise ModelLoadError with
    what to change."""
    if settings.hf_offline:
        # huggingface_hub reads these when first imported, so they must be set before that.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    source = model_source or settings.model
    location = resolve_model_location(source)
    if encoding:
        backend, _, dtype = encoding.partition("/")
    else:
        backend = choose_backend(settings.backend, settings.device)
        dtype = choose_dtype(settings.dtype, settings.device, backend)
    _check_combination(backend, dtype, settings.device)
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if settings.encode_threads:
            torch.set_num_threads(settings.encode_threads)
        model = SentenceTransformer(location, device=settings.device)
        model.max_seq_length = min(settings.max_seq_length, model.max_seq_length or 512)
    except ModelLoadError:
        raise
    except Exception as exc:  # the hub and torch raise a zoo of types; the message is what matters
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load model {source!r} ({reason[:300]}). Set BIENC_MODEL to a "
            "sentence-transformers folder on disk, or to a model already in the Hugging Face "
            "cache (downloads are off while BIENC_HF_OFFLINE=true)."
        ) from exc
    digest = weights_digest(model)
    runner = query_runner = None
    if backend == "openvino":
        runner = _openvino_runner(model, digest, dtype, settings, source)
        query_runner = runner.twin()
    elif dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return Encoder(model, model_identity(source), backend=backend, dtype=dtype,
                   batch_size=settings.encode_batch_size,
                   max_batch_tokens=settings.max_batch_tokens, runner=runner,
                   query_runner=query_runner, weights=digest.hexdigest(), source=source,
                   query_cache=settings.query_cache)


def _check_combination(backend: str, dtype: str, device: str) -> None:
    if backend == "openvino" and device != "cpu":
        raise ModelLoadError(f"BIENC_BACKEND=openvino runs on the CPU; BIENC_DEVICE is {device!r}. "
                             "Use BIENC_BACKEND=torch for other devices.")
    if backend == "torch" and dtype == "int8":
        raise ModelLoadError("BIENC_DTYPE=int8 needs BIENC_BACKEND=openvino (torch runs float32 "
                             "or bfloat16)")
    if backend == "openvino" and not openvino_available():
        raise ModelLoadError("BIENC_BACKEND=openvino needs the openvino package: "
                             "`pip install openvino`, or set BIENC_BACKEND=torch")


def _openvino_runner(model: SentenceTransformer, digest: Any, dtype: str, settings: Settings,
                     source: str) -> OpenVINORunner:
    from bienc.encoding.openvino import INT8_AVOID_WIDTHS, OpenVINORunner, load_compiled

    try:
        compile_model = load_compiled(model, digest, dtype, settings.model_cache_dir,
                                      settings.encode_threads)
        return OpenVINORunner(compile_model,
                              avoid_widths=INT8_AVOID_WIDTHS if dtype == "int8" else frozenset())
    except ImportError as exc:
        raise ModelLoadError(f"BIENC_DTYPE=int8 quantises with nncf, which is not installed "
                             f"({exc}): `pip install nncf`, or choose bfloat16 or float32") from exc
    except Exception as exc:
        raise ModelLoadError(
            f"cannot convert model {source!r} to OpenVINO {dtype} ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Set BIENC_BACKEND=torch to run it in torch."
        ) from exc
