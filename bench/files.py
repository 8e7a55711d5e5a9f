"""Parse speed of document files, per format, beside encode time, and parsing's share of an
ingest's end-to-end time.

    python bench/files.py                      # builds a folder of real files (below) in /tmp
    python bench/files.py --folder manuals/    # or reads yours
    python bench/files.py --no-ingest          # parse figures only (no model, no store)

The folder it builds holds files this machine already has, as a user's would: the PDFs
Debian ships under /usr/share/doc (manuals) and those of installed Python packages (an
image-only logo: a real "no text" failure), HTML pages from /usr/share/doc, Markdown files
from the installed Python packages, and a few DOCX written by python-docx from the sample
corpus. It prints, per format: files, pages (PDF), MB, parse ms per page and per MB, and
failures by reason. Then, unless --no-ingest, it ingests the folder, and its PDFs alone (a
PDF-heavy folder), on the embedded default in a temporary data folder, and prints parse time,
end-to-end time (parse, queue, chunk, encode, store, until the job is done), encode-and-store
time (the difference), and parsing's share of the end-to-end time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from bienc.config.settings import Settings
from bienc.config.topology import Role
from bienc.ingest.documents import Document
from bienc.ingest.files import FileEntry, FileOptions, read_files, walk_folder
from bienc.ingest.formats import HEAD_BYTES, UnsupportedFile, detect_format
from bienc.ingest.readers import BadRecord
from bienc.ingest.sandbox import ParseFailure, ParsePool
from bienc.runtime import build_runtime

ROOT = Path(__file__).resolve().parent.parent
SHARE_LIMIT = 0.20  # the bound on parsing's share of an ingest


def build_folder(target: Path, html_pages: int = 43, markdown_files: int = 10, docx_files: int = 3) -> Path:
    """A folder of real files from this machine (see the module's docstring)."""
    import site

    import docx

    target.mkdir(parents=True, exist_ok=True)
    docs = Path("/usr/share/doc")
    for pdf in sorted(p for p in docs.rglob("*.pdf") if p.is_file()):
        shutil.copy(pdf, target / f"pdf-{pdf.parent.name}-{pdf.name}")
    pages = sorted(p for p in docs.rglob("*.html") if p.is_file() and p.stat().st_size > 3000)[:html_pages]
    for page in pages:
        (target / "html").mkdir(exist_ok=True)
        shutil.copy(page, target / "html" / f"{page.parent.name}-{page.name}")
    packages = Path(site.getsitepackages()[0])
    for pdf in sorted(p for p in packages.rglob("*.pdf") if p.is_file()):  # matplotlib's: a logo
        shutil.copy(pdf, target / f"pdf-{pdf.parent.name}-{pdf.name}")
    notes = sorted(p for p in packages.rglob("*.md")
                   if p.is_file() and p.stat().st_size > 3000)[:markdown_files]
    for note in notes:
        (target / "md").mkdir(exist_ok=True)
        shutil.copy(note, target / "md" / f"{note.parent.name}-{note.name}")
    sample = [json.loads(line) for line in (ROOT / "bienc" / "sample_corpus.jsonl").read_text().splitlines()
              if line.strip()]
    for n in range(docx_files):
        document = docx.Document()
        document.add_heading(f"Sample report {n}", level=0)
        for record in sample:
            document.add_heading(record.get("title") or record["id"], level=1)
            document.add_paragraph(record["text"] * 3)
        document.save(str(target / f"report-{n}.docx"))
    return target


def _format_of(entry: FileEntry) -> str:
    with entry.path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    try:
        return detect_format(entry.path.name, head)
    except UnsupportedFile:
        return "unsupported"


def parse_table(files: list[FileEntry], processes: int) -> float:
    """Parse every file once (after a warm-up of the parse processes); print the table; return
    the seconds parsing took."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    failures: dict[str, Counter[str]] = defaultdict(Counter)
    with ParsePool(processes, timeout_s=60) as pool:
        warm = next((f for f in files if _format_of(f) == "text"), None)
        if warm is not None:
            pool.parse(warm.path, "text")
        started = time.perf_counter()
        for entry in files:
            fmt = _format_of(entry)
            row = rows[fmt]
            row["files"] += 1
            row["bytes"] += entry.size
            if fmt == "unsupported":
                failures[fmt]["unsupported type"] += 1
                continue
            began = time.perf_counter()
            result = pool.parse(entry.path, fmt)  # type: ignore[arg-type]
            row["seconds"] += time.perf_counter() - began
            if isinstance(result, ParseFailure):
                failures[fmt][result.reason.split(" (")[0].split(";")[0]] += 1
            else:
                row["pages"] += result.pages or 0
        total = time.perf_counter() - started
    print("\n| format | files | pages | MB | parse ms/file | parse ms/page | parse ms/MB "
          "| failures by reason |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for fmt, row in sorted(rows.items()):
        mb = row["bytes"] / 1e6
        per_page = f"{1000 * row['seconds'] / row['pages']:.1f}" if row["pages"] else "-"
        per_mb = f"{1000 * row['seconds'] / mb:.0f}" if mb and row["seconds"] else "-"
        per_file = f"{1000 * row['seconds'] / row['files']:.1f}" if row["seconds"] else "-"
        failed = ", ".join(f"{reason}: {n}" for reason, n in failures[fmt].items()) or "none"
        print(f"| {fmt} | {row['files']:.0f} | {row['pages']:.0f} | {mb:.2f} | {per_file} | "
              f"{per_page} | {per_mb} | {failed} |")
    print(f"parsed {len(files)} files in {total:.2f} s ({processes} parse process(es))")
    return total


def ingest_share(files: list[FileEntry], label: str, data_dir: Path) -> None:
    """Ingest `files` end to end on the embedded default and print parsing's share."""
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    runtime = build_runtime(settings, Role.SUBMIT)
    collection = f"bench-{label}"
    with runtime.serving():
        runtime.resources.encoder.warm_up()  # the model's load is not the ingest's
        started = time.perf_counter()
        items = list(read_files(files, FileOptions(parse_processes=settings.parse_processes),
                                settings.max_text_chars))
        parsed = time.perf_counter() - started
        submission = runtime.ingest(items, collection)
        status = runtime.wait(submission.job_id)
        runtime.finish_queue()
        total = time.perf_counter() - started
        info = runtime.describe(collection)
    runtime.resources.close()  # lets the store's background work end before the folder goes
    documents = [i for i in items if isinstance(i, Document)]
    pages = sum(int(d.metadata.get("pages") or 0) for d in documents)
    chars = sum(len(d.text) for d in documents)
    print(f"\n{label}: {len(files)} files, {len(documents)} read ({pages} PDF pages, {chars / 1e6:.2f} M "
          f"characters), {sum(isinstance(i, BadRecord) for i in items)} failed; "
          f"{info['points']} chunks; job {status.state}")
    print(f"  parse {parsed:.2f} s | encode + store {total - parsed:.2f} s | end to end {total:.2f} s "
          f"| parse share {parsed / total:.1%} (bound {SHARE_LIMIT:.0%})")
    if pages:
        print(f"  per PDF page: parse {1000 * parsed / pages:.1f} ms, "
              f"end to end {1000 * total / pages:.0f} ms")


def scifact_identity(corpus: Path) -> None:
    """Whether every SciFact document encodes to the same chunks as before sections existed:
    the chunker called directly on title and text, as bienc did, against chunk_documents."""
    from bienc.encoding.encoder import load_encoder
    from bienc.ingest.chunking import chunk_document
    from bienc.ingest.readers import read_path
    from bienc.store.record import Chunking
    from bienc.workers.indexing import chunk_documents

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    encoder = load_encoder(settings)
    params = Chunking(True, settings.chunk_tokens, settings.chunk_overlap)
    documents = [d for d in read_path(corpus, 10**7) if isinstance(d, Document)]
    started = time.perf_counter()
    now = chunk_documents(documents, encoder, params)
    titles = encoder.token_offsets([d.title or "" for d in documents])
    bodies = encoder.token_offsets([d.text for d in documents])
    before = [chunk_document(d.title, t, d.text, b, min(params.tokens, encoder.max_seq_length),
                             params.overlap) for d, t, b in zip(documents, titles, bodies, strict=True)]
    same = sum([c.text for c in x] == [c.text for c in y] for x, y in zip(now, before, strict=True))
    chunks = sum(len(x) for x in now)
    print(f"SciFact: {same} of {len(documents)} documents ({chunks} chunks) encode to byte-identical "
          f"text with and without the structure code path ({time.perf_counter() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a folder of files (default: build one in /tmp)")
    parser.add_argument("--processes", type=int, default=1, help="parse processes")
    parser.add_argument("--no-ingest", action="store_true", help="parse figures only")
    parser.add_argument("--scifact-identity", type=Path, metavar="CORPUS_JSONL",
                        help="only check that these documents chunk as before sections existed")
    parser.add_argument("--ingest-only", metavar="LABEL", help=argparse.SUPPRESS)
    parser.add_argument("--include", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scifact_identity:
        scifact_identity(args.scifact_identity)
        return
    if args.ingest_only:  # one runtime per process: Celery's app and the worker are global
        data = Path(tempfile.mkdtemp(prefix="bienc-bench-data-"))
        try:
            ingest_share(walk_folder(args.folder, args.include).files, args.ingest_only, data)
        finally:
            shutil.rmtree(data, ignore_errors=True)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bienc-bench-files-"))
    try:
        folder = args.folder or build_folder(scratch / "folder")
        files = walk_folder(folder).files
        print(f"folder {folder}: {len(files)} files")
        parse_table(files, args.processes)
        if args.no_ingest:
            return
        for label, include in (("pdf", ["*.pdf"]), ("all", [])):
            subprocess.run([sys.executable, __file__, "--folder", str(folder), "--ingest-only", label,
                            *(f"--include={glob}" for glob in include)], check=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
