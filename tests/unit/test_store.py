"""Pure parts of the store: point ids and the store-neutral filter. Store behaviour, for both
engines, is in test_store_congruence.py."""

import uuid

import pytest

from bienc.config.errors import InvalidInputError
from bienc.store.filters import FieldMatch, parse_filter
from bienc.store.interface import point_id


def test_point_ids_are_stable_and_distinct() -> None:
    namespace = uuid.UUID("6f1c3a52-8a0e-4d55-9a53-2f1f0b1e7c11")  # ids of stored points: never changes
    for doc_id, chunk in (("a", 0), ("paper-17", 3), ("é ü 東京", 12), ("x" * 512, 4095)):
        assert point_id(doc_id, chunk) == str(uuid.uuid5(namespace, f"{doc_id}\x00{chunk}"))
    assert point_id("a", 0) == point_id("a", 0)
    assert len({point_id("a", 0), point_id("a", 1), point_id("b", 0), point_id("a\x001", 0)}) == 4


def test_a_filter_is_one_match_per_key_and_a_list_is_any_of() -> None:
    assert parse_filter(None) is None and parse_filter({}) is None
    parsed = parse_filter({"lang": ["en", "fr"], "year": 2020, "open": True, "source.site": "x"})
    assert parsed is not None
    assert parsed.matches == (FieldMatch("lang", ("en", "fr")), FieldMatch("year", (2020,)),
                              FieldMatch("open", (True,)), FieldMatch("source.site", ("x",)))
    assert parsed.matches[3].payload_key == "metadata.source.site"


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
