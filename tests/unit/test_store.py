"""Pure parts of the store: point ids and the store-neutral filter. Store behaviour, for both
engines, is in test_store_congruence.py."""

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bienc.config.errors import InvalidInputError
from bienc.config.indexed_fields import parse_index_declarations
from bienc.config.settings import Settings
from bienc.store.edge_collections import DocumentNames
from bienc.store.filters import (
    FieldExists,
    FieldMatch,
    FieldRange,
    MetadataFilter,
    check_declared,
    iso_bound,
    parse_filter,
)
from bienc.store.interface import (
    EF_MIN,
    EF_REFERENCE_POINTS,
    chunk_number,
    document_key,
    hnsw_ef,
    point_id,
)

NAMESPACE = uuid.UUID("6f1c3a52-8a0e-4d55-9a53-2f1f0b1e7c11")  # ids of stored points: never changes
DOCUMENTS = (("a", 0), ("paper-17", 3), ("é ü 東京", 12), ("x" * 512, 4095))


def test_older_collections_point_ids_are_still_uuid5() -> None:
    for doc_id, chunk in DOCUMENTS:
        assert point_id(doc_id, chunk, "uuid5") == str(uuid.uuid5(NAMESPACE, f"{doc_id}\x00{chunk}"))
    assert len({point_id(d, c, "uuid5") for d, c in (("a", 0), ("a", 1), ("b", 0), ("a\x001", 0))}) == 4


def test_a_point_id_names_its_document_and_chunk() -> None:
    for doc_id, chunk in DOCUMENTS:
        made = uuid.UUID(point_id(doc_id, chunk))
        assert chunk_number(made) == chunk
        # the document's part: 12 bytes of sha1(namespace, doc_id), version and variant set
        digest = bytearray(hashlib.sha1(NAMESPACE.bytes + doc_id.encode()).digest()[:12])
        digest[6], digest[8] = (digest[6] & 0x0F) | 0x80, (digest[8] & 0x3F) | 0x80
        assert made.bytes[:12] == bytes(digest) and made.variant == uuid.RFC_4122
        assert document_key(made) == document_key(uuid.UUID(point_id(doc_id, chunk + 1)))
    keys = {document_key(uuid.UUID(point_id(d, 0))) for d in ("a", "b", "a\x001", "A")}
    assert len(keys) == 4
    assert point_id("a", 0) == point_id("a", 0) != point_id("a", 0, "uuid5")


def test_the_document_names_a_collection_keeps_are_bounded_the_oldest_forgotten_first() -> None:
    names = DocumentNames(kept=8)
    names.add({key: f"d{key}" for key in range(8)})
    assert len(names) == 8 and names.get(0) == "d0"
    names.add({8: "d8", 9: "d9"})
    assert len(names) <= 8 and names.get(9) == "d9" and names.get(8) == "d8"
    assert names.get(0) is None and names.get(1) is None  # the first ones read


def test_a_filter_is_one_match_per_key_and_a_list_is_any_of() -> None:
    assert parse_filter(None) is None and parse_filter({}) is None
    parsed = parse_filter({"lang": ["en", "fr"], "year": 2020, "open": True, "source.site": "x"})
    assert parsed is not None
    assert parsed.matches == (FieldMatch("lang", ("en", "fr")), FieldMatch("year", (2020,)),
                              FieldMatch("open", (True,)), FieldMatch("source.site", ("x",)))
    assert parsed.matches[3].payload_key == "metadata.source.site"


def test_ranges_exists_and_not_extend_the_same_object() -> None:
    parsed = parse_filter({"year": {"gte": 2019, "lt": 2021.5}, "lang": {"exists": False},
                           "when": {"gt": "2024-05-01T10:30+02:00", "lte": "2024-06-01"},
                           "not": [{"lang": "de"}, {"not": {"src": ["a", "b"]}}],
                           "tags": {"exists": True}})
    assert parsed == MetadataFilter(
        (FieldRange("year", gte=2019.0, lt=2021.5), FieldExists("lang", False),
         FieldRange("when", gt=datetime(2024, 5, 1, 10, 30, tzinfo=timezone(timedelta(hours=2))),
                    lte=datetime(2024, 6, 1, tzinfo=UTC)),
         FieldExists("tags", True)),
        (MetadataFilter((FieldMatch("lang", ("de",)),)),
         MetadataFilter((), (MetadataFilter((FieldMatch("src", ("a", "b")),)),))))
    assert [c.key for c in parsed.clauses()] == ["year", "lang", "when", "tags", "lang", "src"]
    when = parsed.matches[2]
    assert isinstance(when, FieldRange) and when.dates and when.gt is not None
    assert iso_bound(when.gt) == "2024-05-01T08:30:00.000000Z"  # the one form engines are given
    # `not` with a value (not an object) is a key like any other, as it always was
    assert parse_filter({"not": "x"}) == MetadataFilter((FieldMatch("not", ("x",)),))
    assert parse_filter({"not": [1, 2]}) == MetadataFilter((FieldMatch("not", (1, 2)),))
    fraction = parse_filter({"t": {"gte": "2024-05-01T00:00:00.123456789Z"}})
    assert fraction is not None and fraction.matches[0] == FieldRange(
        "t", gte=datetime(2024, 5, 1, 0, 0, 0, 123456, tzinfo=UTC))


def test_a_declared_index_refuses_a_range_of_the_other_kind() -> None:
    declared = parse_index_declarations(" year:integer, when:DateTime,lang:keyword ,")
    assert declared == {"year": "integer", "when": "datetime", "lang": "keyword"}
    for fine in ({"year": {"gte": 2.5}}, {"when": {"lt": "2024-01-01"}}, {"lang": {"gte": 1}},
                 {"year": "x"}, {"when": {"exists": True}}, {"other": {"gte": "2024-01-01"}}):
        check_declared(parse_filter(fine), declared)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="filter 'year': a range of dates, but the field "
                                                "is indexed as integer"):
        check_declared(parse_filter({"not": {"year": {"gte": "2024-01-01"}}}), declared)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="filter 'when': a range of numbers"):
        check_declared(parse_filter({"when": {"gte": 0}}), declared)  # type: ignore[arg-type]
    for bad, named in (("year", "'year'"), ("year:text", "'year:text'"), ("a b:keyword", "'a b:keyword'")):
        with pytest.raises(ValueError, match=named):
            parse_index_declarations(bad)


@pytest.mark.parametrize(("bad", "named"), [
    ({"year": {"gtee": 1}}, "filter 'year': unknown operator 'gtee'"),
    ({"year": {}}, "filter 'year': an empty object"),
    ({"year": {"gte": True}}, "filter 'year': bound 'gte' must be a number"),
    ({"year": {"gte": [1]}}, "filter 'year': bound 'gte'"),
    ({"year": {"gte": float("nan")}}, "filter 'year': bound 'gte' must be a finite number"),
    ({"year": {"gte": 2**64}}, "64-bit"),
    ({"year": {"gte": 1, "lt": "2024-01-01"}},
     "filter 'year': a range's bounds are all numbers or all dates"),
    ({"when": {"gte": "yesterday"}}, "filter 'when': 'yesterday' is not a date"),
    ({"when": {"gte": "20240101"}}, "filter 'when': '20240101' is not a date"),
    ({"when": {"gte": "2024-02-30"}}, "filter 'when': '2024-02-30' is not a date"),
    ({"lang": {"exists": "yes"}}, "filter 'lang': exists must be true or false"),
    ({"lang": {"exists": True, "gte": 1}}, "filter 'lang': give either exists or a range"),
    ({"not": {}}, "filter (inside 'not') must be a non-empty object"),
    ({"not": [{"a": 1}, 2]}, "filter 'not': give a filter object"),
    ({"not": {"bad key": 1}}, "filter key 'bad key' (inside 'not') is invalid"),
    ({"not": {"year": {"lt": "x"}}}, "filter 'year': 'x' is not a date"),
    ({"not": {"not": {"not": {"not": {"not": {"a": 1}}}}}}, "nested more than 4 deep"),
    ({"not": [{f"k{i}": i} for i in range(17)]}, "more than 16 conditions"),
])
def test_a_bad_operator_bound_or_negation_is_named(bad: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_filter(bad)
    assert named in str(raised.value)


@pytest.mark.parametrize(("bad", "named"), [
    ({"$where": "1"}, "'$where'"),
    ({"a..b": 1}, "'a..b'"),
    ({"lang ": "en"}, "'lang '"),
    ({"métadonnée": "x"}, "'métadonnée'"),
    ({"x" * 200: 1}, "invalid"),
    ({"": "x"}, "non-empty"),
    ({"lang": {"nested": 1}}, "filter 'lang'"),
    ({"lang": []}, "filter 'lang'"),
    ({"score": 0.5}, "filter 'score'"),
    ({"n": 2**63}, "64-bit"),
    ({"mixed": ["a", 1]}, "not both"),
    ({"flags": [True, False]}, "not booleans"),
    ({"nothing": None}, "filter 'nothing'"),
])
def test_a_bad_filter_key_or_value_is_named(bad: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidInputError, match="filter") as raised:
        parse_filter(bad)
    assert named in str(raised.value)


def test_a_deeper_search_walks_a_longer_candidate_list_within_the_settings_bounds() -> None:
    settings = Settings()
    depths = [1, 10, 30, 64, 100, 1000]
    efs = [hnsw_ef(depth, settings.hnsw_ef, settings.hnsw_ef_per_document) for depth in depths]
    assert efs == sorted(efs)
    assert efs[0] == EF_MIN  # a shallow search still keeps enough candidates
    assert hnsw_ef(30, 512, 8) == 240  # 8 candidates a document
    assert efs[-1] == settings.hnsw_ef  # BIENC_HNSW_EF: the most
    assert hnsw_ef(1000, 64, 8) == 64  # a cap below the minimum is the cap


def test_a_bigger_graph_walks_a_longer_candidate_list_by_the_logarithm_of_its_size() -> None:
    small = hnsw_ef(30, 10_000, 8, points=EF_REFERENCE_POINTS)
    assert small == hnsw_ef(30, 10_000, 8) == 240  # up to the reference, as without a size
    sizes = [EF_REFERENCE_POINTS * n for n in (1, 2, 10, 100)]
    efs = [hnsw_ef(30, 10_000, 8, points=n) for n in sizes]
    assert efs == sorted(efs) and efs[0] < efs[1]
    assert efs[2] == 2 * small and efs[3] == 3 * small  # one more list a tenfold growth
    assert hnsw_ef(30, 512, 8, points=100 * EF_REFERENCE_POINTS) == 512  # BIENC_HNSW_EF caps it
    assert hnsw_ef(30, 10_000, 8, points=2000, reference=200) == 2 * small
