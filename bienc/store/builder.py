"""The builder process: builds the HNSW index of Qdrant Edge parts away from the process that
searches them (bienc.store.parts says why and how the result is swapped in).

    python -m bienc.store.builder SPEC_JSON

SPEC: {"kind": "index" | "merge", "copies": [folder, ...], "target": folder,
"config": dense_config's keyword arguments}.
"index" turns the one copy (of a sealed part) into the target with one indexed segment;
"merge" writes every point of the copies into a new target and indexes it. Exit status 0
when the target is complete (closed, flushed); anything else leaves no target behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import qdrant_edge as qe

_COPY_BATCH = 1000  # points read and written at a time in a merge


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


def build(spec: dict[str, Any]) -> None:
    config = dense_config(**spec["config"], indexing=True)
    target = Path(spec["target"])
    copies = [Path(c) for c in spec["copies"]]
    if spec["kind"] == "index":
        shard = qe.EdgeShard.load(str(copies[0]), config)
    else:
        shard = qe.EdgeShard.create(str(copies[0].with_name(copies[0].name + ".merged")), config)
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
    shard.optimize()
    shard.flush()
    shard.close()
    built = copies[0] if spec["kind"] == "index" else copies[0].with_name(copies[0].name + ".merged")
    os.replace(built, target)


def main() -> int:
    spec = json.loads(sys.argv[1])
    try:
        build(spec)
    except Exception as exc:
        shutil.rmtree(spec["target"], ignore_errors=True)
        print(f"bienc builder: {spec['kind']} of {spec['copies']} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
