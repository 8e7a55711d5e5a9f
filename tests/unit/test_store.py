"""Pure parts of the store module. Store behaviour, for both engines, is in
test_store_congruence.py."""

import pytest

from core.errors import InvalidInputError
from core.store import metadata_filter, point_id


def test_point_ids_are_stable_and_distinct() -> None:
    assert point_id("a", 0) == point_id("a", 0)
    assert len({point_id("a", 0), point_id("a", 1), point_id("b", 0), point_id("a\x001", 0)}) == 4


def test_metadata_filter_rejects_values_it_cannot_match_exactly() -> None:
    assert metadata_filter(None) is None and metadata_filter({}) is None
    assert metadata_filter({"lang": ["en", "fr"], "year": 2020}) is not None
    for bad in ({"lang": {"nested": 1}}, {"lang": []}, {"score": 0.5}, {"": "x"}):
        with pytest.raises(InvalidInputError, match="filter"):
            metadata_filter(bad)
