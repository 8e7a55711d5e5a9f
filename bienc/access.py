"""Who may call which route: every route of the API declares a level, and a key grants one.

    public   health, readiness, metrics, the OpenAPI docs: no key
    read     list and get collections and documents, search, read jobs: the read key or the
             admin key (BIENC_READ_API_KEY, BIENC_API_KEY)
    admin    ingest (documents or file uploads), delete, replay: the admin key (BIENC_API_KEY)

With no key configured every route is open; `bienc serve` allows that only on a loopback
address, or with BIENC_ALLOW_ANONYMOUS=true (bienc.config.settings). A key is sent as
`Authorization: Bearer KEY` or `X-API-Key: KEY`. A missing or unknown key is 401; a read key
on an admin route is 403, naming the permission it lacks. Keys are compared in constant time
and never written to a log, an error or a metric.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Coroutine, Iterator, Sequence
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from bienc.config.errors import ConfigError
from bienc.config.settings import Settings


class Access(Enum):
    PUBLIC = "public"
    READ = "read"
    ADMIN = "admin"


def _granted(given: str, settings: Settings) -> Access | None:
    """The level `given` grants: admin for the admin key, read for the read key, else None."""
    for key, level in ((settings.api_key, Access.ADMIN), (settings.read_api_key, Access.READ)):
        if key and hmac.compare_digest(given.encode(), key.encode()):
            return level
    return None


def requires(level: Access, settings: Callable[[Request], Settings]
             ) -> Callable[..., Coroutine[Any, Any, None]]:
    """A FastAPI dependency that lets a request through when its key grants `level`. The
    dependency carries `level`, so the route table can be checked for an undeclared route.
    It is a coroutine: a plain function would be run on FastAPI's thread pool, one more hop
    per request for a comparison of two short strings."""
    if level is Access.PUBLIC:  # no key asked for, and none shown in the OpenAPI schema
        async def public() -> None:
            return None

        public.access = level  # type: ignore[attr-defined]
        return public

    async def check(request: Request,
              bearer: Annotated[HTTPAuthorizationCredentials | None,
                                Depends(HTTPBearer(auto_error=False))],
              header_key: Annotated[str | None,
                                    Depends(APIKeyHeader(name="X-API-Key", auto_error=False))],
              ) -> None:
        current = settings(request)
        if not current.api_key:
            return
        given = bearer.credentials if bearer else header_key
        granted = _granted(given, current) if given else None
        if granted is None:
            raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer KEY` "
                                     "or `X-API-Key: KEY`", headers={"WWW-Authenticate": "Bearer"})
        if level is Access.ADMIN and granted is not Access.ADMIN:
            raise HTTPException(403, "this key may only read: this request needs the `admin` "
                                     "permission (BIENC_API_KEY)")

    check.access = level  # type: ignore[attr-defined]
    return check


def route_levels(app: FastAPI) -> dict[str, Access]:
    """The level of every route of `app` ("METHOD /path" -> level); raises RuntimeError for a
    route that declares none (or several), so that no route is left open by accident.
    FastAPI's own documentation routes are public."""
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    levels: dict[str, Access] = {}
    undeclared = []
    for path, methods, declared, _ in _walk(app.router.routes):
        if declared is None and path in docs:
            declared = [Access.PUBLIC]
        if declared is None or len(declared) != 1:
            undeclared.append(f"{sorted(methods)} {path}")
            continue
        levels.update({f"{method} {path}": declared[0] for method in methods})
    if undeclared:
        raise RuntimeError(f"routes without an access level (bienc.access): {undeclared}")
    return levels


def _levels_of(dependencies: Sequence[Any]) -> list[Access]:
    calls = (getattr(d, "dependency", None) for d in dependencies)
    return [call.access for call in calls if hasattr(call, "access")]  # type: ignore[union-attr]


def api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of each API route of `app`, in the order they were added."""
    for path, _, declared, route in _walk(app.router.routes):
        if declared is not None:
            yield path, route


def _walk(routes: Sequence[Any], prefix: str = "", inherited: Sequence[Access] = ()
          ) -> Iterator[tuple[str, set[str], list[Access] | None, Any]]:
    """(path, methods, declared levels, route) of each route, through included routers
    (FastAPI keeps those as wrappers in newer versions, as plain routes in older ones). Levels
    are None for a route that is not an API route (the documentation pages)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            context = route.include_context
            yield from _walk(original.routes, prefix + context.prefix,
                             [*inherited, *_levels_of(context.dependencies)])
        elif isinstance(route, APIRoute):
            yield (prefix + route.path, set(route.methods or ()),
                   [*inherited, *_levels_of(route.dependencies)], route)
        else:
            yield (prefix + getattr(route, "path", repr(route)),
                   set(getattr(route, "methods", ()) or ()), None, route)


def check_exposure(host: str, settings: Settings) -> str | None:
    """Refuse to serve a network without a key: ConfigError when `host` is not a loopback
    address and BIENC_API_KEY is unset, unless BIENC_ALLOW_ANONYMOUS; then the warning to log."""
    if settings.api_key or is_loopback(host):
        return None
    if not settings.allow_anonymous:
        raise ConfigError(
            f"refusing to serve on {host} without an API key: anyone who can reach the port could "
            "write and delete. Set BIENC_API_KEY (16+ characters; `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`), serve on 127.0.0.1, or set "
            "BIENC_ALLOW_ANONYMOUS=true to serve without one knowingly"
        )
    return (f"serving on {host} with no API key (BIENC_ALLOW_ANONYMOUS=true): anyone who can reach "
            "the port can write and delete")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
