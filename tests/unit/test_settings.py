import pytest
from pydantic import ValidationError

from bienc.config.settings import Settings
from bienc.encoding.plan import choose_backend, choose_dtype, cpu_has_native_bf16


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BIENC_CHUNK_OVERLAP": "200"}, "BIENC_CHUNK_OVERLAP"),
        ({"BIENC_DTYPE": "fp8"}, "auto, float32, bfloat16, int8"),
        ({"BIENC_BACKEND": "onnx"}, "'auto', 'torch' or 'openvino'"),
        ({"BIENC_BROKER_URL": "amqp://guest@localhost//"}, "redis://"),
        ({"BIENC_VISIBILITY_TIMEOUT_S": "30"}, "BIENC_RETRY_BACKOFF_MAX_S"),
        ({"BIENC_ENCODE_BATCH_SIZE": "0"}, "greater than or equal to 1"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                      env: dict[str, str], message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_bf16_only_where_the_cpu_has_it() -> None:
    assert cpu_has_native_bf16("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert not cpu_has_native_bf16("flags\t\t: fpu avx2 avx512f\n")
    assert choose_dtype("float32", "cpu") == "float32"
    assert choose_dtype("auto", "cuda") == "float32"
    assert choose_dtype("auto", "cpu", "openvino", cpuinfo="flags\t: avx512f avx512_bf16\n") == "bfloat16"
    vnni = "flags\t: avx512f avx512_bf16 avx512_vnni\n"
    assert choose_dtype("auto", "cpu", "openvino", cpuinfo=vnni) == "int8"
    assert choose_dtype("auto", "cpu", "torch", cpuinfo=vnni) == "bfloat16"  # torch has no int8 path
    # no native bf16: full precision, never an emulated path
    assert choose_dtype("auto", "cpu", "openvino", cpuinfo="flags\t: avx2 avx512f\n") == "float32"
    assert choose_backend("auto", "cuda") == "torch"
    assert choose_backend("torch", "cpu") == "torch"
