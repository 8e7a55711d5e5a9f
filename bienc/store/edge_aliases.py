"""The Edge store's names: aliases.json under its root, {"papers": "papers@2", ...}, each name
and the physical collection it stands for. The file is rewritten whole (a temporary file
renamed over it), so a name switches from one physical collection to the next in one step; the
caller (bienc.store.edge) holds its lock around every call."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from bienc.config.errors import CollectionError

FILE = "aliases.json"


class AliasFile:
    """The aliases in `root`/aliases.json, read once; `names` is what the file holds."""

    def __init__(self, root: Path):
        self._root = root
        self.names: dict[str, str] = self._read()

    def _read(self) -> dict[str, str]:
        try:
            aliases = json.loads((self._root / FILE).read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(aliases, dict):
            raise CollectionError(f"{self._root / FILE} is damaged")
        return {str(k): str(v) for k, v in aliases.items()}

    def write(self, aliases: dict[str, str]) -> None:
        """Replace every alias with `aliases`, in one step."""
        tmp = self._root / f".{FILE}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(aliases, sort_keys=True))
        os.replace(tmp, self._root / FILE)
        self.names = aliases
