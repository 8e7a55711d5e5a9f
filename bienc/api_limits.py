"""The API's limit on request bodies: 413 before or while a body is read, never a reset."""

from __future__ import annotations

import re

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATH = re.compile(r"/v1/collections/[^/]+/files|/v1/snapshots/restore")


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`: by its Content-Length before reading, and by
    the bytes actually received (a chunked body, or a Content-Length that lies).

    The rest of a refused body is read and dropped before the answer: a client that sends its
    whole body before reading (Python's urllib and requests do) would otherwise see its
    connection reset, since closing a socket with unread data resets it, and never read the
    413. Up to `drain_bytes` are dropped that way; a client announcing `Expect: 100-continue`
    (curl does) has sent nothing yet and is answered at once.

    File uploads (POST .../files, and a snapshot to restore) are held to `upload_max_bytes`
    instead and are not read here: the route streams them to disk, and a body that outgrows
    the limit while it streams is refused there (413) by the same count.
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
                    "api_max_upload_bytes, BIENC_API_MAX_UPLOAD_BYTES); send files in several "
                    "requests, or restore a large snapshot with `bienc snapshot restore`")
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
