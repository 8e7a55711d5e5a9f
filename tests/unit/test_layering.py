"""Imports flow one way: entry points -> ingest / search / workers -> store, encoding, queue ->
config. Every import of the package, lazy ones inside functions included, is checked."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {  # a module may import only from layers below its own
    "config": 0,
    "store": 1, "encoding": 1, "queue": 1,
    "ingest": 2, "search": 2, "resources": 2,
    "workers": 3, "snapshots": 3,
    "runtime": 4, "access": 4, "progress": 4,
    "api_errors": 5,
    "api_requests": 6, "api_limits": 6, "api_metrics": 6, "api_uploads": 6,
    "api": 7, "eval_command": 7,
    "cli": 8, "reference": 8,
}


def _sources() -> dict[str, Path]:
    """Module name -> file, as installed (ingest/, search/, workers/ inside bienc)."""
    found = {}
    for folder, package in (("bienc", "bienc"), ("ingest", "bienc.ingest"),
                            ("search", "bienc.search"), ("workers", "bienc.workers")):
        for path in (ROOT / folder).glob("**/*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(path: Path, prefix: str = "bienc.") -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith(prefix)}


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_imports_flow_one_way() -> None:
    sources = _sources()
    assert {_layer(m) for m in sources if m.count(".") >= 1} <= set(LAYERS)
    upward = [f"{module} imports {target}"
              for module, path in sources.items() if module.count(".") >= 1
              for target in _imports(path)
              if _layer(target) != _layer(module) and LAYERS[_layer(target)] >= LAYERS[_layer(module)]]
    assert upward == []


def test_no_interface_imports_its_implementations() -> None:
    sources = _sources()
    engines = {module for module in sources
               if module in ("bienc.store.qdrant", "bienc.store.factory")
               or module.startswith("bienc.store.edge")}
    for interface in ("bienc.store.interface", "bienc.store.filters", "bienc.store.base"):
        assert not _imports(sources[interface]) & engines, interface
        assert not _imports(sources[interface], "qdrant"), interface  # no engine's types


def test_only_the_edge_store_imports_its_rooms() -> None:
    """bienc.store.edge_* are the Edge store's parts: nothing outside it reaches into them."""
    sources = _sources()
    outside = [f"{module} imports {target}" for module, path in sources.items()
               if not module.startswith("bienc.store.edge")
               for target in _imports(path) if target.startswith("bienc.store.edge_")]
    assert outside == []
