"""The parts of docs/ generated from the code: the settings, the HTTP routes, the tuning constants.

Each generated part of a page sits between two marker comments naming it; the text around
them is written by hand. `python -m bienc.reference` rewrites every generated part in place,
`python -m bienc.reference --check` exits 1 naming the parts that differ from the code (the
unit tests run the same comparison), so a setting, route or constant cannot drift from its
page unnoticed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo

REGENERATE = "python -m bienc.reference"
_BEGIN = "<!-- generated from the code by `{command}` ({name}); edit the code, not this part -->"
_END = "<!-- end of generated part ({name}) -->"


@dataclass(frozen=True)
class Part:
    """One generated part: the page it lives on, its name in the markers, and its maker."""

    page: str  # relative to docs/
    name: str
    render: Callable[[], str]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# Settings


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is not None and str(origin) == "typing.Literal":
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if args and len(args) < len(get_args(annotation)):  # X | None
        return _type_name(args[0])
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = []
    for item in field.metadata:
        for attribute, sign in words.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{sign} {value:_}".replace("_", ",") if isinstance(value, int)
                             else f"{sign} {value}")
    return ", ".join(found)


def show_default(value: Any) -> str:
    """A default as the environment variable would spell it: unset, true/false, ~ for home."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home):] if text.startswith(home) else text
    if value == "":
        return "empty"
    return str(value)


def settings_reference() -> str:
    """One row per `BIENC_*` variable: type and bounds, default, what it does."""
    from bienc.config.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = []
    for name, field in Settings.model_fields.items():
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        rows.append((f"`{prefix}{name.upper()}`", f"{kind} ({bounds})" if bounds else kind,
                     f"`{show_default(field.get_default(call_default_factory=True))}`",
                     field.description or ""))
    return _table(("variable", "type", "default", "meaning"), rows)


# Routes


def _schema_type(schema: Mapping[str, Any], components: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        kinds = [_schema_type(s, components) for s in schema["anyOf"]]
        return " or ".join(k for k in kinds if k != "null") + (" or null" if "null" in kinds else "")
    if schema.get("type") == "array":
        return f"list of {_schema_type(schema.get('items', {}), components)}"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    return str(schema.get("type", "any"))


def _constraints(schema: Mapping[str, Any]) -> str:
    words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<",
             "minItems": "items >=", "maxItems": "items <=", "minLength": "length >=",
             "maxLength": "length <="}
    found = []
    for option in (schema, *schema.get("anyOf", ())):
        found += [f"{sign} {_number(option[key])}" for key, sign in words.items() if key in option]
    return ", ".join(found)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _fields(schema: Mapping[str, Any], components: Mapping[str, Any]) -> str:
    """A table of an object schema's fields, then one for each field that is a list of objects."""
    required = set(schema.get("required", ()))
    rows, nested = [], []
    for field, spec in schema.get("properties", {}).items():
        default = "required" if field in required else (
            f"`{show_default(spec['default'])}`" if "default" in spec else "optional")
        rows.append((f"`{field}`", _schema_type(spec, components), default,
                     _constraints(spec), spec.get("description", "")))
        items = spec.get("items", {})
        if "properties" in items:
            nested.append(f"Each of `{field}`:\n\n" + _fields(items, components))
    return "\n\n".join([_table(("field", "type", "default", "bounds", "meaning"), rows), *nested])


def _body_fields(name: str, components: Mapping[str, Any]) -> str:
    schema = components[name]
    text = _fields(schema, components)
    if schema.get("description"):
        text = " ".join(schema["description"].split()) + "\n\n" + text
    return text


def _summary(route: Any) -> str:
    doc = (getattr(route, "description", "") or getattr(route.endpoint, "__doc__", "") or "").strip()
    first = re.split(r"(?<=\.)\s", " ".join(doc.split()), maxsplit=1)[0] if doc else ""
    return first


def routes_reference() -> str:
    """Every route the API serves, with its access level, its answer and what it does; then
    the fields of each request body, from the OpenAPI schema the API publishes."""
    from bienc.access import api_routes, route_levels
    from bienc.api import create_app

    app = create_app()
    levels = route_levels(app)
    schema = app.openapi()
    components = schema.get("components", {}).get("schemas", {})
    rows = []
    bodies: dict[str, list[str]] = {}
    for path, route in api_routes(app):
        for method in sorted(route.methods or ()):
            operation = schema.get("paths", {}).get(path, {}).get(method.lower(), {})
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            body_name = _schema_type(body.get("schema", {}), components) if body else ""
            if body_name in components:
                bodies.setdefault(body_name, []).append(f"{method} {path}")
            rows.append((f"`{method} {path}`", levels[f"{method} {path}"].value,
                         str(route.status_code or 200), f"`{body_name}`" if body_name else "",
                         _summary(route)))
    documentation = [(f"`GET {path}`", levels[f"GET {path}"].value, "200", "",
                      "FastAPI's documentation of the API") for path in
                     (app.docs_url, app.redoc_url, app.openapi_url) if path]
    parts = [_table(("route", "access", "status", "body", "what it does"), rows + documentation)]
    for name in sorted(bodies):
        parts.append(f"### `{name}`\n\nSent to {', '.join(f'`{r}`' for r in bodies[name])}.\n\n"
                     + _body_fields(name, components))
    return "\n\n".join(parts)


# Constants


def _constants() -> list[tuple[str, Any, str]]:
    """(name, value, meaning) of the numbers the design pages quote."""
    from bienc.api_requests import MAX_QUERIES
    from bienc.config.settings import LARGE_PART_POINTS, MAX_TOP_K, MIN_KEY_CHARS
    from bienc.encoding.encoder import QUERY_WARM_UP_TOKENS, TOKENIZE_WINDOW
    from bienc.encoding.openvino import DOCUMENT_NICE
    from bienc.ingest.documents import MAX_ID_CHARS
    from bienc.queue import versions
    from bienc.queue.celery_app import UNACKED_MUTEX_EXPIRE_S
    from bienc.search import fusion
    from bienc.search.searcher import MAX_QUERY_CHARS
    from bienc.store import edge, parts
    from bienc.store.interface import EF_MIN, EF_REFERENCE_POINTS
    from bienc.workers import reindexing, tasks

    return [
        ("bienc.config.settings.MAX_TOP_K", MAX_TOP_K, "deepest one search reaches: offset + top_k"),
        ("bienc.api_requests.MAX_QUERIES", MAX_QUERIES, "most queries in one search request"),
        ("bienc.search.searcher.MAX_QUERY_CHARS", MAX_QUERY_CHARS, "longest query, in characters"),
        ("bienc.ingest.documents.MAX_ID_CHARS", MAX_ID_CHARS, "longest document id"),
        ("bienc.queue.versions.MAX_VERSION", versions.MAX_VERSION, "highest version a client may give"),
        ("bienc.queue.versions.LOCK_TTL_S", versions.LOCK_TTL_S,
         "seconds after which a dead writer's document locks come free"),
        ("bienc.queue.versions.LOCK_WAIT_S", versions.LOCK_WAIT_S,
         "seconds a writer waits for documents another one holds"),
        ("bienc.config.settings.MIN_KEY_CHARS", MIN_KEY_CHARS, "shortest API key accepted"),
        ("bienc.search.fusion.TIERS", fusion.TIERS,
         "documents of each leg a hybrid search fuses into each tier of its ranking, "
         "before the last tier's MAX_TOP_K"),
        ("bienc.search.fusion.RRF_K", fusion.RRF_K, "RRF's k: a document scores 1 / (k + rank)"),
        ("bienc.encoding.encoder.QUERY_WARM_UP_TOKENS", QUERY_WARM_UP_TOKENS,
         "query lengths (tokens) a server encodes once at start"),
        ("bienc.encoding.openvino.DOCUMENT_NICE", DOCUMENT_NICE,
         "Linux scheduling priority (nice) of the threads that encode documents"),
        ("bienc.encoding.encoder.TOKENIZE_WINDOW", TOKENIZE_WINDOW,
         "texts a worker tokenises and plans into forward batches together"),
        ("bienc.workers.reindexing.WINDOW", reindexing.WINDOW,
         "copy batches of a reindex in the queue at once"),
        ("bienc.workers.tasks.HOLD_RETRY_S", tasks.HOLD_RETRY_S,
         "seconds after which a write held by a reindex's fence is tried again"),
        ("bienc.queue.celery_app.UNACKED_MUTEX_EXPIRE_S", UNACKED_MUTEX_EXPIRE_S,
         "seconds a worker killed inside the sweep of unacknowledged batches holds the sweep's lock"),
        ("bienc.store.interface.EF_MIN", EF_MIN,
         "HNSW candidates a dense search keeps at least (BIENC_HNSW_EF_PER_DOCUMENT a document "
         "asked for, BIENC_HNSW_EF at most)"),
        ("bienc.store.interface.EF_REFERENCE_POINTS", EF_REFERENCE_POINTS,
         "graph size (points) past which an Edge part's candidate list grows, x (1 + "
         "log10(points / this)), BIENC_HNSW_EF at most"),
        ("bienc.config.settings.LARGE_PART_POINTS", LARGE_PART_POINTS,
         "points from which an Edge part's graph takes BIENC_HNSW_M_LARGE links per node"),
        ("bienc.store.parts.EXACT_RATIO", parts.EXACT_RATIO,
         "an Edge part with fewer points than this many per point asked for is searched exactly "
         "(when more points are asked for than the search's ef)"),
        ("bienc.store.parts.IDLE_S", parts.IDLE_S,
         "seconds without a write after which an Edge collection's parts are merged"),
        ("bienc.store.parts.IDLE_RATIO", parts.IDLE_RATIO,
         "idle merge takes every part when the smaller ones hold 1/this of the biggest"),
        ("bienc.store.parts.IDLE_SEAL", parts.IDLE_SEAL,
         "an idle collection's active part is sealed and indexed from this many points"),
        ("bienc.store.parts.RETRY_BASE_S", parts.RETRY_BASE_S,
         "seconds before a failed Edge index build is tried again; doubled after each failure"),
        ("bienc.store.parts.RETRY_MAX_S", parts.RETRY_MAX_S,
         "longest wait between two tries of a failing Edge index build"),
        ("bienc.store.edge.MIN_FREE_MB", edge.MIN_FREE_MB,
         "MiB of free disk under which the Edge store refuses writes (retried) rather than crash"),
    ]


def constants_reference() -> str:
    return _table(("constant", "value", "meaning"),
                  ((f"`{name}`", f"`{value}`", meaning) for name, value, meaning in _constants()))


PARTS = (
    Part("configuration.md", "settings", settings_reference),
    Part("api.md", "routes", routes_reference),
    Part("design.md", "constants", constants_reference),
)


# Pages


def _markers(name: str) -> tuple[str, str]:
    return _BEGIN.format(command=REGENERATE, name=name), _END.format(name=name)


def splice(page: str, name: str, generated: str) -> str:
    """`page` with the text between `name`'s markers replaced by `generated`; ValueError when
    the page lacks them."""
    begin, end = _markers(name)
    start, stop = page.find(begin), page.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no generated part {name!r}: the page needs the lines\n{begin}\n{end}")
    return page[:start] + begin + "\n" + generated.strip() + "\n" + page[stop:]


def stale_parts(docs: Path, write: bool = False) -> list[str]:
    """The parts of the pages under `docs` that differ from the code ("page (name)"); with
    `write`, those parts are rewritten."""
    stale = []
    for part in PARTS:
        path = docs / part.page
        page = path.read_text(encoding="utf-8")
        fresh = splice(page, part.name, part.render())
        if fresh != page:
            stale.append(f"docs/{part.page} ({part.name})")
            if write:
                path.write_text(fresh, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say what differs; exit 1 if any")
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args(argv)
    stale = stale_parts(args.docs, write=not args.check)
    for name in stale:
        print(f"{'out of date' if args.check else 'rewrote'}: {name}")
    if args.check and stale:
        print(f"run `{REGENERATE}` to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
