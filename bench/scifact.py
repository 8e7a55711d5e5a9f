"""SciFact end to end: ingest through Redis and a `bienc worker` process, then `bienc eval`.

Prints nDCG@10, recall, ingest docs/s and search p50/p99 ms. Several configurations can run
in one go (`--config name:VAR=value,VAR=value`), each into its own collection, side by side;
each collection is evaluated in every search mode `--search` names (default: its own default).

    python bench/scifact.py                                  # bienc's defaults
    python bench/scifact.py --config seed:CHUNKING=false,DTYPE=float32 --config default:
    python bench/scifact.py --limit 500                      # a quick run on 500 documents
    python bench/scifact.py --config dense:LEXICAL=false --config default: \
        --search dense --search lexical --search hybrid:dbsf --search hybrid:rrf

Needs Redis (BIENC_BENCH_REDIS_URL, default redis://127.0.0.1:6379/12; the DB is flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
BIENC = [sys.executable, "-m", "bienc.cli"]


def parse_config(spec: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = spec.partition(":")
    settings = {}
    for pair in filter(None, assignments.split(",")):
        key, _, value = pair.partition("=")
        settings[f"BIENC_{key.strip().upper()}"] = value.strip()
    return name, settings


def run_config(name: str, overrides: dict[str, str], corpus: Path, data: Path, work: Path,
               redis_url: str, searches: list[str]) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIENC_")}
    env.update({"BIENC_BROKER_URL": redis_url, "BIENC_DATA_DIR": str(work / name), **overrides})
    redis.Redis.from_url(redis_url).flushdb()
    log = (work / f"{name}-worker.log").open("w")
    worker = subprocess.Popen([*BIENC, "worker", "--loglevel", "WARNING"], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        # one document first, so that the worker has loaded its model before the clock starts
        warmup = work / f"{name}-warmup.jsonl"
        warmup.write_text(json.dumps({"id": "warmup", "text": "A first document."}) + "\n")
        subprocess.run([*BIENC, "ingest", str(warmup), "-c", f"{name}-warmup", "--wait"],
                       env=env, cwd=ROOT, capture_output=True, check=True)
        started = time.perf_counter()
        ingest = subprocess.run([*BIENC, "ingest", str(corpus), "-c", name, "--wait", "--json"],
                                env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        again = subprocess.run([*BIENC, "ingest", str(corpus), "-c", name, "--wait", "--json"],
                               env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        reingest_s = time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
        log.close()
    if ingest.returncode not in (0, 3):
        raise SystemExit(f"{name}: ingest failed:\n{ingest.stderr}")
    job = json.loads(ingest.stdout)
    skipped = json.loads(again.stdout)["skipped"] if again.returncode in (0, 3) else -1
    info = subprocess.run([*BIENC, "info", "-c", name, "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    points = json.loads(info.stdout)["collections"][0]["points"]
    row = {"config": name, "documents": job["indexed"], "failed": job["failed"],
           "points": points, "chunks/doc": points / max(job["indexed"], 1),
           "ingest_s": elapsed, "docs/s": job["indexed"] / elapsed,
           "reingest_s": reingest_s, "reingest_skipped": skipped}
    if not searches:
        return [row]
    rows = []
    for spec in searches:  # "" = the collection's default mode
        mode, _, fusion = spec.partition(":")
        options = ([f"--mode={mode}"] if mode else []) + ([f"--fusion={fusion}"] if fusion else [])
        evaluation = subprocess.run(
            [*BIENC, "eval", "-c", name, "--queries", str(data / "queries_test.jsonl"),
             "--qrels", str(data / "qrels_test.tsv"), "--json", *options],
            env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        if evaluation.returncode != 0:
            print(f"{name} {spec or 'default'}: {evaluation.stderr.strip()}", file=sys.stderr)
            continue
        report = json.loads(evaluation.stdout)
        label = report.get("mode", "") + (f"/{report['fusion']}" if "fusion" in report else "")
        rows.append({**row, **report, "search": label})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, help="only the first N documents")
    parser.add_argument("--config", action="append", default=[],
                        help="NAME:VAR=value,... (BIENC_ prefix implied); repeatable")
    parser.add_argument("--search", action="append", default=[],
                        help="MODE or hybrid:FUSION to evaluate each collection in; repeatable "
                             "(default: the collection's default mode)")
    parser.add_argument("--keep", action="store_true", help="keep the stores in bench/out")
    args = parser.parse_args()
    redis_url = os.environ.get("BIENC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    configs = [parse_config(c) for c in args.config] or [("default", {})]
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out))
    corpus = args.data / "corpus.jsonl"
    if args.limit:
        corpus = work / "corpus.jsonl"
        with (args.data / "corpus.jsonl").open() as src, corpus.open("w") as dst:
            for _, line in zip(range(args.limit), src, strict=False):
                dst.write(line)
    rows = []
    try:
        for name, overrides in configs:
            print(f"running {name} {overrides or '(defaults)'} ...", file=sys.stderr, flush=True)
            rows.extend(run_config(name, overrides, corpus, args.data, work, redis_url,
                                   args.search or [""]))
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    columns = ["config", "search", "documents", "chunks/doc", "ingest_s", "docs/s", "reingest_s",
               "reingest_skipped", "ndcg@10", "mrr@10",
               "recall@10", "recall@100", "recall@1000", "search_ms_p50", "search_ms_p99"]
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            print(f"{row['config']} {row['search']} vs {base['config']} {base['search']}: docs/s "
                  f"x{row['docs/s'] / base['docs/s']:.2f}, nDCG@10 {row['ndcg@10'] - base['ndcg@10']:+.4f}")


if __name__ == "__main__":
    main()
