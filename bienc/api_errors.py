"""How the API answers errors: always `{"detail": ...}`, with the status of the error's kind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bienc.config.errors import (
    BiencError,
    CollectionError,
    CollectionNotFoundError,
    InvalidInputError,
    JobNotFoundError,
    StoreUnavailableError,
)

MAX_REPORTED_ERRORS = 10  # problems named in one answer


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


def add_error_handlers(app: FastAPI) -> None:
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
