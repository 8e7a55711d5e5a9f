"""The HTTP API: ingest, job status, search and collection management over FastAPI.

`bienc serve` runs it with uvicorn (one process). This module is the app, its state and its
routes; the request bodies (bienc.api_requests), uploads (bienc.api_uploads), the body limit
(bienc.api_limits), errors (bienc.api_errors) and metrics (bienc.api_metrics) have their own.
Every route declares who may call it (bienc.access). Where the topology says so, the
lifespan runs the worker.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources as package_files
from pathlib import Path
from typing import Annotated, Any, cast

import redis
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from bienc.access import Access, requires, route_levels
from bienc.api_errors import add_error_handlers
from bienc.api_limits import BodyLimitMiddleware
from bienc.api_metrics import Metrics
from bienc.api_requests import (
    CollectionName,
    DeleteBody,
    IngestBody,
    PhysicalOrName,
    ReindexBody,
    SearchBody,
    check_filter,
    check_search,
    parse_documents,
)
from bienc.api_uploads import (
    CALLBACK_FIELD,
    UPLOAD_FIELD,
    UPLOAD_SCHEMA,
    checked_uploads,
    stage_upload,
    staging_dir,
)
from bienc.config.errors import (
    BiencError,
    InvalidInputError,
    StoreUnavailableError,
)
from bienc.config.settings import Settings, get_settings
from bienc.config.topology import Role, decide
from bienc.ingest.documents import MAX_ID_CHARS
from bienc.ingest.files import FileEntry, read_files
from bienc.ingest.producer import validate_collection_name
from bienc.ingest.sandbox import ParsePool
from bienc.queue.broker import redis_url
from bienc.queue.celery_app import INGEST_QUEUE
from bienc.queue.versions import MAX_VERSION
from bienc.queue.webhooks import check_callback_url
from bienc.resources import settle_heap
from bienc.runtime import Runtime, build_runtime
from bienc.search.searcher import SearchRequest
from bienc.snapshots import MAX_EXPORT_PAGE
from bienc.store.snapshot import SUFFIX as SNAPSHOT_SUFFIX

log = logging.getLogger(__name__)
MAX_JOBS_OFFSET = 1_000_000_000  # Redis takes 64-bit offsets; a page beyond this is empty anyway
_RETRY_AFTER_S = 30
_PROBE_TIMEOUT_S = 2.0
SNAPSHOT_TYPE = "application/x-tar"
SNAPSHOT_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "the snapshot file", "content": {SNAPSHOT_TYPE: {"schema": {
        "type": "string", "format": "binary"}}}}}
RESTORE_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}

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
        self.metrics = Metrics(self.probe, self.index_builds)

    def probe(self) -> redis.Redis:
        """A Redis client with short timeouts, for health checks and the queue-depth gauge."""
        if self._probe is None:
            self._probe = redis.Redis.from_url(
                redis_url(self.settings), socket_timeout=_PROBE_TIMEOUT_S,
                socket_connect_timeout=_PROBE_TIMEOUT_S)
        return self._probe

    def index_builds(self) -> dict[str, dict[str, Any]]:
        """The embedded store's index builds, when this process has the store open (a scrape
        never opens it)."""
        if self.runtime is None or not self.runtime.resources.has_store:
            return {}
        return self.runtime.resources.store.index_builds()

    def queued_documents(self) -> int:
        """Documents waiting in the ingest queue (batches x batch size: an upper bound, loose
        when requests are smaller than a batch, so the limit errs early, never late)."""
        return int(self.probe().llen(INGEST_QUEUE)) * self.settings.ingest_batch_size

    def check_queue_room(self, adding: int) -> None:
        """429 with Retry-After when `adding` more documents would pass
        BIENC_MAX_QUEUED_DOCUMENTS."""
        waiting, limit = self.queued_documents(), self.settings.max_queued_documents
        if waiting + adding > limit:
            raise HTTPException(429, f"the ingest queue holds about {waiting} documents; with these "
                                     f"it would pass the limit of {limit} "
                                     "(BIENC_MAX_QUEUED_DOCUMENTS). Retry after a while.",
                                headers={"Retry-After": str(_RETRY_AFTER_S)})

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
    add_error_handlers(app)
    app.include_router(_ops_router())
    app.include_router(_api_router())
    app.include_router(_console_router())
    route_levels(app)  # raises for a route that declares no access level
    return app


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
        """Prometheus metrics: requests, latencies, documents accepted, queue depth, counts,
        failed index builds of the embedded store."""
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
        state.check_queue_room(len(documents))
        submission = state.live.ingest(documents, collection, callback_url=body.callback_url)
        state.metrics.documents_accepted.inc(submission.accepted)
        return {"job_id": submission.job_id, "accepted": submission.accepted,
                "duplicates": submission.duplicates}

    @router.post("/collections/{collection}/files", status_code=202, tags=["ingest"],
                 dependencies=ADMIN, openapi_extra=UPLOAD_SCHEMA)
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
        await run_in_threadpool(state.check_queue_room, 1)  # at least one file's document
        staging = await run_in_threadpool(staging_dir, settings.upload_dir)
        try:
            async with request.form(max_files=settings.api_max_files, max_fields=16) as form:
                uploads = checked_uploads(form.multi_items(), settings.max_file_bytes)
                callback = form.get(CALLBACK_FIELD)  # text: a file part of that name is refused above
                callback_url = None if callback is None else check_callback_url(settings, str(callback))
                staged = [await run_in_threadpool(stage_upload, upload, staging, number)
                          for number, upload in enumerate(uploads)]
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        job_id = await run_in_threadpool(live.resources.jobs.create, collection, 0, {}, "ingest",
                                         True, callback_url=callback_url)
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
        """Cancel a reindex that is copying: its new collection is dropped, the live one
        untouched; 409 naming its state once its finish has started."""
        _state(request).live.cancel(job_id)
        return {"job_id": job_id, "cancelling": True}

    @router.post("/collections/{collection}/reindex", status_code=202, tags=["collections"],
                 dependencies=ADMIN)
    def reindex(collection: CollectionName, body: ReindexBody, request: Request) -> dict[str, Any]:
        """Rebuild a collection from its stored text with another model or chunking (or with
        lexical vectors added), while it serves; follow the job at GET /v1/jobs/{job_id}."""
        validate_collection_name(collection)
        job_id = _state(request).live.reindex(
            collection, body.model_dump(exclude_none=True, exclude={"callback_url"}),
            callback_url=body.callback_url)
        return {"job_id": job_id, "collection": collection}

    @router.post("/collections/{collection}/reindex/resume", status_code=202, tags=["collections"],
                 dependencies=ADMIN)
    def resume_reindex(collection: CollectionName, request: Request) -> dict[str, Any]:
        """Go on with a collection's reindex from the state it stopped in (a failed finish, a
        worker that died); 409 when there is none, or a live worker runs it now."""
        job_id, state = _state(request).live.resume_reindex(collection)
        return {"job_id": job_id, "collection": collection, "from": state}

    @router.post("/collections/{collection}/reindex/abort", status_code=202, tags=["collections"],
                 dependencies=ADMIN)
    def abort_reindex(collection: CollectionName, request: Request) -> dict[str, Any]:
        """Abort a collection's reindex from whatever state it is in: its new collection is
        dropped, the name keeps serving what it serves; 409 when there is none, or a live
        worker runs its finish now."""
        job_id, state = _state(request).live.abort_reindex(collection)
        return {"job_id": job_id, "collection": collection, "from": state}

    @router.post("/collections/{collection}/search", tags=["search"], dependencies=READ,
                 response_class=JSONResponse)
    def search(collection: PhysicalOrName, body: SearchBody, request: Request) -> JSONResponse:
        """Documents ranked by meaning and words: one list per query, best first."""
        state = _state(request)
        validate_collection_name(collection, physical=True)
        queries, query_filter = check_search(body)
        metrics = state.metrics
        metrics.search_requests.inc()
        timings: dict[str, float] = {}
        started = time.perf_counter()
        results = state.live.search(collection, SearchRequest(
            queries=queries, top_k=body.top_k, offset=body.offset, filter=query_filter,
            score_threshold=body.score_threshold, with_text=body.with_text, mode=body.mode,
            fusion=body.fusion), timings)
        total = time.perf_counter() - started
        metrics.search_seconds.observe(total)
        if "encode" in timings:
            metrics.encode_seconds.observe(timings["encode"])
        # rendered here, already JSON: FastAPI would validate and convert the answer first
        # (~0.4 ms for ten hits with their text)
        return JSONResponse({
            "results": [[hit.to_dict() for hit in hits] for hits in results.hits],
            "mode": results.mode, "offset": body.offset,
            **({"fusion": body.fusion} if results.mode == "hybrid" else {}),
            "timings_ms": {name: round(seconds * 1000, 3)
                           for name, seconds in {**timings, "total": total}.items()},
        })

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

    @router.get("/collections/{collection}/documents", tags=["collections"], dependencies=READ)
    def export_documents(collection: PhysicalOrName, request: Request,
                         cursor: Annotated[str | None, Query(
                             max_length=64, description="the `next_cursor` of the previous page; "
                                                        "none for the first")] = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_EXPORT_PAGE)] = 100
                         ) -> dict[str, Any]:
        """Every document of a collection (id, title, text, metadata), a page at a time in a
        stable order: pass each page's `next_cursor` back as `cursor` until it is null."""
        documents, after = _state(request).live.export_page(collection, cursor, limit)
        return {"documents": documents, "next_cursor": after}

    @router.post("/collections/{collection}/snapshot", tags=["collections"], dependencies=ADMIN,
                 response_class=FileResponse, responses=SNAPSHOT_RESPONSE)
    def create_snapshot(collection: PhysicalOrName, request: Request,
                        background: BackgroundTasks, portable: bool = False) -> FileResponse:
        """A consistent snapshot of a collection, taken while it serves, answered as a tar file
        (its points and recorded encoding, each part under a sha256); `portable`: the points
        even on a Qdrant server, whose own snapshot is taken otherwise."""
        state = _state(request)
        folder = Path(staging_dir(state.settings.upload_dir))
        try:
            path = folder / f"{collection}{SNAPSHOT_SUFFIX}"
            with path.open("wb") as out:
                summary = state.live.snapshot(collection, out, portable, work=folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        background.add_task(shutil.rmtree, folder, True)
        return FileResponse(path, media_type=SNAPSHOT_TYPE, filename=path.name, headers={
            "X-Bienc-Documents": str(summary["documents"]), "X-Bienc-Points": str(summary["points"])})

    @router.post("/snapshots/restore", tags=["collections"], dependencies=ADMIN,
                 openapi_extra=RESTORE_SCHEMA)
    async def restore_snapshot(request: Request, as_name: Annotated[str | None, Query(
            alias="as", max_length=255, description="the collection to restore into (default: "
                                                    "the snapshot's); one of that name is replaced")]
                               = None) -> dict[str, Any]:
        """Restore a snapshot sent as the request body into a new physical collection, then
        switch the name to it; a truncated or altered file is refused (422, checksum) and a
        snapshot of a model this bienc cannot use too (409), with nothing changed. The body is
        held to BIENC_API_MAX_UPLOAD_BYTES."""
        state = _state(request)
        live = state.live
        folder = await run_in_threadpool(staging_dir, state.settings.upload_dir)
        try:
            path = Path(folder) / f"upload{SNAPSHOT_SUFFIX}"
            with path.open("wb") as out:
                async for block in request.stream():
                    out.write(block)
            return await run_in_threadpool(live.restore, path, as_name, Path(folder))
        finally:
            await run_in_threadpool(shutil.rmtree, folder, True)

    @router.get("/collections/{collection}/documents/{doc_id}", tags=["collections"],
                dependencies=READ)
    def get_document(collection: PhysicalOrName, doc_id: str, request: Request) -> dict[str, Any]:
        """One document as stored: text, title, metadata, its number of chunks and its
        version."""
        validate_collection_name(collection, physical=True)
        payload = _state(request).live.resources.store.get_document(collection, _doc_id(doc_id))
        if payload is None:
            raise HTTPException(404, f"document {doc_id!r} is not in collection {collection!r}")
        return {"id": payload["doc_id"], "title": payload.get("title"), "text": payload.get("text"),
                "metadata": payload.get("metadata") or {}, "chunks": payload.get("chunks", 1),
                "version": payload.get("version") or 0}

    @router.delete("/collections/{collection}/documents/{doc_id}", tags=["collections"],
                   dependencies=ADMIN)
    def delete_document(collection: CollectionName, doc_id: str, request: Request,
                        version: Annotated[int | None, Query(
                            ge=0, le=MAX_VERSION,
                            description="the delete's own version: a newer stored version is "
                                        "kept (409), and a write of this version or older "
                                        "arriving later does not bring the document back "
                                        "(absent: the order of acceptance)")] = None
                        ) -> dict[str, Any]:
        """Delete a document: every chunk and its lexical vector; a later write of an older
        version does not bring it back."""
        validate_collection_name(collection)
        live = _state(request).live
        if live.resources.store.get_document(collection, _doc_id(doc_id)) is None:
            raise HTTPException(404, f"document {doc_id!r} is not in collection {collection!r}")
        if live.delete_documents(collection, [doc_id], version=version):
            which = f"this delete's version {version}" if version is not None else \
                "this delete (written after it was accepted)"
            raise HTTPException(409, f"document {doc_id!r} is stored at a newer version than "
                                     f"{which}; nothing was deleted")
        return {"id": doc_id, "deleted": True}

    @router.post("/collections/{collection}/delete", status_code=202, tags=["collections"],
                 dependencies=ADMIN,
                 responses={200: {"description": 'dry run: {"matched": N}, nothing deleted'}})
    def delete_matching(collection: CollectionName, body: DeleteBody, request: Request,
                        response: Response) -> dict[str, Any]:
        """Delete the documents a metadata filter matches, dense and lexical entries alike, as a
        job (202; GET /v1/jobs/{job_id} counts them as `deleted`), or with `dry_run` count them
        at once (200, `{"matched": N}`, nothing deleted)."""
        validate_collection_name(collection)
        query_filter = check_filter(body.filter)
        if query_filter is None:  # the schema asks for one already
            raise InvalidInputError("field 'filter' is empty: give the documents' metadata to match")
        live = _state(request).live
        if body.dry_run:
            response.status_code = 200
            return {"collection": collection, "matched": live.count_matching(collection, query_filter),
                    "dry_run": True}
        return {"job_id": live.delete_matching(collection, body.filter, body.callback_url,
                                               body.version),
                "collection": collection}

    return router


def _doc_id(doc_id: str) -> str:
    if len(doc_id) > MAX_ID_CHARS:
        raise InvalidInputError(f"document id is longer than {MAX_ID_CHARS} characters")
    return doc_id
