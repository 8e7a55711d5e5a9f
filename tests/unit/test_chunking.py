import itertools
from typing import Any

import pytest

from ingest.chunking import SPECIAL_TOKENS, chunk_document, window_bounds


@pytest.mark.parametrize(
    ("n", "size", "overlap"), [(0, 5, 1), (5, 5, 2), (6, 5, 2), (100, 10, 3), (11, 4, 0)]
)
def test_windows_cover_every_token_with_the_requested_overlap(n: int, size: int, overlap: int) -> None:
    bounds = window_bounds(n, size, overlap)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(end - start <= size for start, end in bounds)
    for (s1, e1), (s2, _) in itertools.pairwise(bounds):
        assert e1 - s2 == overlap  # neighbours share exactly `overlap` tokens
        assert s2 > s1


def _chunks(tokenizer: Any, title: str | None, text: str, size: int, overlap: int) -> Any:
    body = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    head = tokenizer(title or "", add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return chunk_document(title, head, text, body, size, overlap)


def test_short_document_is_one_chunk_with_text_unchanged(tokenizer: Any) -> None:
    chunks = _chunks(tokenizer, "A title", "  Short text.  ", 128, 32)
    assert len(chunks) == 1
    assert chunks[0].body == "  Short text.  "
    assert chunks[0].text == "A title   Short text.  "


def test_long_document_chunks_fit_the_window_and_drop_no_word(tokenizer: Any) -> None:
    words = [f"word{i}" for i in range(400)]
    text = " ".join(words)
    chunks = _chunks(tokenizer, "Cell biology", text, 64, 16)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.text.startswith("Cell biology ")
        n_tokens = len(tokenizer(chunk.text)["input_ids"])  # with [CLS] and [SEP]
        assert n_tokens <= 64
    seen = set(" ".join(c.body for c in chunks).split())
    assert seen == set(words)
    # consecutive windows overlap: the last word of one chunk appears in the next
    for first, second in itertools.pairwise(chunks):
        assert first.body.split()[-1] in second.body.split()


def test_one_very_long_word_is_kept_whole(tokenizer: Any) -> None:
    text = "x" * 5000  # BERT maps a word this long to one [UNK] token
    chunks = _chunks(tokenizer, None, text, 32, 8)
    assert "".join(c.body for c in chunks) == text


def test_long_word_split_into_pieces_is_covered(tokenizer: Any) -> None:
    text = "ab" * 45  # 90 characters: under BERT's 100-character cap, many word pieces
    chunks = _chunks(tokenizer, None, text, 16, 4)
    assert len(chunks) > 1
    assert chunks[0].body == text[: len(chunks[0].body)]
    assert chunks[-1].body == text[-len(chunks[-1].body) :]


def test_unicode_text_keeps_its_characters(tokenizer: Any) -> None:
    text = " ".join(["Zürich", "naïve", "東京都", "Ελληνικά", "emoji 🙂"] * 40)
    chunks = _chunks(tokenizer, "Ünïcödé", text, 48, 8)
    assert len(chunks) > 1
    assert chunks[0].body == text[: len(chunks[0].body)]
    assert chunks[-1].body == text[-len(chunks[-1].body) :]
    for chunk in chunks:
        assert chunk.body in text


def test_title_longer_than_half_a_window_is_cut_not_the_body(tokenizer: Any) -> None:
    title = " ".join(["title"] * 100)
    chunks = _chunks(tokenizer, title, "body " * 50, 32, 4)
    for chunk in chunks:
        assert len(tokenizer(chunk.text)["input_ids"]) <= 32
        assert chunk.text.count("title") == 16
    assert SPECIAL_TOKENS == 2


def test_window_edges_move_back_to_word_starts() -> None:
    #          w0 ----- w1 -- w2 --------- w3
    breaks = [True, False, True, True, False, False, True]
    bounds = window_bounds(7, 4, 1, breaks)
    assert bounds == [(0, 3), (2, 6), (3, 7)]  # the overlap token 5 belongs to w2, from 3
    # a word longer than the window is cut rather than looping forever
    assert window_bounds(6, 2, 0, [True] + [False] * 5) == [(0, 2), (2, 4), (4, 6)]
