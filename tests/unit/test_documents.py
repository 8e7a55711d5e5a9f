import pytest

from bienc.ingest.documents import Document, RecordError, parse_record


def test_beir_and_plain_forms_give_the_same_document() -> None:
    beir = parse_record({"_id": 7, "title": "T", "text": "body"}, 1000)
    plain = parse_record({"id": "7", "title": "T", "text": "body", "metadata": {}}, 1000)
    assert beir == plain == Document("7", "body", "T", {})


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"text": "x"}, "'id'"),
        ({"id": "", "text": "x"}, "'id' is empty"),
        ({"id": 1.5, "text": "x"}, "'id' must be"),
        ({"id": True, "text": "x"}, "'id' must be"),
        ({"id": "a"}, "missing field 'text'"),
        ({"id": "a", "text": 3}, "'text' must be a string"),
        ({"id": "a", "text": "   "}, "'text' is empty"),
        ({"id": "a", "text": "x", "title": ["t"]}, "'title' must be a string"),
        ({"id": "a", "text": "x", "metadata": [1]}, "'metadata' must be an object"),
        ({"id": "a", "text": "x", "metadata": {"v": float("nan")}}, "'metadata' contains NaN"),
        ({"id": "a", "text": "x", "metadata": {"v": "\udc80"}}, "'metadata' contains a lone surrogate"),
        ({"id": "a\udc80", "text": "x"}, "'id' contains a lone surrogate"),
        ({"id": "a", "text": "bad \ud800 surrogate"}, "'text' is not valid Unicode"),
        ({"id": "a", "_id": "b", "text": "x"}, "not both"),
        ({"id": "a", "text": "x", "version": -1}, "'version' must be an integer from 0 to"),
        ({"id": "a", "text": "x", "version": 2**53}, "'version' must be an integer from 0 to"),
        ({"id": "a", "text": "x", "version": "3"}, "'version' must be an integer"),
        ({"id": "a", "text": "x", "version": 1.0}, "'version' must be an integer"),
        ({"id": "a", "text": "x", "version": True}, "'version' must be an integer"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_records_name_the_field(record: object, field: str) -> None:
    with pytest.raises(RecordError, match=field):
        parse_record(record, 1000)


def test_a_version_travels_with_the_document_and_is_not_content() -> None:
    versioned = parse_record({"id": "a", "text": "x", "version": 2**53 - 1}, 1000)
    assert versioned.version == 2**53 - 1
    assert parse_record({"id": "a", "text": "x"}, 1000).version is None
    assert Document.from_message(versioned.to_message()) == versioned
    assert versioned.content_hash == Document("a", "x").content_hash  # same text: unchanged
    assert "version" not in Document("a", "x").to_message()


def test_text_over_the_limit_names_the_setting() -> None:
    with pytest.raises(RecordError, match="BIENC_MAX_TEXT_CHARS"):
        parse_record({"id": "a", "text": "x" * 11}, 10)


def test_content_hash_changes_with_text_title_or_metadata() -> None:
    base = Document("a", "text", "title", {"k": 1})
    variants = [Document("a", "text!", "title", {"k": 1}), Document("a", "text", None, {"k": 1}),
                Document("a", "text", "title", {"k": 2})]
    assert Document("b", "text", "title", {"k": 1}).content_hash == base.content_hash
    assert all(v.content_hash != base.content_hash for v in variants)


def test_deeply_nested_metadata_is_an_error_not_a_crash() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):  # deeper than Python's recursion limit
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    with pytest.raises(RecordError, match="nested deeper than 32 levels"):
        parse_record({"id": "a", "text": "x", "metadata": deep}, 1000)
