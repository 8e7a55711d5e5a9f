"""Document files end to end, as a user runs them: `bienc ingest FOLDER` on the embedded
default (re-ingest, --sync), and uploads to a real `bienc serve` over loopback HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.filemaker import HTML_PAGE, bad_files, docx_with_headings, pdf_pages
from tests.integration.conftest import bienc_env, run_bienc, run_json
from tests.integration.test_api import serve

API_KEY = "files-admin-key-0123456789"


def _manuals(folder: Path) -> dict[str, str]:
    """A folder of good documents and, under bad/, one of each bad kind; returns the bad
    files' ids -> a phrase of their reason."""
    (folder / "web").mkdir(parents=True)
    pdf_pages(folder / "manual.pdf")
    docx_with_headings(folder / "guide.docx")
    (folder / "web" / "filters.html").write_text(HTML_PAGE)
    (folder / "notes.md").write_text("# Notes\n\n## Storage\nKeep the spare seals in a cool, dark drawer.\n")
    return {f"bad/{name}": phrase for name, phrase in bad_files(folder / "bad").items()}


def test_a_folder_of_documents_is_ingested_found_by_page_and_section_and_kept_in_sync(
        tmp_path: Path) -> None:
    env = bienc_env()
    folder = tmp_path / "manuals"
    expected_failures = _manuals(folder)

    first = run_bienc("ingest", str(folder), "-c", "manuals", "--json", cwd=tmp_path, env=env)
    assert first.returncode == 3, first.stderr  # some files failed, the rest are indexed
    job = json.loads(first.stdout)
    assert (job["indexed"], job["failed"], job["total"]) == (4, 7, 11)
    assert set(job["failures"]) == set(expected_failures)
    for name, phrase in expected_failures.items():
        assert phrase in job["failures"][name], (name, job["failures"][name])

    hits = run_json("search", "how often must the impeller bearing be greased", "-c", "manuals",
                    cwd=tmp_path, env=env)
    assert (hits[0]["id"], hits[0]["page"]) == ("manual.pdf", 3)
    assert "impeller bearing" in hits[0]["snippet"]
    hits = run_json("search", "which terminal does the brown conductor go to", "-c", "manuals",
                    cwd=tmp_path, env=env)
    assert hits[0]["id"] == "guide.docx"
    assert hits[0]["section"] == ["Electrical", "Wiring the terminal block"]
    hits = run_json("search", "can I dry the mesh with a heat gun", "-c", "manuals",
                    cwd=tmp_path, env=env)
    assert hits[0]["id"] == "web/filters.html"
    assert hits[0]["section"] == ["Filter maintenance", "Cleaning", "Drying"]

    again = run_bienc("ingest", str(folder), "-c", "manuals", "--include", "*",
                      "--exclude", "bad/*", "--json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    status = json.loads(again.stdout)
    assert (status["indexed"], status["skipped"], status["failed"]) == (0, 4, 0)
    assert "4 files unchanged" in again.stderr and "7 files left out" in again.stderr

    (folder / "notes.md").unlink()
    (folder / "guide.docx").write_bytes(docx_with_headings(tmp_path / "g.docx").read_bytes())
    synced = run_bienc("ingest", str(folder), "-c", "manuals", "--exclude", "bad/*", "--sync",
                       "--json", cwd=tmp_path, env=env)
    assert synced.returncode == 0, synced.stderr
    assert "removed 1 documents whose files are gone (notes.md)" in synced.stderr
    assert json.loads(synced.stdout)["removed"] == ["notes.md"]
    info = run_json("info", "-c", "manuals", cwd=tmp_path, env=env)["collections"][0]
    assert info["documents"] == 3


def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"\x00")
    result = run_bienc("ingest", str(tmp_path / "empty"), cwd=tmp_path, env=bienc_env())
    assert result.returncode == 1
    assert "no files to ingest" in result.stderr and "1 left out" in result.stderr


def _wait(api: httpx.Client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
        if status["state"] not in ("queued", "running", "retrying"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def test_files_uploaded_over_http_are_parsed_and_searchable(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    manual = pdf_pages(files / "manual.pdf")
    guide = docx_with_headings(files / "guide.docx")
    locked = pdf_pages(files / "locked.pdf", password="secret")
    big = files / "big.txt"
    big.write_text("words " * 100_000)  # 600 KB
    env = bienc_env(api_key=API_KEY, max_file_bytes="300000", api_max_upload_bytes="1000000")
    with serve(tmp_path, env) as server, server.client(headers={"X-API-Key": API_KEY}) as api:
        parts = [("files", (p.name, p.read_bytes())) for p in (manual, guide, locked)]
        answer = api.post("/v1/collections/uploads/files", files=parts)
        assert answer.status_code == 202, answer.text
        assert answer.json()["files"] == 3
        started = time.monotonic()
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # answers while parsing
        assert time.monotonic() - started < 1.0
        status = _wait(api, answer.json()["job_id"])
        assert (status["state"], status["indexed"], status["failed"]) == ("completed_with_errors", 2, 1)
        assert "encrypted PDF" in status["failures"]["locked.pdf"]
        hits = api.post("/v1/collections/uploads/search",
                        json={"query": "how often must the impeller bearing be greased"}).json()
        assert (hits["results"][0][0]["id"], hits["results"][0][0]["page"]) == ("manual.pdf", 3)

        again = api.post("/v1/collections/uploads/files", files=parts[:1])
        assert _wait(api, again.json()["job_id"])["skipped"] == 1  # the same bytes: not read again

        too_big_file = api.post("/v1/collections/uploads/files",
                                files=[("files", ("big.txt", big.read_bytes()[:400_000]))])
        assert too_big_file.status_code == 413
        assert "'big.txt'" in too_big_file.json()["detail"]
        assert "BIENC_MAX_FILE_BYTES" in too_big_file.json()["detail"]
        too_big_request = api.post("/v1/collections/uploads/files",
                                   files=[("files", (f"part{i}.txt", b"y" * 250_000)) for i in range(5)])
        assert too_big_request.status_code == 413
        assert "BIENC_API_MAX_UPLOAD_BYTES" in too_big_request.json()["detail"]
        nothing = api.post("/v1/collections/uploads/files", data={"note": "x"},
                           files=[("other", ("a.md", b"# A"))])
        assert nothing.status_code == 422 and "'files'" in nothing.json()["detail"]
        read_only = httpx.post(f"{server.url}/v1/collections/uploads/files", files=parts[:1])
        assert read_only.status_code == 401
