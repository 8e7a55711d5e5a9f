"""The `bienc` command line."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from importlib import resources as package_files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bienc.config.errors import BiencError
from bienc.config.settings import MAX_TOP_K, Settings, get_settings
from bienc.config.topology import Role, decide
from bienc.eval_command import add_arguments as add_eval_arguments
from bienc.eval_command import cmd_eval
from bienc.ingest.files import read_files, walk_folder
from bienc.ingest.formats import READABLE
from bienc.ingest.readers import read_path
from bienc.progress import progress_printer
from bienc.queue.jobs import JobStatus
from bienc.queue.versions import MAX_VERSION
from bienc.queue.webhooks import check_callback_url
from bienc.resources import Resources, close_resources, settle_heap
from bienc.search.fusion import FUSIONS
from bienc.search.modes import MODES
from bienc.store.filters import parse_filter

if TYPE_CHECKING:
    from bienc.runtime import Runtime
    from bienc.store.interface import Hit

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL = 0, 1, 3
EXPORT_PAGE = 500  # documents read from the store at a time by `bienc export`
DEMO_COLLECTION = "demo"
DEMO_QUERIES = (
    "Where is the Eiffel Tower located?",
    "Which language is used to write software?",
    "How do plants make energy from light?",
)


def _runtime(settings: Settings, role: Role = Role.READ) -> Runtime:
    from bienc.runtime import build_runtime  # heavy imports (celery) only for real commands

    return build_runtime(settings, role)


def _finish_queue(runtime: Runtime) -> None:
    """Embedded: stay until the queue is empty, finishing what a stopped process left."""
    runtime.finish_queue(on_wait=lambda left: print(
        f"finishing {left} batches left in the queue by an earlier process", file=sys.stderr))


def _print_hits(query: str, hits: Sequence[Hit], first: int = 1) -> None:
    print(f"\nquery: {query}")
    if not hits:
        print("  (no results)")
    for rank, hit in enumerate(hits, start=first):
        text = (hit.snippet or hit.text or "").replace("\n", " ")
        where = ([f"page {hit.page}"] if hit.page is not None else []) + \
            ([" > ".join(hit.section)] if hit.section else [])
        place = f" ({', '.join(where)})" if where else ""
        print(f"  {rank:>3}. {hit.score:.4f}  {hit.doc_id}{place}  {text[:100]}")


def _version(value: str) -> int:
    """A --version argument: an integer from 0 to MAX_VERSION."""
    version = int(value)
    if not 0 <= version <= MAX_VERSION:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_VERSION}")
    return version


def _superseded(status: JobStatus) -> str:
    """The count of documents a newer version replaced first, where there are some."""
    return f"{status.superseded} superseded by a newer version, " if status.superseded else ""


def _report_job(status: JobStatus, as_json: bool, extra: dict[str, Any] | None = None) -> int:
    if as_json:
        print(json.dumps({**status.to_dict(), **(extra or {})}, indent=2))
    elif status.kind == "delete":
        print(f"job {status.job_id}: {status.state}; {status.indexed} deleted, {status.skipped} "
              f"gone already, {_superseded(status)}{status.queued} left "
              f"(collection {status.collection!r})")
    else:
        print(f"job {status.job_id}: {status.state}; {status.indexed} indexed, {status.skipped} "
              f"unchanged, {_superseded(status)}{status.failed} failed, {status.queued} queued "
              f"(collection {status.collection!r})")
        for where, reason in list(status.failures.items())[:20]:
            print(f"  failed {where}: {reason}")
        if len(status.failures) > 20:
            print(f"  ... and {len(status.failures) - 20} more (bienc jobs show {status.job_id} --json)")
        if status.last_error:
            print(f"  last error: {status.last_error}")
        hook = status.webhook
        if hook is not None:
            print(f"  webhook {hook.url}: {hook.state} ({hook.attempts} attempts)"
                  + (f"; last error: {hook.last_error}" if hook.last_error else ""))
    if not status.finished:
        return EXIT_OK
    if status.state in ("failed", "cancelled") and status.kind in ("reindex", "delete"):
        return EXIT_ERROR  # nothing changed
    return EXIT_OK if status.failed == 0 else EXIT_PARTIAL


def _callback_url(args: argparse.Namespace, settings: Settings) -> str | None:
    """--callback-url, checked before anything is read or queued."""
    if args.callback_url is None:
        return None
    return check_callback_url(settings, args.callback_url, "--callback-url")


def _after_job(runtime: Runtime, status: JobStatus) -> JobStatus:
    """Where this process is the worker, stay until the job's webhook is delivered or has
    failed (its attempts are bounded), then until the queue is empty."""
    if status.webhook is not None and runtime.topology.runs_worker:
        print(f"delivering the webhook to {status.webhook.url}", file=sys.stderr)
        status = runtime.wait_for_webhook(status.job_id) or status
    _finish_queue(runtime)
    return status


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    collection = args.collection or settings.collection
    callback_url = _callback_url(args, settings)
    path = Path(args.path)
    if (args.include or args.exclude or args.sync) and not path.is_dir():
        raise BiencError("--include, --exclude and --sync apply to a folder; "
                         f"{args.path} is not one")
    runtime = _runtime(settings, Role.SUBMIT)
    options = runtime.file_options(collection, args.include or (), args.exclude or ())
    if path.is_dir():
        walk = walk_folder(path, options.include, options.exclude)
        if walk.excluded:
            print(f"{walk.excluded} files left out (by --include/--exclude, or hidden)",
                  file=sys.stderr)
        if not walk.files and not args.sync:
            raise BiencError(f"no files to ingest in {args.path} ({walk.excluded} left out); bienc "
                             f"reads {READABLE}")
        items = read_files(walk.files, options, settings.max_text_chars)
    else:
        items = read_path(path, settings.max_text_chars, options)
    with runtime.serving():
        submission = runtime.ingest(items, collection, callback_url=callback_url)
        for bad in submission.rejected[:20]:
            where = path / bad.where if path.is_dir() else f"{args.path} {bad.where}"
            print(f"not ingested, {where}: {bad.reason}", file=sys.stderr)
        if submission.duplicates:
            print(f"{submission.duplicates} repeated ids: the last occurrence of each was kept",
                  file=sys.stderr)
        if submission.unchanged:
            print(f"{submission.unchanged} files unchanged since they were indexed: not read again",
                  file=sys.stderr)
        removed = runtime.sync_folder(collection, path) if args.sync else []
        if args.sync:
            print(f"--sync: removed {len(removed)} documents whose files are gone"
                  + (f" ({', '.join(removed[:5])}{', ...' if len(removed) > 5 else ''})"
                     if removed else ""), file=sys.stderr)
        if not (args.wait or runtime.topology.runs_worker):
            print(f"job {submission.job_id}: {submission.accepted} documents queued "
                  f"({len(submission.rejected)} rejected); follow with `bienc jobs show {submission.job_id}`")
            return EXIT_OK if not submission.rejected else EXIT_PARTIAL
        bar, update = progress_printer(submission.accepted + len(submission.rejected))
        try:
            status = runtime.wait(submission.job_id, on_progress=update)
        finally:
            bar.close()
        status = _after_job(runtime, status)
    return _report_job(status, args.json, {"removed": removed} if args.sync else None)


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    options = {"model": args.model, "chunk_tokens": args.chunk_tokens,
               "chunk_overlap": args.chunk_overlap, "lexical": args.lexical,
               "keep_old": args.keep_old or None}
    options = {k: v for k, v in options.items() if v is not None}
    going_on = "--resume" if args.resume else "--abort" if args.abort else None
    if going_on and (options or args.callback_url):
        raise BiencError(f"{going_on} takes the reindex that is there as it was asked: give no "
                         f"other option with it (only --wait, --json)")
    callback_url = _callback_url(args, settings)
    runtime = _runtime(settings, Role.SUBMIT)
    # before this process's worker starts: on the embedded queue it takes up at once the step
    # a dead process left, which may end the reindex before it could be resumed here
    if args.resume:
        job_id, state = runtime.resume_reindex(args.collection)
        doing = f"resuming the reindex of {args.collection!r} from {state}"
    elif args.abort:
        job_id, state = runtime.abort_reindex(args.collection)
        doing = f"aborting the reindex of {args.collection!r} ({state})"
    with runtime.serving():
        if not going_on:
            job_id = runtime.reindex(args.collection, options, callback_url=callback_url)
            doing = f"reindexing {args.collection!r}; search and ingest keep working on it meanwhile"
        if not (args.wait or runtime.topology.runs_worker):
            print(f"job {job_id}: {doing}; follow with `bienc jobs show {job_id}`")
            return EXIT_OK
        print(f"job {job_id}: {doing}", file=sys.stderr)
        bar, update = progress_printer(0)
        try:
            status = runtime.wait(job_id, on_progress=update)
        finally:
            bar.close()
        status = _after_job(runtime, status)
    return _report_job(status, args.json)


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    callback_url = _callback_url(args, settings)
    raw = json.loads(args.filter)
    query_filter = parse_filter(raw)
    if query_filter is None:
        raise BiencError("--filter is empty: give the metadata of the documents to delete, e.g. "
                         '\'{"source": "old-site"}\' (to remove every document, drop the collection: '
                         "DELETE /v1/collections/NAME)")
    if args.dry_run:
        matched = _runtime(settings).count_matching(args.collection, query_filter)
        if args.json:
            print(json.dumps({"collection": args.collection, "matched": matched, "dry_run": True}))
        else:
            print(f"{matched} documents of {args.collection!r} match; dry run: nothing deleted")
        return EXIT_OK
    runtime = _runtime(settings, Role.SUBMIT)
    with runtime.serving():
        job_id = runtime.delete_matching(args.collection, raw, callback_url=callback_url,
                                         version=args.version)
        if not (args.wait or runtime.topology.runs_worker):
            print(f"job {job_id}: delete from {args.collection!r} queued; follow with "
                  f"`bienc jobs show {job_id}`")
            return EXIT_OK
        status = _after_job(runtime, runtime.wait(job_id))
    return _report_job(status, args.json)


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    runtime = _runtime(settings, Role.SUBMIT)
    with runtime.serving():
        runtime.cancel(args.job_id)
        print(f"job {args.job_id}: cancelling; its new collection is dropped, the live one is "
              "untouched", file=sys.stderr)
        if not runtime.topology.runs_worker:
            return EXIT_OK
        status = runtime.wait(args.job_id)
        status = _after_job(runtime, status)
    return _report_job(status, False) if status.state != "cancelled" else EXIT_OK


def _job_status(runtime: Runtime, job_id: str) -> JobStatus:
    status: JobStatus | None = runtime.resources.jobs.get(job_id)
    if status is None:
        raise BiencError(f"job {job_id} is unknown (expired, or kept by another broker)")
    return status


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    return _report_job(_job_status(_runtime(settings), args.job_id), args.json)


def cmd_jobs_retry(args: argparse.Namespace, settings: Settings) -> int:
    from bienc.ingest.producer import replay_dead_letters

    runtime = _runtime(settings, Role.SUBMIT)
    _job_status(runtime, args.job_id)
    with runtime.serving():
        batches = replay_dead_letters(runtime.resources.jobs, args.job_id, runtime.enqueue)
        print(f"job {args.job_id}: {batches} dead-lettered batches queued again", file=sys.stderr)
        if not (batches and (args.wait or runtime.topology.runs_worker)):
            return EXIT_OK
        status = runtime.wait(args.job_id)
        status = _after_job(runtime, status)
    return _report_job(status, args.json)


def cmd_jobs_dead(args: argparse.Namespace, settings: Settings) -> int:
    jobs = _runtime(settings).resources.jobs
    if args.delete:
        deleted = jobs.delete_dead_letters(args.delete)
        if not deleted:
            raise BiencError(f"job {args.delete} has no dead letters (`bienc jobs dead` lists them)")
        print(f"job {args.delete}: {deleted} dead-lettered batches deleted; their documents stay "
              "failed, and the job's record expires like any other's", file=sys.stderr)
        return EXIT_OK
    listing = {job_id: {n: {"reason": letter["reason"], "documents": len(letter["documents"])}
                        for n, letter in jobs.dead_letters(job_id).items()}
               for job_id in jobs.jobs_with_dead_letters()}
    if args.json:
        print(json.dumps(listing, indent=2))
    elif not listing:
        print("no dead letters")
    for job_id, batches in ({} if args.json else listing).items():
        docs = sum(b["documents"] for b in batches.values())
        print(f"job {job_id}: {len(batches)} batches, {docs} documents; "
              f"last reason: {next(iter(batches.values()))['reason']}")
    return EXIT_OK


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from bienc.search.searcher import SearchRequest

    collection = args.collection or settings.collection
    filters = parse_filter(json.loads(args.filter)) if args.filter else None
    request = SearchRequest(queries=[args.query], top_k=args.k, offset=args.offset, filter=filters,
                            score_threshold=args.score_threshold, mode=args.mode,
                            fusion=args.fusion)
    results = _runtime(settings).search(collection, request)
    hits = results.hits[0]
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
    else:
        _print_hits(f"{args.query}  ({results.mode})", hits, first=args.offset + 1)
    return EXIT_OK


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    runtime = _runtime(settings)
    infos = [runtime.describe(args.collection)] if args.collection else runtime.collections()
    location = runtime.topology.store_location
    if args.json:
        print(json.dumps({"store": location, "collections": infos}, indent=2))
        return EXIT_OK
    print(f"store: {location}")
    if not infos:
        print("no collections yet: `bienc ingest FILE --collection NAME`")
    for info in infos:
        encoded = f" ({info['encoding']})" if info["encoding"] else ""
        chunking = info["chunking"]
        cut = ("one window" if not chunking["enabled"] else
               f"chunks {chunking['tokens']}/{chunking['overlap']}") if chunking else "chunks as configured"
        lexical = info["lexical"]
        words = (f"lexical {lexical['kind']} k={lexical['k']:g} b={lexical['b']:g} "
                 f"avg_len={lexical['avg_len']:g}") if lexical else "no lexical vectors (dense only)"
        physical = f" -> {info['physical']}" if info["physical"] != info["name"] else ""
        print(f"  {info['name']}{physical}: model {info['model']}{encoded}, {info['dimension']}-d, "
              f"{cut}, {words}, {info['documents']} documents, {info['points']} points")
        if "reindex" in info:
            running = info["reindex"]
            if running["state"] == "failed":
                print(f"    reindex into {running['into']} (job {running['job_id']}) stopped, failed "
                      f"in {running['failed_in']}: {running['error']}; `bienc reindex "
                      f"{info['name']} --resume` goes on, `--abort` drops {running['into']}")
            else:
                print(f"    reindexing into {running['into']} (job {running['job_id']}, "
                      f"{running['state']})")
        index = info.get("index") or {}
        if index.get("build_failures"):
            print(f"    index build failed {index['build_failures']} times in a row, next try in "
                  f"{index['next_build_retry_s']:.0f} s: {index['last_build_error']}")
    return EXIT_OK


def cmd_snapshot_create(args: argparse.Namespace, settings: Settings) -> int:
    runtime = _runtime(settings)
    if args.out == "-":
        summary = runtime.snapshot(args.collection, sys.stdout.buffer, args.portable)
        shown = "standard output"
    else:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = Path(args.out or f"{args.collection}-{stamp}.bienc.tar")
        partial = out.with_name(f".{out.name}.partial")
        try:  # written aside and renamed: a failed snapshot leaves no file that looks whole
            with partial.open("wb") as stream:
                summary = runtime.snapshot(args.collection, stream, args.portable, work=out.parent)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
        shown = f"{out} ({out.stat().st_size / 1e6:.1f} MB)"
    print(f"snapshot of {args.collection!r}: {summary['documents']} documents, {summary['points']} "
          f"points ({summary['kind']}) -> {shown}", file=sys.stderr)
    return EXIT_OK


def cmd_snapshot_restore(args: argparse.Namespace, settings: Settings) -> int:
    source = Path(args.file)
    if not source.is_file():
        raise BiencError(f"{args.file}: no such file")
    restored = _runtime(settings).restore(source, args.as_name)
    print(f"restored {restored['collection']!r} from {args.file}: {restored['documents']} "
          f"documents, {restored['points']} points (now {restored['physical']})", file=sys.stderr)
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    runtime = _runtime(settings)
    out = sys.stdout if args.out in (None, "-") else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    cursor: str | None = None
    exported = 0
    try:
        while True:
            documents, cursor = runtime.export_page(args.collection, cursor, EXPORT_PAGE)
            out.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in documents)
            exported += len(documents)
            if cursor is None:
                break
        out.flush()
    except BrokenPipeError:  # the reader stopped early (`bienc export NAME | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {exported} documents of {args.collection!r}", file=sys.stderr)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    decide(settings, Role.WORKER)  # refuses settings where this worker would serve nobody
    from bienc.queue.celery_app import WORKER_QUEUES, configure_app
    from bienc.resources import set_resources

    resources = Resources(settings)
    set_resources(resources)
    resources.encoder  # noqa: B018 - load the model before taking work
    resources.store  # noqa: B018 - and own the store (the embedded one allows one process)
    settle_heap()
    app = configure_app(settings)
    concurrency = args.concurrency or settings.worker_concurrency
    pool = "solo" if concurrency == 1 else "threads"
    app.worker_main(["worker", "-Q", ",".join(WORKER_QUEUES), "--pool", pool, "--concurrency",
                     str(concurrency), "--loglevel", args.loglevel, "--without-gossip",
                     "--without-mingle"])
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bienc.access import check_exposure
    from bienc.api import create_app, prepare

    warning = check_exposure(args.host, settings)  # no open write API on a network
    if warning:
        logging.getLogger("bienc.serve").warning(warning)
    runtime = _runtime(settings, Role.SERVE)
    prepare(runtime)  # model, store and queue: a failure is one clear error before listening
    print(f"bienc: serving on http://{args.host}:{args.port} ({runtime.topology.describe()})",
          file=sys.stderr)
    # uvicorn shuts down gracefully, then raises the signal again: exit normally on SIGTERM
    # (as on Ctrl-C) so that exit handlers stop the embedded Redis this process started.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(create_app(runtime), host=args.host, port=args.port, workers=1,
                log_level="info" if args.verbose else "warning")
    return EXIT_OK


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bienc.search.searcher import SearchRequest

    sample = package_files.files("bienc").joinpath("sample_corpus.jsonl")
    runtime = _runtime(settings, Role.DEMO)
    print(f"bienc demo: {runtime.topology.describe()}")
    with package_files.as_file(sample) as path, runtime.serving():
        submission = runtime.ingest(read_path(path, settings.max_text_chars), DEMO_COLLECTION)
        status = runtime.wait(submission.job_id, timeout_s=600)
        _finish_queue(runtime)
    print(f"ingested {status.total} sample documents through the queue: {status.indexed} "
          f"indexed, {status.skipped} unchanged since last run, {status.failed} failed "
          f"(collection {DEMO_COLLECTION!r}, job {status.job_id})")
    results = runtime.search(DEMO_COLLECTION, SearchRequest(list(DEMO_QUERIES), top_k=3))
    print(f"search mode: {results.mode}")
    for query, hits in zip(DEMO_QUERIES, results.hits, strict=True):
        _print_hits(query, hits)
    return EXIT_OK if status.failed == 0 else EXIT_PARTIAL


def _at_least(least: int) -> Any:
    def parse(value: str) -> int:
        number = int(value)
        if number < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more")
        return number

    return parse


def _top_k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TOP_K}")
    return k


def add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES,
                        help="dense, lexical (BM25) or hybrid (both, fused); default: hybrid where "
                             "the collection has lexical vectors, else dense")
    parser.add_argument("--fusion", choices=FUSIONS, default="dbsf",
                        help="how hybrid mode fuses its legs: dbsf (default) or rrf")


def add_callback_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--callback-url", metavar="URL",
                        help="POST the job's final status to URL once it ends, signed with "
                             "BIENC_WEBHOOK_SECRET; its host must be in BIENC_WEBHOOK_ALLOWED_HOSTS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bienc", description="Bi-encoder retrieval service.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="ingest a sample corpus through the queue and search it")
    demo.set_defaults(func=cmd_demo)

    ingest = sub.add_parser(
        "ingest", help="ingest JSONL or CSV records, or documents (PDF, DOCX, HTML, Markdown, text): "
                       "one file, or a folder walked recursively")
    ingest.add_argument("path", help="a .jsonl/.csv file of records, a document file, or a folder: "
                                     "each file one document, its id the path relative to it")
    ingest.add_argument("--include", action="append", metavar="GLOB",
                        help="only files matching GLOB, by relative path or name (repeatable), "
                             "e.g. --include '*.pdf'")
    ingest.add_argument("--exclude", action="append", metavar="GLOB",
                        help="leave out files matching GLOB (repeatable), e.g. --exclude 'drafts/*'")
    ingest.add_argument("--sync", action="store_true",
                        help="also delete the collection's file documents whose file is gone "
                             "from the folder")
    ingest.add_argument("--collection", "-c")
    ingest.add_argument("--wait", action="store_true",
                        help="return once every document is indexed (always so when embedded)")
    ingest.add_argument("--json", action="store_true", help="print the final job status as JSON")
    add_callback_argument(ingest)
    ingest.set_defaults(func=cmd_ingest)

    jobs = sub.add_parser("jobs", help="ingest jobs: status, dead letters, replay")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    show = jobs_sub.add_parser("show", help="state, counts and failures of a job")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_jobs_show)
    retry = jobs_sub.add_parser("retry", help="queue a job's dead-lettered batches again")
    retry.add_argument("job_id")
    retry.add_argument("--wait", action="store_true")
    retry.add_argument("--json", action="store_true")
    retry.set_defaults(func=cmd_jobs_retry)
    cancel = jobs_sub.add_parser("cancel", help="cancel a running reindex")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=cmd_jobs_cancel)
    dead = jobs_sub.add_parser("dead", help="list jobs with dead-lettered batches, or delete a job's")
    dead.add_argument("--delete", metavar="JOB_ID",
                      help="delete JOB_ID's dead letters instead of replaying them")
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(func=cmd_jobs_dead)

    reindex = sub.add_parser(
        "reindex", help="rebuild a collection from its stored text with another model or chunking, "
                        "or with lexical vectors added, while it serves")
    reindex.add_argument("collection")
    reindex.add_argument("--model", help="sentence-transformers model name or local folder")
    reindex.add_argument("--chunk-tokens", type=_at_least(16), help="tokens per chunk")
    reindex.add_argument("--chunk-overlap", type=_at_least(0), help="tokens shared by neighbours")
    lexical = reindex.add_mutually_exclusive_group()
    lexical.add_argument("--lexical", action="store_true", default=None,
                         help="add BM25 vectors (built from the stored text; a collection "
                              "encoded the same way is not encoded again)")
    lexical.add_argument("--no-lexical", dest="lexical", action="store_false",
                         help="drop the BM25 vectors")
    reindex.add_argument("--keep-old", action="store_true",
                         help="keep the old physical collection (NAME@N) after the switch")
    going_on = reindex.add_mutually_exclusive_group()
    going_on.add_argument("--resume", action="store_true",
                          help="go on with the reindex of NAME from the state it stopped in "
                               "(after a failed finish, or a worker that died)")
    going_on.add_argument("--abort", action="store_true",
                          help="abort the reindex of NAME from whatever state it is in: its new "
                               "collection is dropped, NAME keeps serving what it serves")
    reindex.add_argument("--wait", action="store_true",
                         help="return once the name has switched (always so when embedded)")
    reindex.add_argument("--json", action="store_true", help="print the final job status as JSON")
    add_callback_argument(reindex)
    reindex.set_defaults(func=cmd_reindex)

    delete = sub.add_parser(
        "delete", help="delete the documents of a collection that a metadata filter matches, "
                       "as a job (or count them: --dry-run)")
    delete.add_argument("collection")
    delete.add_argument("--filter", required=True,
                        help='metadata filter as JSON, as for search: e.g. {"source": "old-site"} '
                             'or {"year": {"lt": 2015}}')
    delete.add_argument("--dry-run", action="store_true",
                        help="print how many documents match, delete nothing")
    delete.add_argument("--version", type=_version,
                        help="the delete's own version, as the documents' `version` field: a "
                             "document stored at a newer one is kept (default: the order of "
                             "acceptance)")
    delete.add_argument("--wait", action="store_true",
                        help="return once every matching document is deleted (always so when "
                             "embedded)")
    delete.add_argument("--json", action="store_true", help="print the result as JSON")
    add_callback_argument(delete)
    delete.set_defaults(func=cmd_delete)

    search = sub.add_parser("search", help="search a collection")
    search.add_argument("query")
    search.add_argument("--collection", "-c")
    search.add_argument("-k", type=_top_k, default=10, help="documents to return (1-1000)")
    search.add_argument("--offset", type=_at_least(0), default=0,
                        help="documents to skip first: the page of k after them (offset + k "
                             f"at most {MAX_TOP_K})")
    search.add_argument("--filter", help='metadata filter as JSON, e.g. {"lang": "en", "year": '
                                         '{"gte": 2020}} (docs/search.md)')
    search.add_argument("--score-threshold", type=float,
                        help="the least score returned, in the mode's own terms (docs/search.md)")
    add_mode_arguments(search)
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    snapshot = sub.add_parser("snapshot", help="snapshots of collections: create, restore")
    snapshot_sub = snapshot.add_subparsers(dest="snapshot_command", required=True)
    create = snapshot_sub.add_parser(
        "create", help="write a consistent snapshot of a collection, taken while it serves")
    create.add_argument("collection")
    create.add_argument("--out", metavar="FILE",
                        help="where to write it (default NAME-TIME.bienc.tar here; - for "
                             "standard output)")
    create.add_argument("--portable", action="store_true",
                        help="on a Qdrant server, the points instead of Qdrant's own snapshot, "
                             "so that any engine can restore it")
    create.set_defaults(func=cmd_snapshot_create)
    restore = snapshot_sub.add_parser(
        "restore", help="restore a snapshot into a new collection, then switch the name to it")
    restore.add_argument("file")
    restore.add_argument("--as", dest="as_name", metavar="NAME",
                         help="the collection to restore into (default: the snapshot's); one of "
                              "that name is replaced")
    restore.set_defaults(func=cmd_snapshot_restore)

    export = sub.add_parser("export", help="every document of a collection as JSONL records "
                                           "(id, title, text, metadata), ready to ingest")
    export.add_argument("collection")
    export.add_argument("--out", metavar="FILE", help="write to FILE (default standard output)")
    export.set_defaults(func=cmd_export)

    worker = sub.add_parser("worker", help="run a Celery worker for BIENC_BROKER_URL")
    worker.add_argument("--concurrency", type=int)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    serve = sub.add_parser("serve", help="run the HTTP API (one process; embedded worker by default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    info = sub.add_parser("info", help="model, dimension and counts per collection")
    info.add_argument("--collection", "-c")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    evaluate = sub.add_parser(
        "eval", help="trec_eval measures, the recall@K curve and the reranking depth on a BEIR split")
    add_eval_arguments(evaluate, _top_k)
    add_mode_arguments(evaluate)
    evaluate.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                message = f"BIENC_{str(error['loc'][0]).upper()}: {message}"
            print(f"bienc: invalid setting {message}", file=sys.stderr)  # never the value itself
        return EXIT_ERROR
    try:
        code: int = args.func(args, settings)
        return code
    except BiencError as exc:
        print(f"bienc: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except json.JSONDecodeError as exc:
        print(f"bienc: --filter is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("bienc: interrupted; queued documents stay in the queue", file=sys.stderr)
        return 130
    finally:
        close_resources()


def run() -> None:
    """The `bienc` command: main(), then exit without tearing the interpreter down.

    Freeing every module and object at exit takes ~0.1 s after numpy, pydantic and Celery
    are loaded: a tenth of a second added to every `bienc ingest --wait`. Exit handlers still
    run (they stop an embedded Redis this process started, flush logs). With a non-daemon
    thread still running, the normal exit waits for it instead.
    """
    code = main()
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
