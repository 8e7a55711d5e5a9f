"""Chunking real text with the model's tokenizer."""

import itertools
from typing import Any

from bienc.ingest.chunking import SPECIAL_TOKENS, chunk_document


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
