"""Token windows: pure functions over token counts and word starts."""

import itertools

import pytest

from bienc.ingest.chunking import window_bounds


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


def test_window_edges_move_back_to_word_starts() -> None:
    #          w0 ----- w1 -- w2 --------- w3
    breaks = [True, False, True, True, False, False, True]
    bounds = window_bounds(7, 4, 1, breaks)
    assert bounds == [(0, 3), (2, 6), (3, 7)]  # the overlap token 5 belongs to w2, from 3
    # a word longer than the window is cut rather than looping forever
    assert window_bounds(6, 2, 0, [True] + [False] * 5) == [(0, 2), (2, 4), (4, 6)]
