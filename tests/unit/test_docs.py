"""The README and docs/ say what the code does: generated parts are current, quoted defaults
are the settings' defaults, every variable named exists, every link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bienc.config.settings import Settings
from bienc.reference import PARTS, REGENERATE, show_default, splice, stale_parts

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Variables the test and bench tiers read (tests/conftest.py, bench/, the crash points of
# bienc/config/crash.py); not settings of bienc.
NOT_SETTINGS = {"BIENC_TEST_STRICT", "BIENC_TEST_REDIS_URL", "BIENC_TEST_FUZZ_EXAMPLES",
                "BIENC_BENCH_REDIS_URL", "BIENC_CRASH_AT"}
# `BIENC_X` (default `V`): how a page quotes a default, so that it can be checked.
QUOTED_DEFAULT = re.compile(r"`BIENC_([A-Z0-9_]+)` \(default `([^`]*)`\)")


def _settings() -> dict[str, str]:
    return {f"BIENC_{name.upper()}": show_default(field.get_default(call_default_factory=True))
            for name, field in Settings.model_fields.items()}


def test_generated_parts_match_the_code() -> None:
    stale = stale_parts(ROOT / "docs")
    assert stale == [], f"out of date: {stale}; run `{REGENERATE}` and commit the result"


def test_a_changed_setting_makes_its_part_stale(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for part in PARTS:
        (docs / part.page).write_text((ROOT / "docs" / part.page).read_text())
    page = docs / "configuration.md"
    page.write_text(page.read_text().replace("`BIENC_HNSW_EF` | int (>= 1) | `512`",
                                             "`BIENC_HNSW_EF` | int (>= 1) | `128`"))
    assert stale_parts(docs) == ["docs/configuration.md (settings)"]
    assert stale_parts(docs, write=True) == ["docs/configuration.md (settings)"]
    assert stale_parts(docs) == []


def test_a_page_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no generated part 'settings'"):
        splice("# a page\n", "settings", "| table |")


def test_quoted_defaults_are_the_settings_defaults() -> None:
    defaults = _settings()
    quoted = [(page.name, name, value) for page in PAGES
              for name, value in QUOTED_DEFAULT.findall(page.read_text())]
    assert len(quoted) >= 10, "the pages quote defaults as `BIENC_X` (default `V`)"
    wrong = [f"{page}: BIENC_{name} (default `{value}`), but the code says "
             f"`{defaults.get('BIENC_' + name, 'no such setting')}`"
             for page, name, value in quoted if defaults.get("BIENC_" + name) != value]
    assert wrong == []


def test_every_variable_named_is_a_setting() -> None:
    known = set(_settings()) | NOT_SETTINGS
    named = {(page.name, name) for page in PAGES
             for name in re.findall(r"\bBIENC_[A-Z0-9_]*[A-Z0-9]\b", page.read_text())}
    unknown = sorted(f"{page}: {name}" for page, name in named if name not in known)
    assert unknown == []


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, spelled as GitHub spells them."""
    prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target) if target else page
            if not linked.exists() or (anchor and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []


def test_readme_is_a_map() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 260, "reference and figures belong in docs/"
    for page in ("api", "configuration", "deployment", "evaluation", "performance", "design"):
        assert f"docs/{page}.md" in readme
