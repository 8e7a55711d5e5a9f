"""What a search may ask for: its mode and, in hybrid mode, its fusion. Names only, so that
the command line and the API can check them without loading the search code."""

from __future__ import annotations

from typing import Literal

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "lexical", "hybrid")
