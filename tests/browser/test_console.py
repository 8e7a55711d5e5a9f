"""The search console in a real browser (Debian's chromium, driven by Playwright) against a
live `bienc serve` on loopback: the embedded default, the real model, an API key."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import skip_without
from tests.integration.conftest import bienc_env
from tests.integration.test_api import Server, _wait_for_job, serve

KEY = "console-admin-key-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# A closed network: nothing in the background may try to go out (it would be refused anyway).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EIFFEL = "Where is the Eiffel Tower?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("console"), bienc_env(api_key=KEY)) as running, \
            running.client(headers={"X-API-Key": KEY}) as admin:
        sample = (Path(__file__).parents[2] / "bienc" / "sample_corpus.jsonl").read_text()
        documents = [json.loads(line) for line in sample.splitlines() if line.strip()]
        accepted = admin.post("/v1/collections/sample/documents", json={"documents": documents})
        _wait_for_job(admin, accepted.json()["job_id"])
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        skip_without("chromium", "Debian's package at /usr/bin/chromium")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def _enter_key(page: Any, key: str) -> None:
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key", key)
    page.press("#key", "Enter")


def test_search_shows_the_matching_chunk_highlighted_and_a_filter_narrows_it(
        server: Server, page: Any, tmp_path: Path) -> None:
    page.goto(f"{server.url}/ui")
    _enter_key(page, KEY)
    page.wait_for_selector(".collection[data-name='sample']")
    assert "20 documents" in page.inner_text(".collection[data-name='sample']")
    page.focus(".collection[data-name='sample']")  # keyboard: open it, type, Enter
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type(EIFFEL)
    page.keyboard.press("Enter")
    page.wait_for_selector("#results li")
    first = page.locator("#results li").first
    assert first.locator(".hit-id").inner_text() == "eiffel-tower"
    assert first.locator(".snippet mark").all_inner_texts() == ["Eiffel", "Tower"]
    assert '"topic":"landmarks"' in first.locator(".metadata").inner_text()
    assert "encode" in page.inner_text("#timings") and "ms" in page.inner_text("#timings")
    assert "hybrid" in page.inner_text("#timings")  # the sample collection's default mode
    legs = first.locator(".score").inner_text()
    assert "dense " in legs and "lexical " in legs  # found by both legs, each score shown
    assert "c=sample" in page.url and "Eiffel" in page.url  # the result can be shared
    page.screenshot(path=str(tmp_path / "console-search.png"), full_page=True)
    assert (tmp_path / "console-search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    everything = page.locator("#results .hit-id").all_inner_texts()

    page.fill("#filter", '{"topic": "geography"}')
    page.click("#search-form button[type=submit]")
    expect(page.locator("#results")).not_to_contain_text("eiffel-tower")  # (no eval: the CSP forbids it)
    narrowed = page.locator("#results .hit-id").all_inner_texts()
    sample = (Path(__file__).parents[2] / "bienc" / "sample_corpus.jsonl").read_text().splitlines()
    geography = {r["id"] for r in map(json.loads, sample) if r["metadata"].get("topic") == "geography"}
    assert set(narrowed) == geography and len(narrowed) < len(everything)
    assert all("geography" in text for text in page.locator("#results .metadata").all_inner_texts())
    page.fill("#filter", '{"topic": ')  # not JSON: said next to the field, nothing sent
    page.click("#search-form button[type=submit]")
    assert page.is_visible("#filter-error")

    page.fill("#filter", "")
    page.select_option("#mode", "lexical")  # words only: the page says so, and so does the URL
    page.click("#search-form button[type=submit]")
    expect(page.locator("#timings")).to_contain_text("lexical")
    assert "mode=lexical" in page.url
    assert page.locator("#results .hit-id").first.inner_text() == "eiffel-tower"

    shared = page.context.new_page()  # the shared URL, in a tab that has the key
    shared.goto(f"{server.url}/ui?c=sample&q=Where+is+the+Eiffel+Tower%3F")
    _enter_key(shared, KEY)
    shared.wait_for_selector("#results li")
    assert shared.locator("#results .hit-id").first.inner_text() == "eiffel-tower"


def test_a_wrong_key_shows_the_prompt_and_no_stack_trace(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui")
    _enter_key(page, "not-the-key-0123456789")
    expect(page.locator("#key-reason")).to_contain_text("refused")
    assert page.is_visible("#key-form")
    text = page.inner_text("body")
    assert "Traceback" not in text and "at api (" not in text and "undefined" not in text


def test_an_unreachable_server_is_said_not_a_blank_page(server: Server, page: Any) -> None:
    page.route("**/v1/**", lambda route: route.abort())
    page.goto(f"{server.url}/ui")
    page.wait_for_selector("#notice:not([hidden])")
    assert "cannot be reached" in page.inner_text("#notice")
    assert page.is_visible("#search-form")


def test_a_job_shows_its_progress_then_completed(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/ui")
    _enter_key(page, KEY)
    page.wait_for_selector(".collection")
    # long enough to outlast the console's idle refresh (3 s) on a fast machine: ~150 words,
    # two chunks, each
    body = " ".join(f"On hour {h} the water rose past the {h}th mark of the old pier." for h in range(12))
    documents = [{"id": f"n{i}", "text": f"Note {i}: the harbour tide on day {i} was unusual. {body}"}
                 for i in range(600)]
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as admin:
        job_id = admin.post("/v1/collections/notes/documents", json={"documents": documents}).json()["job_id"]
    job = page.locator(f".job[data-job-id='{job_id}']")
    job.wait_for(timeout=30_000)
    seen_running = False
    deadline = time.monotonic() + 300
    while (state := job.locator(".state").inner_text()) != "completed":
        assert state in ("queued", "running"), state
        value, maximum = (float(job.locator("progress").get_attribute(a) or 0) for a in ("value", "max"))
        seen_running = seen_running or value < maximum
        assert time.monotonic() < deadline, "the job did not complete in 300 s"
        time.sleep(0.2)
    assert seen_running  # the bar was shown part-way, before the end
    assert job.locator("progress").get_attribute("value") == job.locator("progress").get_attribute("max")
    assert "600 indexed" in job.locator(".meta").inner_text()


def test_the_console_is_usable_at_phone_width(server: Server, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    try:
        phone = context.new_page()
        phone.goto(f"{server.url}/ui?c=sample&q=plants")
        _enter_key(phone, KEY)
        phone.wait_for_selector("#results li")
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        phone.screenshot(path=str(tmp_path / "console-phone.png"), full_page=True)
    finally:
        context.close()


def test_the_page_is_served_without_a_key_and_loads_nothing_from_elsewhere(server: Server) -> None:
    for path in ("/ui", "/ui/console.js", "/ui/console.css"):
        response = httpx.get(server.url + path, timeout=10)
        assert response.status_code == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "http://" not in response.text and "https://" not in response.text
    assert httpx.get(server.url + "/ui/../api.py", timeout=10).status_code == 404
    assert httpx.get(server.url + "/v1/collections", timeout=10).status_code == 401


def test_a_hit_from_a_file_shows_its_page_and_section(server: Server, page: Any,
                                                      tmp_path: Path) -> None:
    from tests.filemaker import docx_with_headings, pdf_pages

    parts = [("files", (p.name, p.read_bytes())) for p in
             (pdf_pages(tmp_path / "manual.pdf"), docx_with_headings(tmp_path / "guide.docx"))]
    with server.client(headers={"X-API-Key": KEY}) as admin:
        accepted = admin.post("/v1/collections/manuals/files", files=parts)
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 120
        while admin.get(f"/v1/jobs/{accepted.json()['job_id']}").json()["state"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    page.goto(f"{server.url}/ui?c=manuals&q=how+often+is+the+impeller+bearing+greased")
    _enter_key(page, KEY)
    page.wait_for_selector("#results li")
    first = page.locator("#results li").first
    assert first.locator(".hit-id").inner_text() == "manual.pdf"
    assert first.locator(".hit-where").inner_text() == "page 3"
    page.goto(f"{server.url}/ui?c=manuals&q=which+terminal+takes+the+brown+conductor")  # key kept
    page.wait_for_selector("#results li")
    first = page.locator("#results li").first
    assert first.locator(".hit-where").inner_text() == "Electrical \u203a Wiring the terminal block"
