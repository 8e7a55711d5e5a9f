"""Batching by tokens: a pure function, checked on its invariants."""

from hypothesis import given
from hypothesis import strategies as st

from bienc.encoding.encoder import plan_batches


@given(st.lists(st.integers(1, 512), max_size=200), st.integers(1, 64), st.integers(16, 8192))
def test_batches_cover_every_text_once_within_both_caps(lengths: list[int], max_texts: int,
                                                        max_tokens: int) -> None:
    batches = plan_batches(lengths, max_texts, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= max_texts
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= max_tokens or len(batch) == 1  # a text over the cap goes alone
        assert 4 * sum(lengths[i] for i in batch) >= 3 * padded  # padding is at most a quarter


def test_one_long_text_does_not_pad_the_short_ones() -> None:
    lengths = [10] * 31 + [256]
    batches = plan_batches(lengths, max_texts=32, max_tokens=4096)
    assert batches[0] == [31]  # longest first; the short ones share batches of 10-token rows
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded == 256 + 31 * 10  # no padding at all, where one batch of 32 would pad to 8192
