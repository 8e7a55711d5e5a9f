"""The one place that reads configuration: `BIENC_*` environment variables, validated at start."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bienc.config.indexed_fields import IndexType, parse_index_declarations

MAX_TOP_K = 1000
# HNSW candidates a dense search keeps per document it asks for (bienc.store.interface.hnsw_ef):
# a graph walk's recall depends on how many candidates it keeps per result wanted (Malkov and
# Yashunin, 2018), and a search of n documents reads their best chunks among about twice as
# many chunks as a document has (SciFact: 4.0 at the default chunking)
HNSW_EF_PER_DOCUMENT = 8
# Points from which a part's graph takes BIENC_HNSW_M_LARGE links per node (the embedded
# store): at the same candidate list a graph finds fewer true neighbours as it grows, and more
# links win them back. Measured with bench/search_latency.py (240 candidates), recall@10 on
# SciFact chunks at m 16 fell from 0.99 at 100,000 points to 0.947 at 1,000,000 (0.973 at
# m 32), so the step sits between the two sizes
LARGE_PART_POINTS = 250_000
MIN_KEY_CHARS = 16
# an entry of BIENC_WEBHOOK_ALLOWED_HOSTS: host, host:port, an IPv6 address, [v6], [v6]:port
_HOST_ENTRY = re.compile(r"[A-Za-z0-9._-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
                         r"|[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f:.]*")


class Settings(BaseSettings):
    """Every knob bienc has. Each field `x` is read from `BIENC_X`."""

    # hide_input_in_errors: an invalid value (an API key) never reaches a log through an error
    model_config = SettingsConfigDict(env_prefix="BIENC_", extra="ignore", hide_input_in_errors=True)

    # Encoder
    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="sentence-transformers model name or local path (default: bundled, offline)",
    )
    hf_offline: bool = Field(default=True, description="never reach the Hugging Face hub")
    device: str = Field(default="cpu", description="torch device for the encoder")
    backend: Literal["auto", "torch", "openvino"] = Field(
        default="auto", description="what runs the model: auto (openvino on a CPU when installed), "
        "torch, openvino (converted locally and cached in MODEL_CACHE_DIR)",
    )
    dtype: str = Field(
        default="auto",
        description="encoder precision: auto (int8 where the CPU has int8 dot products: VNNI or "
        "AMX; else bfloat16 where it has native bf16; else float32), float32, bfloat16, int8 "
        "(openvino only)",
    )
    encode_batch_size: int = Field(default=32, ge=1, le=1024, description="texts per forward pass")
    max_batch_tokens: int = Field(
        default=8192, ge=16, description="padded tokens per forward pass (texts x longest text)"
    )
    encode_threads: int = Field(
        default=0, ge=0, description="threads of one forward pass; 0 = the library's default (all cores)"
    )
    model_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "bienc" / "models",
        description="converted models (openvino backend), keyed by weights and precision",
    )
    max_seq_length: int = Field(default=256, ge=16, le=8192, description="model's token window")
    query_cache: int = Field(
        default=4096, ge=0, le=10_000_000, description="recent queries whose vectors a process keeps "
        "(per model; 1.5 KB each at 384 dimensions); a repeated query costs no encoding. 0 = none",
    )
    max_models: int = Field(
        default=2, ge=1, le=16, description="models a process keeps loaded at once (collections "
        "encoded by different models: the least recently used is unloaded)",
    )

    # Chunking
    chunking: bool = Field(
        default=True, description="split long documents; false = one window, the rest cut off"
    )
    chunk_tokens: int = Field(default=128, ge=16, description="tokens per chunk (model tokenizer)")
    chunk_overlap: int = Field(default=16, ge=0, description="tokens shared by neighbouring chunks")

    # Lexical vectors (BM25), for lexical and hybrid search; recorded by each new collection
    lexical: bool = Field(
        default=True, description="new collections also keep each document's BM25 vector"
    )
    bm25_k: float = Field(default=1.2, ge=0.0, le=10.0, description="BM25 term-frequency saturation")
    bm25_b: float = Field(default=0.75, ge=0.0, le=1.0, description="BM25 length normalisation")
    bm25_avg_len: float = Field(
        default=256.0, gt=0.0, le=1e6, description="BM25 average document length, in BM25 tokens"
    )

    # Store
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server URL; unset = the embedded store (bienc.config.topology)"
    )
    qdrant_api_key: str | None = Field(default=None, description="API key for the Qdrant server")
    qdrant_path: str = Field(
        default="", description="embedded store folder, or ':memory:' (with EMBEDDED_STORE="
        "qdrant-local); empty = DATA_DIR/edge or DATA_DIR/qdrant"
    )
    embedded_store: Literal["qdrant-local", "edge"] = Field(
        default="edge",
        description="engine without a server: qdrant-client local mode (exact) or Qdrant Edge (HNSW)",
    )
    hnsw_m: int = Field(default=16, ge=4, le=128, description="HNSW links per node (new collections)")
    hnsw_m_large: int = Field(
        default=32, ge=4, le=128, description="HNSW links per node in an embedded store's parts "
        "of LARGE_PART_POINTS points or more, where more than BIENC_HNSW_M"
    )
    hnsw_ef_construct: int = Field(
        default=100, ge=4, description="HNSW build-time candidate list (new collections)"
    )
    hnsw_ef: int = Field(default=512, ge=1, description="HNSW search-time candidate list, at most")
    hnsw_ef_per_document: int = Field(
        default=HNSW_EF_PER_DOCUMENT, ge=1, description="HNSW search-time candidates per "
        "document a search asks for (128 at least, BIENC_HNSW_EF at most)"
    )
    quantization: Literal["none", "int8"] = Field(
        default="none", description="int8: scalar-quantised copies of the vectors searched first, "
        "the top candidates rescored with the originals (new collections)",
    )
    quantization_oversampling: float = Field(
        default=2.0, ge=1.0, description="candidates rescored per wanted result, with int8"
    )
    qdrant_timeout_s: int = Field(default=30, ge=1, description="per-request timeout to Qdrant")
    shard_number: int | None = Field(default=None, ge=1, description="new collections' shards")
    replication_factor: int | None = Field(default=None, ge=1, description="new collections' replicas")
    collection: str = Field(default="documents", description="collection used when none is named")
    indexed_fields: str = Field(
        default="", description="metadata fields with a payload index in every collection, as "
        "KEY:TYPE pairs separated by commas, TYPE one of keyword, integer, float, bool, datetime "
        "(e.g. 'lang:keyword,year:integer,published:datetime'); a filter's range of the other "
        "kind on such a field is refused")

    # Queue
    broker_url: str | None = Field(
        default=None, description="Redis URL of the Celery broker; unset = embedded Redis in DATA_DIR"
    )
    data_dir: Path = Field(default=Path(".bienc"), description="embedded store and queue live here")
    ingest_batch_size: int = Field(
        default=256, ge=1, le=10_000,
        description="documents per task (a worker plans the forward batches of one task at a time)",
    )
    ingest_batch_chars: int = Field(
        default=2_000_000, ge=1, description="characters of text per task, at most (a batch holds "
        "one document at least): keeps each queue message small however long the documents",
    )
    task_max_retries: int = Field(default=5, ge=0, description="retries of a store outage per batch")
    retry_backoff_s: float = Field(default=2.0, gt=0, description="first retry delay, doubled each try")
    retry_backoff_max_s: float = Field(default=60.0, gt=0, description="cap on one retry delay")
    job_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1,
        description="how long a finished job's status is kept after its last change (a job with "
        "dead letters: until they are replayed or deleted)",
    )
    tombstone_retention_s: int = Field(
        default=7 * 24 * 3600, ge=1,
        description="how long a deleted document's version is kept after the delete, so that "
        "an older write of it that arrives later (a redelivered batch, a replayed dead letter) is "
        "superseded instead of bringing it back",
    )
    visibility_timeout_s: int = Field(
        default=900, ge=1, description="a batch unacknowledged this long is redelivered"
    )
    worker_concurrency: int = Field(default=1, ge=1, description="tasks a worker runs at once")
    lease_s: float = Field(
        default=30.0, ge=1, le=3600, description="a writer of a collection, and the worker running "
        "a reindex's start or finish, renew a lease this long every third of it: a process that "
        "dies stops holding a reindex's fence or a snapshot this long after (on the embedded "
        "queue, at once)",
    )

    # Backpressure
    max_queued_documents: int = Field(
        default=200_000, ge=1, description="API answers 429 while about this many documents wait"
    )

    # Input limits
    max_text_chars: int = Field(default=1_000_000, ge=1, description="longest accepted document")

    # Files (PDF, DOCX, HTML, Markdown, text): parsed where they arrive, in separate processes
    max_file_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="largest file ingested, from a folder or an "
        "upload; a larger one fails alone (upload: 413)",
    )
    parse_timeout_s: float = Field(
        default=60.0, gt=0, description="time limit to parse one file; a parser over it is stopped "
        "and that file fails alone",
    )
    parse_processes: int = Field(
        default=1, ge=1, le=64, description="processes parsing files at once, per ingesting process",
    )

    # HTTP API
    api_max_documents: int = Field(default=1000, ge=1, description="documents per ingest request")
    api_max_request_bytes: int = Field(default=10_000_000, ge=1, description="largest request body")
    api_max_upload_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1, description="largest upload request body: POST "
        "/v1/collections/{c}/files, all its files together (each file is also held to "
        "MAX_FILE_BYTES), or a snapshot sent to POST /v1/snapshots/restore",
    )
    api_max_files: int = Field(default=1000, ge=1, description="files per upload request")
    upload_dir: Path | None = Field(
        default=None, description="where uploaded files wait, on the API's own disk, until parsed "
        "(then deleted); unset = the system's temporary folder",
    )
    api_key: str | None = Field(
        default=None, description="admin key: every API route needs a key when set (`Authorization: "
        "Bearer KEY` or `X-API-Key: KEY`); required to serve on a non-loopback address",
    )
    read_api_key: str | None = Field(
        default=None, description="read-only key: list, get, search and read jobs, nothing that writes"
    )
    allow_anonymous: bool = Field(
        default=False, description="serve without a key on a non-loopback address (logged at start)"
    )
    # Job webhooks (bienc.queue.webhooks): a job may name a callback_url, POSTed when it ends
    webhook_allowed_hosts: str = Field(
        default="", description="comma-separated hosts (`host` or `host:port`) a job's callback_url "
        "may name; empty = webhooks disabled (a callback_url is refused with 422)",
    )
    webhook_secret: str | None = Field(
        default=None, description="key of the HMAC-SHA256 signature on every webhook "
        "(X-Bienc-Signature); required for webhooks, at least 16 characters",
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, le=100, description="deliveries tried per finished job before the webhook "
        "is recorded as failed on it",
    )
    webhook_backoff_s: float = Field(default=2.0, gt=0, description="wait before the second "
                                     "delivery attempt, doubled each attempt")
    webhook_backoff_max_s: float = Field(default=60.0, gt=0, description="cap on one wait between "
                                         "delivery attempts")
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="time one delivery attempt may take, connecting and "
        "answering included (it holds a worker meanwhile)",
    )
    cors_origins: str = Field(
        default="", description="comma-separated origins whose pages may call the API from a browser "
        "('*' = any); empty = none. Keys travel in headers, never as credentials (cookies)",
    )

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in {"auto", "float32", "bfloat16", "int8"}:
            raise ValueError("must be one of auto, float32, bfloat16, int8")
        return value

    @field_validator("broker_url")
    @classmethod
    def _redis_broker(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// or rediss:// URL (job state lives in Redis)")
        return value or None

    @field_validator("indexed_fields")
    @classmethod
    def _index_declarations(cls, value: str) -> str:
        parse_index_declarations(value)
        return value

    @field_validator("qdrant_url")
    @classmethod
    def _empty_url_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("api_key", "read_api_key", "webhook_secret")
    @classmethod
    def _long_enough_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        # the message never repeats the key: it ends up in logs
        what = "a webhook secret" if info.field_name == "webhook_secret" else "an API key"
        if value and len(value) < MIN_KEY_CHARS:
            raise ValueError(
                f"{what} needs at least {MIN_KEY_CHARS} characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if value is not None and (value != value.strip() or not value.isprintable()):
            raise ValueError(f"{what} cannot hold spaces at its ends or control characters")
        return value or None

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _host_entries(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if entry and not _HOST_ENTRY.fullmatch(entry):
                raise ValueError(f"{entry[:100]!r} is not a host, host:port, [IPv6] or [IPv6]:port "
                                 "(no scheme, no path, no wildcard)")
        return value

    @model_validator(mode="after")
    def _read_key_beside_admin_key(self) -> Settings:
        if self.read_api_key and not self.api_key:
            raise ValueError("BIENC_READ_API_KEY needs BIENC_API_KEY too (else writes would be open)")
        if self.read_api_key and self.read_api_key == self.api_key:
            raise ValueError("BIENC_READ_API_KEY must differ from BIENC_API_KEY")
        return self

    @model_validator(mode="after")
    def _overlap_below_window(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"BIENC_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"BIENC_CHUNK_TOKENS ({self.chunk_tokens})"
            )
        return self

    @model_validator(mode="after")
    def _redelivery_after_retry_wait(self) -> Settings:
        # A batch waiting for its retry is unacknowledged; it must not be redelivered meanwhile.
        if self.visibility_timeout_s <= self.retry_backoff_max_s:
            raise ValueError(
                f"BIENC_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed "
                f"BIENC_RETRY_BACKOFF_MAX_S ({self.retry_backoff_max_s})"
            )
        # so is a webhook waiting for its next attempt, where webhooks are on
        if self.webhook_allowed_hosts.strip() and \
                self.visibility_timeout_s <= self.webhook_backoff_max_s + self.webhook_timeout_s:
            raise ValueError(
                f"BIENC_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed "
                f"BIENC_WEBHOOK_BACKOFF_MAX_S + BIENC_WEBHOOK_TIMEOUT_S "
                f"({self.webhook_backoff_max_s + self.webhook_timeout_s})"
            )
        return self


    @property
    def indexed_field_types(self) -> dict[str, IndexType]:
        return parse_index_declarations(self.indexed_fields)

    @property
    def webhook_host_list(self) -> list[str]:
        return [host.strip().lower() for host in self.webhook_allowed_hosts.split(",") if host.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read from the environment once per process."""
    return Settings()
