"""Splitting a document into windows the model reads whole, measured in its own tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

SPECIAL_TOKENS = 2  # [CLS] and [SEP] that the model adds around every input


@dataclass(frozen=True)
class Chunk:
    chunk_no: int
    text: str  # what the encoder reads: the title (and heading trail), then this window
    body: str  # the window of the body alone, shown as the snippet
    page: int | None = None  # the PDF page it is on (1-based)
    section: tuple[str, ...] = ()  # the headings above it, outermost first


def section_context(title: str | None, path: Sequence[str]) -> str | None:
    """What precedes each chunk of a section in the encoded text: the document's title and
    its heading trail, as a reader sees them above the passage ("Manual. Setup > Wiring").
    Dense retrievers read a passage better with its title in front (the BEIR models were
    trained so, and bienc's SciFact figures measure it); headings are the same kind of
    context one level down."""
    headings = [h for h in path if h]
    if title and headings and headings[0].casefold() == title.casefold():
        headings = headings[1:]  # a page's <h1> often repeats its <title>: said once is enough
    trail = " > ".join(headings)
    return ". ".join(p for p in (title, trail) if p) or None


def number_chunks(per_section: Sequence[Sequence[Chunk]], pages: Sequence[int | None],
                  paths: Sequence[tuple[str, ...]]) -> list[Chunk]:
    """The chunks of a document's sections in order, numbered from 0 across sections, each
    with its section's page and heading trail."""
    chunks: list[Chunk] = []
    for section_chunks, page, path in zip(per_section, pages, paths, strict=True):
        for chunk in section_chunks:
            chunks.append(replace(chunk, chunk_no=len(chunks), page=page, section=path))
    return chunks


def window_bounds(n_tokens: int, size: int, overlap: int,
                  breaks: Sequence[bool] | None = None) -> list[tuple[int, int]]:
    """Token ranges [start, end) of windows of at most `size` tokens covering every token.

    Neighbours share `overlap` tokens, or a little more when `breaks` is given: `breaks[i]`
    is True where token i may start a window (a word begins there), and window edges move
    back to such a token so that no word is cut, unless the word is longer than the window.
    `size` > `overlap` >= 0.
    """
    if n_tokens <= size:
        return [(0, n_tokens)]

    def back_to_break(i: int, floor: int) -> int:
        if breaks is None:
            return i
        j = i
        while j > floor and not breaks[j]:
            j -= 1
        return j if j > floor else i

    bounds = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        if end < n_tokens:
            end = back_to_break(end, start)
        bounds.append((start, end))
        if end == n_tokens:
            return bounds
        start = back_to_break(max(end - overlap, start + 1), start)


def chunk_document(
    title: str | None,
    title_offsets: Sequence[tuple[int, int]],
    text: str,
    offsets: Sequence[tuple[int, int]],
    chunk_tokens: int,
    overlap: int,
) -> list[Chunk]:
    """Chunks of a document, given the token character offsets of its title and body
    (tokenised without special tokens).

    Every chunk starts with the title, so the title counts against each window; a title
    longer than half a window is cut to that in the encoded text (the body never is). A body
    that fits in one window stays one chunk holding the text unchanged.
    """
    prefix = ""
    title_budget = 0
    if title and title_offsets:
        title_budget = min(len(title_offsets), chunk_tokens // 2)
        prefix = title[: title_offsets[title_budget - 1][1]] + " "
    body_budget = chunk_tokens - SPECIAL_TOKENS - title_budget
    if len(offsets) <= body_budget:
        return [Chunk(0, prefix + text, text)]
    # A token glued to the previous one (no gap between them) continues the same word.
    breaks = [i == 0 or offsets[i][0] > offsets[i - 1][1] for i in range(len(offsets))]
    bounds = window_bounds(len(offsets), body_budget, min(overlap, body_budget - 1), breaks)
    chunks = []
    for chunk_no, (start, end) in enumerate(bounds):
        body = text[offsets[start][0] : offsets[end - 1][1]]
        chunks.append(Chunk(chunk_no, prefix + body, body))
    return chunks
