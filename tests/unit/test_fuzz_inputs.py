"""Property tests: any input becomes a document or a named error, never a crash or a loss."""

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bienc.ingest.documents import Document, RecordError, parse_record
from bienc.ingest.readers import BadRecord, read_csv, read_jsonl

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
records = st.dictionaries(
    st.sampled_from(["id", "_id", "text", "title", "metadata", "other"]), json_values, max_size=5
) | json_values


@settings(max_examples=400, deadline=None)
@given(records)
def test_any_record_is_a_document_or_a_named_error(record: Any) -> None:
    try:
        document = parse_record(record, max_text_chars=200)
    except RecordError as exc:
        assert str(exc)
    else:
        assert isinstance(document, Document)
        assert document.text == record["text"]  # text is kept exactly
        assert document.id.strip()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60) | st.builds(
    lambda i, t: json.dumps({"id": i, "text": t}).encode(), st.integers(), st.text(min_size=1))))
def test_every_jsonl_line_is_accounted_for(lines: list[bytes]) -> None:
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    data = b"\n".join(lines) + b"\n"
    items = list(read_jsonl(io.BytesIO(data), max_text_chars=10_000))
    non_blank = [i + 1 for i, line in enumerate(data.split(b"\n")[:-1]) if line.strip()]
    assert len(items) == len(non_blank)  # nothing silently dropped
    for line_no, item in zip(non_blank, items, strict=True):
        if isinstance(item, BadRecord):
            assert item.where == f"line {line_no}" and item.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_csv_never_crashes(data: bytes) -> None:
    for item in read_csv(io.BytesIO(b"id,text\n" + data), max_text_chars=10_000):
        assert isinstance(item, Document | BadRecord)
