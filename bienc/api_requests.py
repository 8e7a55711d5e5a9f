"""The API's request bodies, and the checks of a request beyond its schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from bienc.api_errors import MAX_REPORTED_ERRORS
from bienc.config.errors import (
    InvalidInputError,
)
from bienc.config.settings import MAX_TOP_K
from bienc.ingest.documents import MAX_ID_CHARS, Document, RecordError, json_problem, parse_record
from bienc.queue.versions import MAX_VERSION
from bienc.queue.webhooks import MAX_URL_CHARS
from bienc.search.fusion import Fusion
from bienc.search.modes import Mode
from bienc.store.filters import MetadataFilter, parse_filter
from bienc.store.record import COLLECTION_NAME, NAME_RULE, PHYSICAL_OR_NAME

MAX_QUERIES = 100
DOCUMENT_FIELDS = frozenset({"id", "text", "title", "metadata", "version"})


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
        "version": {"type": "integer", "minimum": 0, "maximum": MAX_VERSION,
                    "description": "the document's own version: a write older than the one "
                                   "stored is superseded, not applied (absent: the order of "
                                   "acceptance)"},
    },
}


class JobCallback(BaseModel):
    """A field of every request that starts a job: where its final status is POSTed."""

    callback_url: str | None = Field(
        default=None, min_length=1, max_length=MAX_URL_CHARS,
        description="http(s) URL on a host of BIENC_WEBHOOK_ALLOWED_HOSTS: the job's final status "
                    "is POSTed there, signed (X-Bienc-Signature), once it ends")


class IngestBody(JobCallback):
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
    offset: int = Field(default=0, ge=0, le=MAX_TOP_K - 1, description=(
        "documents skipped first: the page of top_k after them (offset + top_k at most "
        f"{MAX_TOP_K})"))
    filter: dict[str, Any] | None = Field(
        default=None, description="metadata key -> a value, a list of values, a range "
        '({"gte": 2020, "lt": 2024}, numbers or ISO-8601 dates) or {"exists": true}; "not" -> a '
        "filter that must not hold; every key must match (docs/search.md)")
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


class DeleteBody(JobCallback):
    """Which documents a delete removes: those a metadata filter matches."""

    model_config = ConfigDict(extra="forbid", strict=True)
    filter: dict[str, Any] = Field(
        min_length=1, description="the documents to delete: those this metadata filter matches "
        "(as a search's filter; required, not empty)")
    dry_run: bool = Field(default=False, description="true: answer at once with the number of "
                          "documents the filter matches, and delete nothing")
    version: int | None = Field(
        default=None, ge=0, le=MAX_VERSION,
        description="the delete's own version: a document stored at a newer one is kept, and a "
                    "write of this version or older arriving later does not bring one back "
                    "(absent: the order of acceptance)")


class ReindexBody(JobCallback):
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
            raise RecordError(f"unknown field {unknown[0]!r} (fields: id, text, title, metadata, "
                              "version)")
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
    return queries, check_filter(body.filter)


def check_filter(raw: dict[str, Any] | None) -> MetadataFilter | None:
    """A request's metadata filter, or InvalidInputError naming the key or value at fault."""
    if raw is not None:
        problem = json_problem(raw)
        if problem:
            raise InvalidInputError(f"field 'filter' {problem}")
    try:
        return parse_filter(raw)
    except InvalidInputError as exc:
        raise InvalidInputError(f"field 'filter': {exc}") from exc
