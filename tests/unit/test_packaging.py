"""What `pip install` puts into site-packages: one import name, bienc, with the top-level
folders ingest/, search/ and workers/ inside it as bienc.ingest, bienc.search, bienc.workers
(through the checkout's symlinks bienc/ingest -> ../ingest etc.)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".bienc", "build", "dist", "*.egg-info",
                                     "__pycache__", ".*_cache", "bench", "tests")


def test_the_top_level_folders_are_linked_into_bienc() -> None:
    for folder in ("ingest", "search", "workers"):
        link = ROOT / "bienc" / folder
        assert link.is_symlink() and link.readlink() == Path("..", folder), link


def test_the_installed_distribution_has_one_top_level_name(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "site-packages"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr
    [dist] = [d for d in importlib.metadata.distributions(path=[str(target)])
              if d.metadata["Name"] == "bienc"]
    files = {f.as_posix() for f in dist.files or []}
    top_level = {name.split("/")[0] for name in files if not name.startswith("..")}  # .. = bin/
    assert top_level == {"bienc", dist._path.name}  # type: ignore[attr-defined]
    assert dist.read_text("top_level.txt") == "bienc\n"
    for module in ("bienc/ingest/producer.py", "bienc/search/searcher.py",
                   "bienc/workers/tasks.py", "bienc/store/edge.py", "bienc/sample_corpus.jsonl"):
        assert module in files
        assert not (target / module).is_symlink()  # real files, not links into the checkout
    assert not {"core", "ingest", "search", "workers"} & {p.name for p in target.iterdir()}
    # and the installed copy imports as itself, the task under its queued name
    probe = subprocess.run(
        [sys.executable, "-c", "import bienc.workers.tasks as t, bienc.cli; "
         "print(t.__file__); print(t.index_batch.name)"],
        cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(target / "bienc/workers/tasks.py"), "bienc.index_batch"]
