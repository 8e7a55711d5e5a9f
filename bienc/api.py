"""The HTTP API: ingest, job status, search and collection management over FastAPI.

`bienc serve` runs it with uvicorn (one process). Errors are always `{"detail": "..."}`:
bad input 422, too large 413, missing 404, another model's collection 409, no key 401,
store or Redis down 503; 401 without a key (or a wrong one), 403 for a read-only key on a
route that writes (bienc.access). Where the topology says so, the lifespan runs the worker.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from importlib import resources as package_files
from pathlib import Path as FsPath
from pathlib import PurePosixPath
from typing import Annotated, Any, cast

import redis
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bienc.access import Access, requires, route_levels
from bienc.config.errors import (
    BiencError,
    CollectionError,
    CollectionNotFoundError,
    InvalidInputError,
    JobNotFoundError,
    StoreUnavailableError,
)
from bienc.config.settings import MAX_TOP_K, Settings, get_settings
from bienc.config.topology import Role, decide
from bienc.ingest.documents import MAX_ID_CHARS, Document, RecordError, json_problem, parse_record
from bienc.ingest.files import FileEntry, read_files
from bienc.ingest.producer import validate_collection_name
from bienc.ingest.sandbox import ParsePool
from bienc.queue.broker import redis_url
from bienc.queue.celery_app import INGEST_QUEUE
from bienc.resources import settle_heap
from bienc.runtime import Runtime, build_runtime
from bienc.search.fusion import Fusion
from bienc.search.modes import Mode
from bienc.search.searcher import SearchRequest
from bienc.store.filters import MetadataFilter, parse_filter
from bienc.store.record import COLLECTION_NAME, NAME_RULE, PHYSICAL_OR_NAME

log = logging.getLogger(__name__)
MAX_QUERIES = 100
MAX_JOBS_OFFSET = 1_000_000_000  # Redis takes 64-bit offsets; a page beyond this is empty anyway
MAX_REPORTED_ERRORS = 10
DOCUMENT_FIELDS = frozenset({"id", "text", "title", "metadata"})
_RETRY_AFTER_S = 30
UPLOAD_PATH = re.compile(r"/v1/collections/[^/]+/files")
UPLOAD_FIELD = "files"
_PROBE_TIMEOUT_S = 2.0

# Request bodies


_DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "text"],
    "additionalProperties": False,
    "properties": {
        "id": {"anyOf": [{"type": "string", "pattern": r"\S", "maxLength": MAX_ID_CHARS},
                         {"type": "integer"}],
               "description": "the document's id; ingesting it again replaces the document"},
        "text": {"type": "string", "pattern": r"\S", "description": "the text to encode"},
        "title": {"anyOf": [{"type": "string"}, {"type": "null"}],
                  "description": "starts every chunk, and counts for BM25"},
        "metadata": {"type": "object", "description": "returned with hits; filters match it"},
    },
}


class IngestBody(BaseModel):
    """Documents to queue. Each is checked on its own, with the rules of a file's records, so
    that an error names its index and field (`documents[3]: field 'text' is empty`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    documents: Annotated[list[Any], WithJsonSchema(
        {"type": "array", "items": _DOCUMENT_SCHEMA, "minItems": 1,
         "description": "the documents, at most BIENC_API_MAX_DOCUMENTS"})]


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "oneOf": [{"required": ["query"]}, {"required": ["queries"]}]})
    query: str | None = Field(default=None, description="one query (or give `queries`)")
    queries: list[str] | None = Field(default=None, min_length=1, max_length=MAX_QUERIES,
                                      description="several queries, encoded in one batch")
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K, description="documents per query")
    filter: dict[str, Any] | None = Field(
        default=None, description="metadata key -> a value or a list of values; every key must match")
    score_threshold: float | None = Field(
        default=None, description="least score returned, in the mode's terms: a cosine in [-1, 1] "
        "(dense), a BM25 score (lexical), a fused score (hybrid)")
    with_text: bool = Field(default=True, description="return each hit's full text")
    mode: Mode | None = Field(
        default=None, description="dense, lexical or hybrid; default: hybrid where the collection "
        "has lexical vectors, else dense")
    fusion: Fusion = Field(default="dbsf", description="hybrid mode's fusion: dbsf or rrf")

    @model_validator(mode="after")
    def _one_of_query_queries(self) -> SearchBody:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of 'query' (a string) or 'queries' (a list)")
        return self

    @property
    def query_list(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class ReindexBody(BaseModel):
    """What changes in a reindex; anything left out stays as the collection has it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = Field(default=None, min_length=1, max_length=1000,
                              description="sentence-transformers model name or local folder")
    chunk_tokens: int | None = Field(default=None, ge=16, le=8192, description="tokens per chunk")
    chunk_overlap: int | None = Field(default=None, ge=0, le=8191,
                                      description="tokens shared by neighbouring chunks")
    lexical: bool | None = Field(default=None, description="true: add (or keep) BM25 vectors; "
                                 "false: drop them")
    keep_old: bool = Field(default=False, description="keep the old physical collection")

    @model_validator(mode="after")
    def _overlap_below_window(self) -> ReindexBody:
        if self.chunk_tokens is not None and self.chunk_overlap is not None \
                and self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                             f"chunk_tokens ({self.chunk_tokens})")
        return self


CollectionName = Annotated[str, Path(description=NAME_RULE, json_schema_extra={"pattern": COLLECTION_NAME})]
PhysicalOrName = Annotated[str, Path(
    description="a collection's name, or a physical collection's (NAME@N, as GET /v1/collections "
                "lists one kept by a reindex)",
    json_schema_extra={"pattern": PHYSICAL_OR_NAME})]


# Input checks beyond the schema


def parse_document(record: Any, max_text_chars: int) -> Document:
    """One document of an ingest request, or RecordError naming the field."""
    if isinstance(record, dict):
        unknown = sorted(set(record) - DOCUMENT_FIELDS)
        if unknown:
            raise RecordError(f"unknown field {unknown[0]!r} (fields: id, text, title, metadata)")
    return parse_record(record, max_text_chars)


def parse_documents(records: list[Any], max_text_chars: int) -> list[Document]:
    """Every document, or InvalidInputError listing the first few bad ones by index."""
    documents, errors = [], []
    for index, record in enumerate(records):
        try:
            documents.append(parse_document(record, max_text_chars))
        except RecordError as exc:
            errors.append(f"documents[{index}]: {exc}")
    if errors:
        more = len(errors) - MAX_REPORTED_ERRORS
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        raise InvalidInputError(shown + (f"; and {more} more invalid documents" if more > 0 else ""))
    return documents


def check_search(body: SearchBody) -> tuple[list[str], MetadataFilter | None]:
    """The queries and the filter of a search request, or InvalidInputError naming what is
    wrong (a filter key or value included)."""
    queries = body.query_list
    for index, query in enumerate(queries):
        if json_problem(query):
            raise InvalidInputError(f"query {index} is not valid Unicode (lone surrogate)")
    if body.filter is not None:
        problem = json_problem(body.filter)
        if problem:
            raise InvalidInputError(f"field 'filter' {problem}")
    try:
        return queries, parse_filter(body.filter)
    except InvalidInputError as exc:
        raise InvalidInputError(f"field 'filter': {exc}") from exc


# Request size limit


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`: by its Content-Length before reading, and by
    the bytes actually received (a chunked body, or a Content-Length that lies).

    The rest of a refused body is read and dropped before the answer: a client that sends its
    whole body before reading (Python's urllib and requests do) would otherwise see its
    connection reset, since closing a socket with unread data resets it, and never read the
    413. Up to `drain_bytes` are dropped that way; a client announcing `Expect: 100-continue`
    (curl does) has sent nothing yet and is answered at once.

    File uploads (POST .../files) are held to `upload_max_bytes` instead and are not read
    here: the route streams them to disk, and a body that outgrows the limit while it streams
    is refused there (413) by the same count.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = 64 * 1024 * 1024,
                 upload_max_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes if upload_max_bytes is not None else max_bytes
        self.drain_bytes = max(drain_bytes, 2 * max_bytes)

    def _too_large(self, size: int | None, upload: bool = False) -> JSONResponse:
        return JSONResponse(status_code=413, headers={"Connection": "close"},
                            content={"detail": self._limit_message(size, upload)})

    def _limit_message(self, size: int | None, upload: bool) -> str:
        actual = f"request body is {size} bytes" if size is not None else "request body is larger"
        if upload:
            return (f"{actual}, over the upload limit of {self.upload_max_bytes} bytes (setting "
                    "api_max_upload_bytes, BIENC_API_MAX_UPLOAD_BYTES); send the files in several "
                    "requests")
        return (f"{actual}, over the limit of {self.max_bytes} bytes "
                "(setting api_max_request_bytes, BIENC_API_MAX_REQUEST_BYTES)")

    async def _stream_upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.upload_max_bytes:
                if message.get("more_body", False):
                    await self._drop_rest(receive, received)
                raise HTTPException(413, self._limit_message(None, True),
                                    headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)

    async def _drop_rest(self, receive: Receive, received: int) -> None:
        while received <= self.drain_bytes:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            received += len(message.get("body", b""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        upload = scope["method"] == "POST" and bool(UPLOAD_PATH.fullmatch(scope["path"]))
        limit = self.upload_max_bytes if upload else self.max_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drop_rest(receive, 0)
            await self._too_large(int(declared), upload)(scope, receive, send)
            return
        if upload:
            await self._stream_upload(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            more = message.get("more_body", False)
            if received > self.max_bytes:
                if more:
                    await self._drop_rest(receive, received)
                await self._too_large(None)(scope, receive, send)
                return
            chunks.append(chunk)
            if not more:
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


# Metrics and timings


class QueueDepthCollector(Collector):
    """bienc_queue_depth: messages waiting in the ingest queue, read from Redis at scrape."""

    def __init__(self, client: Callable[[], redis.Redis]):
        self._client = client

    def collect(self) -> Iterator[Metric]:
        try:
            depth = float(self._client().llen(INGEST_QUEUE))
        except (redis.RedisError, OSError, BiencError):
            depth = math.nan
        yield GaugeMetricFamily("bienc_queue_depth", "documents batches waiting in the ingest queue",
                                value=depth)


class Metrics:
    def __init__(self, probe: Callable[[], redis.Redis]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.documents_accepted = Counter(
            "bienc_documents_accepted", "documents accepted for ingest", registry=self.registry)
        self.search_requests = Counter(
            "bienc_search_requests", "search requests that passed validation", registry=self.registry)
        self.search_seconds = Histogram(
            "bienc_search_seconds", "time to answer a search request", registry=self.registry)
        self.encode_seconds = Histogram(
            "bienc_encode_seconds", "time to encode a search request's queries", registry=self.registry)
        self.registry.register(QueueDepthCollector(probe))


# The application


class ApiState:
    """What routes share: the runtime once started, settings, metrics, a short-timeout Redis."""

    def __init__(self, settings: Settings, runtime: Runtime | None):
        self.settings = settings
        self.runtime: Runtime | None = runtime
        self.encoder_ready = False
        self._probe: redis.Redis | None = None
        self._parse_pool: ParsePool | None = None
        self._pool_lock = threading.Lock()
        self.metrics = Metrics(self.probe)

    def probe(self) -> redis.Redis:
        """A Redis client with short timeouts, for health checks and the queue-depth gauge."""
        if self._probe is None:
            self._probe = redis.Redis.from_url(
                redis_url(self.settings), socket_timeout=_PROBE_TIMEOUT_S,
                socket_connect_timeout=_PROBE_TIMEOUT_S)
        return self._probe

    def queued_documents(self) -> int:
        """Documents waiting in the ingest queue (batches x batch size: an upper bound, loose
        when requests are smaller than a batch, so the limit errs early, never late)."""
        return int(self.probe().llen(INGEST_QUEUE)) * self.settings.ingest_batch_size

    @property
    def live(self) -> Runtime:
        if self.runtime is None:
            raise StoreUnavailableError("the service is still starting")
        return self.runtime

    @property
    def parse_pool(self) -> ParsePool:
        """The processes that parse uploaded files, shared by requests; started on first use."""
        with self._pool_lock:
            if self._parse_pool is None:
                self._parse_pool = ParsePool(self.settings.parse_processes,
                                             self.settings.parse_timeout_s)
            return self._parse_pool

    def close(self) -> None:
        with self._pool_lock:
            if self._parse_pool is not None:
                self._parse_pool.close()
                self._parse_pool = None

    def ingest_uploads(self, job_id: str, collection: str, staged: list[FileEntry],
                       staging: str) -> None:
        """Parse uploaded files (in the parse processes, off the event loop) and queue their
        text into the open job `job_id`; the files are deleted once read. Runs after the
        answer (202) has gone."""
        live = self.live
        try:
            options = live.file_options(collection)
            items = read_files(staged, options, self.settings.max_text_chars, pool=self.parse_pool)
            live.ingest(items, collection, job_id=job_id)
        except Exception as exc:
            log.exception("upload job %s failed", job_id)
            live.resources.jobs.close(job_id, "failed", f"{type(exc).__name__}: {exc}"[:500])
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def prepare(runtime: Runtime) -> None:
    """Open the store, reach the queue and load the model, so that failures show at start;
    then warm the encoder with one query of each length up to 64 tokens, so that a single
    query of those lengths does not pay for the backend's first pass at its shape. Calling it
    again costs little. Last, settle_heap(), so that no request pays for a full garbage
    collection over the model's objects."""
    runtime.resources.store  # noqa: B018
    runtime.app  # noqa: B018 - binds Celery to the broker (starts the embedded Redis)
    runtime.resources.encoder.warm_up()
    settle_heap()


def _state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.api)


def _settings(request: Request) -> Settings:
    return _state(request).settings


# Every route declares who may call it (bienc.access); create_app refuses a route without.
PUBLIC = [Depends(requires(Access.PUBLIC, _settings))]
READ = [Depends(requires(Access.READ, _settings))]
ADMIN = [Depends(requires(Access.ADMIN, _settings))]


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The API over `runtime`, or over one built from the environment at startup. Whether this
    process runs the worker is the runtime's topology's (bienc.config.topology)."""
    settings = runtime.settings if runtime is not None else get_settings()
    if runtime is None:
        decide(settings, Role.SERVE)  # refuse settings that cannot work before serving
    state = ApiState(settings, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.runtime is None:
            state.runtime = build_runtime(settings, Role.SERVE)
        live = state.runtime
        prepare(live)
        state.encoder_ready = True
        try:
            with live.serving():
                yield
        finally:
            state.close()
            live.resources.close()

    app = FastAPI(title="bienc", version="1", lifespan=lifespan,
                  description="Bi-encoder retrieval: ingest documents, search them by meaning.")
    app.state.api = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_request_bytes,
                       upload_max_bytes=settings.api_max_upload_bytes)
    if settings.cors_origin_list:  # outermost, so that refusals carry CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_credentials=False, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                           max_age=600)
    _add_error_handlers(app)
    app.include_router(_ops_router())
    app.include_router(_api_router())
    app.include_router(_console_router())
    route_levels(app)  # raises for a route that declares no access level
    return app


# Errors


def _status_of(exc: BiencError) -> int:
    if isinstance(exc, (CollectionNotFoundError, JobNotFoundError)):
        return 404
    if isinstance(exc, CollectionError):
        return 409
    if isinstance(exc, InvalidInputError):
        return 422
    if isinstance(exc, StoreUnavailableError):
        return 503
    return 500  # ConfigError, ModelLoadError: the operator must act


def _where(loc: Iterable[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header"):
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe_validation_errors(errors: Iterable[Any]) -> str:
    messages = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            messages.append(f"request body is not valid JSON: {reason}".rstrip(": "))
            continue
        where = _where(error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        messages.append(f"field '{where}': {message}" if where else f"request body: {message}")
    return "; ".join(messages[:MAX_REPORTED_ERRORS]) or "invalid request"


def _add_error_handlers(app: FastAPI) -> None:
    def reply(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)

    @app.exception_handler(BiencError)
    async def bienc_error(request: Request, exc: BiencError) -> JSONResponse:
        return reply(_status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(422, describe_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return reply(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        return reply(503, f"Redis (queue and job state) did not answer: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if type(exc).__name__ == "OperationalError" and type(exc).__module__.startswith("kombu"):
            return reply(503, f"the queue's broker did not answer: {exc}")
        return reply(500, f"internal error ({type(exc).__name__}); see the server log")


# Routes


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", dependencies=PUBLIC)
    def healthz() -> dict[str, str]:
        """Alive: the process answers HTTP (nothing else is checked)."""
        return {"status": "ok"}

    @router.get("/readyz", dependencies=PUBLIC,
                responses={503: {"description": "not ready; reasons listed"}})
    def readyz(request: Request) -> JSONResponse:
        """Ready when the model is loaded and Redis and the store answer; else 503 with reasons."""
        state = _state(request)
        reasons = []
        if not state.encoder_ready or state.runtime is None:
            reasons.append("the model is not loaded yet")
        try:
            state.probe().ping()
        except (redis.RedisError, OSError, BiencError) as exc:
            reasons.append(f"Redis does not answer: {exc}")
        if state.runtime is not None:
            try:
                state.runtime.resources.store.list_collections()
            except Exception as exc:
                reasons.append(f"the store does not answer: {exc}")
        if reasons:
            return JSONResponse(status_code=503, content={"ready": False, "reasons": reasons})
        return JSONResponse(content={"ready": True, "reasons": []})

    @router.get("/metrics", dependencies=PUBLIC, response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics: requests, latencies, documents accepted, queue depth, counts."""
        registry = _state(request).metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


_CONSOLE_ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
# The console loads nothing from elsewhere, and the browser is told to enforce it.
_CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
}


def _console_router() -> APIRouter:
    """The search console at /ui: static files shipped in the package (bienc/ui), public;
    every call the page makes goes to /v1 with the user's key."""
    folder = package_files.files("bienc").joinpath("ui")
    page = folder.joinpath("index.html").read_bytes()
    assets = {name: folder.joinpath(name).read_bytes() for name in _CONSOLE_ASSETS}
    router = APIRouter(include_in_schema=False)

    @router.get("/ui", dependencies=PUBLIC)
    def console() -> Response:
        """The search console, a page that calls the /v1 API with the user's key."""
        return Response(page, media_type="text/html; charset=utf-8", headers=_CONSOLE_HEADERS)

    @router.get("/ui/{name}", dependencies=PUBLIC)
    def console_asset(name: str) -> Response:
        """The console's script and style sheet."""
        if name not in assets:
            raise HTTPException(404, f"the console has no file {name!r}")
        return Response(assets[name], media_type=_CONSOLE_ASSETS[name], headers=_CONSOLE_HEADERS)

    return router


def _api_router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/collections/{collection}/documents", status_code=202, tags=["ingest"],
                 dependencies=ADMIN)
    def ingest(collection: CollectionName, body: IngestBody, request: Request) -> dict[str, Any]:
        """Queue documents for indexing; poll GET /v1/jobs/{job_id} for progress."""
        state = _state(request)
        validate_collection_name(collection)
        limit = state.settings.api_max_documents
        if len(body.documents) > limit:
            raise HTTPException(413, f"field 'documents' has {len(body.documents)} items, over the "
                                     f"limit of {limit} (setting api_max_documents, "
                                     "BIENC_API_MAX_DOCUMENTS); send them in several requests")
        if not body.documents:
            raise InvalidInputError("field 'documents' is empty: give at least one document")
        documents = parse_documents(body.documents, state.settings.max_text_chars)
        waiting = state.queued_documents()
        if waiting + len(documents) > state.settings.max_queued_documents:
            raise HTTPException(429, f"the ingest queue holds about {waiting} documents; with these "
                                     f"it would pass the limit of {state.settings.max_queued_documents} "
                                     "(BIENC_MAX_QUEUED_DOCUMENTS). Retry after a while.",
                                headers={"Retry-After": str(_RETRY_AFTER_S)})
        submission = state.live.ingest(documents, collection)
        state.metrics.documents_accepted.inc(submission.accepted)
        return {"job_id": submission.job_id, "accepted": submission.accepted,
                "duplicates": submission.duplicates}

    @router.post("/collections/{collection}/files", status_code=202, tags=["ingest"],
                 dependencies=ADMIN, openapi_extra=_UPLOAD_SCHEMA)
    async def upload_files(collection: CollectionName, request: Request,
                           background: BackgroundTasks) -> dict[str, Any]:
        """Upload document files (PDF, DOCX, HTML, Markdown, text) as multipart/form-data,
        one or more parts named `files`; each file becomes one document whose id is its file
        name. Answers 202 with a job once the files are stored: they are parsed afterwards,
        outside this process's event loop, and a file that cannot be read fails alone on the
        job (GET /v1/jobs/{job_id}). 413 for a request over BIENC_API_MAX_UPLOAD_BYTES or a file
        over BIENC_MAX_FILE_BYTES."""
        state = _state(request)
        settings = state.settings
        validate_collection_name(collection)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidInputError("send the files as multipart/form-data, one part named "
                                    f"'{UPLOAD_FIELD}' per file (curl -F {UPLOAD_FIELD}=@a.pdf ...)")
        live = state.live
        waiting = await run_in_threadpool(state.queued_documents)
        if waiting >= settings.max_queued_documents:
            raise HTTPException(429, f"the ingest queue holds about {waiting} documents, at the "
                                     f"limit of {settings.max_queued_documents} "
                                     "(BIENC_MAX_QUEUED_DOCUMENTS). Retry after a while.",
                                headers={"Retry-After": str(_RETRY_AFTER_S)})
        staging = await run_in_threadpool(_staging_dir, settings.upload_dir)
        try:
            async with request.form(max_files=settings.api_max_files, max_fields=16) as form:
                uploads = _uploads(form.multi_items(), settings.max_file_bytes)
                staged = [await run_in_threadpool(_stage, upload, staging, number)
                          for number, upload in enumerate(uploads)]
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        job_id = await run_in_threadpool(live.resources.jobs.create, collection, 0, {},
                                         "ingest", True)
        background.add_task(state.ingest_uploads, job_id, collection, staged, staging)
        return {"job_id": job_id, "files": len(staged)}

    @router.get("/jobs", tags=["ingest"], dependencies=READ)
    def jobs(request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20,
             offset: Annotated[int, Query(ge=0, le=MAX_JOBS_OFFSET)] = 0) -> dict[str, Any]:
        """Recent jobs, newest first, without their per-document failures (GET
        /v1/jobs/{job_id} has them)."""
        found, total = _state(request).live.resources.jobs.recent(offset, limit)
        return {"jobs": [{k: v for k, v in status.to_dict().items() if k != "failures"}
                         for status in found],
                "total": total, "offset": offset, "limit": limit}

    @router.get("/jobs/{job_id}", tags=["ingest"], dependencies=READ)
    def job(job_id: str, request: Request) -> dict[str, Any]:
        """A job's kind, state, counts (queued, indexed, skipped, failed) and the reason for
        each failed document."""
        status = _state(request).live.resources.jobs.get(job_id)
        if status is None:
            raise HTTPException(404, f"job {job_id!r} is unknown (expired, or never created)")
        return status.to_dict()

    @router.post("/jobs/{job_id}/cancel", status_code=202, tags=["ingest"], dependencies=ADMIN)
    def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        """Cancel a running reindex: its new collection is dropped, the live one untouched."""
        _state(request).live.cancel(job_id)
        return {"job_id": job_id, "cancelling": True}

    @router.post("/collections/{collection}/reindex", status_code=202, tags=["collections"],
                 dependencies=ADMIN)
    def reindex(collection: CollectionName, body: ReindexBody, request: Request) -> dict[str, Any]:
        """Rebuild a collection from its stored text with another model or chunking (or with
        lexical vectors added), while it serves; follow the job at GET /v1/jobs/{job_id}."""
        validate_collection_name(collection)
        job_id = _state(request).live.reindex(collection, body.model_dump(exclude_none=True))
        return {"job_id": job_id, "collection": collection}

    @router.post("/collections/{collection}/search", tags=["search"], dependencies=READ)
    def search(collection: PhysicalOrName, body: SearchBody, request: Request) -> dict[str, Any]:
        """Documents ranked by meaning and words: one list per query, best first."""
        state = _state(request)
        validate_collection_name(collection, physical=True)
        queries, query_filter = check_search(body)
        metrics = state.metrics
        metrics.search_requests.inc()
        timings: dict[str, float] = {}
        started = time.perf_counter()
        results = state.live.search(collection, SearchRequest(
            queries=queries, top_k=body.top_k, filter=query_filter,
            score_threshold=body.score_threshold, with_text=body.with_text, mode=body.mode,
            fusion=body.fusion), timings)
        total = time.perf_counter() - started
        metrics.search_seconds.observe(total)
        if "encode" in timings:
            metrics.encode_seconds.observe(timings["encode"])
        return {
            "results": [[hit.to_dict() for hit in hits] for hits in results.hits],
            "mode": results.mode,
            **({"fusion": body.fusion} if results.mode == "hybrid" else {}),
            "timings_ms": {name: round(seconds * 1000, 3)
                           for name, seconds in {**timings, "total": total}.items()},
        }

    @router.get("/collections", tags=["collections"], dependencies=READ)
    def list_collections(request: Request) -> dict[str, Any]:
        """Every collection with its physical collection, encoding and counts."""
        return {"collections": _state(request).live.collections()}

    @router.get("/collections/{collection}", tags=["collections"], dependencies=READ)
    def collection_info(collection: PhysicalOrName, request: Request) -> dict[str, Any]:
        """One collection: physical collection, model, weights, encoding, chunking, lexical
        parameters, documents, points, a reindex in progress."""
        validate_collection_name(collection, physical=True)
        return _state(request).live.describe(collection)

    @router.delete("/collections/{collection}", tags=["collections"], dependencies=ADMIN)
    def delete_collection(collection: PhysicalOrName, request: Request) -> dict[str, Any]:
        """Drop a collection (409 while it is being reindexed)."""
        validate_collection_name(collection, physical=True)
        _state(request).live.delete_collection(collection)
        return {"collection": collection, "deleted": True}

    @router.get("/collections/{collection}/documents/{doc_id}", tags=["collections"],
                dependencies=READ)
    def get_document(collection: PhysicalOrName, doc_id: str, request: Request) -> dict[str, Any]:
        """One document as stored: text, title, metadata and its number of chunks."""
        validate_collection_name(collection, physical=True)
        payload = _state(request).live.resources.store.get_document(collection, _doc_id(doc_id))
        if payload is None:
            raise HTTPException(404, f"document {doc_id!r} is not in collection {collection!r}")
        return {"id": payload["doc_id"], "title": payload.get("title"), "text": payload.get("text"),
                "metadata": payload.get("metadata") or {}, "chunks": payload.get("chunks", 1)}

    @router.delete("/collections/{collection}/documents/{doc_id}", tags=["collections"],
                   dependencies=ADMIN)
    def delete_document(collection: CollectionName, doc_id: str, request: Request) -> dict[str, Any]:
        """Delete a document: every chunk and its lexical vector."""
        validate_collection_name(collection)
        live = _state(request).live
        if live.resources.store.get_document(collection, _doc_id(doc_id)) is None:
            raise HTTPException(404, f"document {doc_id!r} is not in collection {collection!r}")
        live.delete_documents(collection, [doc_id])
        return {"id": doc_id, "deleted": True}

    return router


_UPLOAD_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": [UPLOAD_FIELD],
        "properties": {UPLOAD_FIELD: {"type": "array", "items": {"type": "string",
                                                                  "format": "binary"}}}}}}}}


def _staging_dir(parent: Any) -> str:
    return tempfile.mkdtemp(prefix="bienc-upload-", dir=parent)


def upload_id(filename: str | None) -> str:
    """A document id from an uploaded file's name (its path, where the client sends one);
    InvalidInputError for none. The name is an id only: files are stored under names made
    here, never under this one."""
    doc_id = (filename or "").replace("\\", "/").lstrip("/")
    if not doc_id.strip():
        raise InvalidInputError(f"every '{UPLOAD_FIELD}' part needs a filename (its document id)")
    if len(doc_id) > MAX_ID_CHARS or json_problem(doc_id):
        raise InvalidInputError(f"file name {doc_id[:80]!r} is not a valid document id (at most "
                                f"{MAX_ID_CHARS} characters of valid Unicode)")
    return doc_id


def _uploads(items: Iterable[tuple[str, Any]], max_file_bytes: int) -> list[UploadFile]:
    """The uploaded files of a form, checked: at least one, each within the per-file limit."""
    uploads = []
    for name, value in items:
        if not isinstance(value, UploadFile):
            continue
        if name != UPLOAD_FIELD:
            raise InvalidInputError(f"unknown form field {name!r}: send each file as a part named "
                                    f"'{UPLOAD_FIELD}'")
        doc_id = upload_id(value.filename)
        if value.size is not None and value.size > max_file_bytes:
            raise HTTPException(413, f"file {doc_id!r} is {value.size} bytes, over the per-file "
                                     f"limit of {max_file_bytes} (setting max_file_bytes, "
                                     "BIENC_MAX_FILE_BYTES)")
        uploads.append(value)
    if not uploads:
        raise InvalidInputError(f"no files: send one or more parts named '{UPLOAD_FIELD}'")
    return uploads


def _stage(upload: UploadFile, staging: str, number: int) -> FileEntry:
    """Copy an upload out of the request (whose files close with it) into the staging folder,
    under a name made here that keeps only the suffix (formats are told by it)."""
    doc_id = upload_id(upload.filename)
    suffix = re.sub(r"[^A-Za-z0-9.]", "", PurePosixPath(doc_id).suffix)[:16]
    target = PurePosixPath(staging) / f"{number:06d}{suffix}"
    upload.file.seek(0)
    with open(target, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1024 * 1024)
    return FileEntry(doc_id, FsPath(str(target)), FsPath(str(target)).stat().st_size)


def _doc_id(doc_id: str) -> str:
    if len(doc_id) > MAX_ID_CHARS:
        raise InvalidInputError(f"document id is longer than {MAX_ID_CHARS} characters")
    return doc_id
