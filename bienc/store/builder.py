"""The builder process: builds the HNSW index of Qdrant Edge parts away from the process that
searches them (bienc.store.parts says why and how the result is swapped in).

    python -m bienc.store.builder SPEC_JSON

SPEC: {"kind": "index" | "merge" | "compact", "copies": [folder, ...], "target": folder,
"config": dense_config's keyword arguments (none for "compact"), "graph": {"hnsw_m_large":
links, "large_part": points} (graph_links; optional), "parent": the pid of the process that
started it}.
"index" turns the one copy (of a sealed part) into the target with one indexed segment;
"merge" writes every point of the copies into a new target and indexes it; "compact" writes
every point of the one copy (of the lexical part) into a new target, leaving behind the slots
of deleted points. Exit status 0 when the target is complete (closed, flushed, fsync'd);
anything else leaves no target behind.

The builder dies with the process that started it (PR_SET_PDEATHSIG): a build nobody will
swap in only costs CPU, memory and disk, and writes into a folder its parent's successor
clears.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from bienc.config.crash import crash_point
from bienc.store.durable import fsync_tree
from bienc.store.interface import LEXICAL_VECTOR

_COPY_BATCH = 1000  # points read and written at a time in a merge
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def dense_config(dimension: int, hnsw_m: int, hnsw_ef_construct: int, full_scan_kb: int,
                 quantization: bool, indexing: bool) -> qe.EdgeConfig:
    """A dense part's configuration. `indexing`: the builder's, which indexes every segment
    and merges them into one; the searching process never optimizes (no indexing)."""
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
        hnsw_config=qe.HnswIndexConfig(m=hnsw_m, ef_construct=hnsw_ef_construct,
                                       full_scan_threshold=max(1, full_scan_kb)),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1, default_segment_number=1)
        if indexing else None,
        quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99,
                                                        always_ram=True) if quantization else None,
    )


def lexical_config() -> qe.EdgeConfig:
    """The lexical part's configuration: BM25 vectors, IDF applied at query time."""
    return qe.EdgeConfig(sparse_vectors={
        LEXICAL_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)})


def _copy_points(copies: list[Path], into: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
    """A new shard at `into` with every point and every payload index of the copies."""
    shard = qe.EdgeShard.create(str(into), config)
    for copy in copies:
        source = qe.EdgeShard.load(str(copy), config)
        made = shard.info().payload_schema
        for field_name, index in source.info().payload_schema.items():  # every part's
            if field_name not in made:
                shard.update(qe.UpdateOperation.create_field_index(field_name, index.data_type))
        offset: Any = None
        while True:
            records, offset = source.scroll(qe.ScrollRequest(
                offset=offset, limit=_COPY_BATCH, with_payload=True, with_vector=True))
            if records:
                shard.update(qe.UpdateOperation.upsert_points([
                    qe.Point(id=r.id, vector=r.vector, payload=r.payload)  # type: ignore[arg-type]
                    for r in records]))
            if offset is None:
                break
        source.close()
    return shard


def scratch_of(target: Path) -> Path:
    """Where a merge or a compaction into `target` writes its points before they are indexed
    (a builder killed there leaves it behind: the next one, or the parent, clears it)."""
    return target.with_name(target.name + ".work")


def graph_links(points: int, hnsw_m: int, hnsw_m_large: int, large_part: int) -> int:
    """Links per node of the graph of a part of `points` points: `hnsw_m_large` from
    `large_part` points on where that is more (settings.LARGE_PART_POINTS says why), else
    `hnsw_m`."""
    return max(hnsw_m, hnsw_m_large) if points >= large_part else hnsw_m


def _for_its_size(shard: qe.EdgeShard, folder: Path, config: dict[str, Any],
                  graph: dict[str, int]) -> qe.EdgeShard:
    """`shard`, opened again with the links its size calls for (graph_links) where they
    differ from `config`'s, before its graph is built."""
    links = graph_links(shard.info().points_count, config["hnsw_m"], **graph) if graph \
        else config["hnsw_m"]
    if links == config["hnsw_m"]:
        return shard
    shard.close()
    return qe.EdgeShard.load(str(folder), dense_config(**{**config, "hnsw_m": links}, indexing=True))


def build(spec: dict[str, Any]) -> None:
    target = Path(spec["target"])
    copies = [Path(c) for c in spec["copies"]]
    merged = scratch_of(target)
    shutil.rmtree(merged, ignore_errors=True)
    config, graph = spec.get("config") or {}, spec.get("graph") or {}
    if spec["kind"] == "index":
        built = copies[0]
        shard = _for_its_size(qe.EdgeShard.load(str(built), dense_config(**config, indexing=True)),
                              built, config, graph)
    elif spec["kind"] == "merge":
        built = merged
        shard = _for_its_size(_copy_points(copies, built, dense_config(**config, indexing=True)),
                              built, config, graph)
    else:
        built = merged
        shard = _copy_points(copies, built, lexical_config())
    crash_point("builder.build")
    shard.optimize()
    shard.flush()
    shard.close()
    fsync_tree(built)  # durable before the parent names it in its manifest
    os.replace(built, target)


def die_with_parent(parent: int) -> None:
    """Be killed when the process that started this one dies (Linux); exit now if it
    already has (it died before this line ran)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's stop() still terminates it
        pass
    if os.getppid() != parent:
        sys.exit(2)


def main() -> int:
    spec = json.loads(sys.argv[1])
    if "parent" in spec:
        die_with_parent(int(spec["parent"]))
    try:
        build(spec)
    except Exception as exc:
        shutil.rmtree(spec["target"], ignore_errors=True)
        shutil.rmtree(scratch_of(Path(spec["target"])), ignore_errors=True)
        print(f"bienc builder: {spec['kind']} of {spec['copies']} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
