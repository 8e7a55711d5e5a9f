"""What Redis answers, in Python's terms."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """A Redis reply as text: bytes decoded (UTF-8), anything else through str()."""
    return value.decode() if isinstance(value, bytes) else str(value)
