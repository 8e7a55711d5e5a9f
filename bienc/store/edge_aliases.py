"""The Edge store's names: aliases.json under its root, {"papers": "papers@2", ...}, each name
and the physical collection it stands for. The file is rewritten whole (a temporary file,
fsync'd, renamed over it: bienc.store.durable), so a name switches from one physical
collection to the next in one step that a crash or a power cut does not undo; the caller
(bienc.store.edge) holds its lock around every call."""

from __future__ import annotations

import json
from pathlib import Path

from bienc.config.errors import CollectionError
from bienc.store.durable import write_atomic

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
        write_atomic(self._root / FILE, json.dumps(aliases, sort_keys=True))
        self.names = aliases
