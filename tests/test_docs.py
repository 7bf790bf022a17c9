"""The documentation keeps its promises: generated tables match the code, every link lands,
the README stays a guide of one to two thousand words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sessions import reference

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "clients").glob("*/README.md")])
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("name", reference.FILES)
def test_the_tables_are_what_the_code_declares(name):
    """`make docs` rewrites them; a change of a route, error, setting or metric without it fails."""
    text = (ROOT / name).read_text()
    assert reference.render(text) == text, f"{name}: a table differs from the code: run `make docs`"


def test_every_table_is_in_the_docs():
    found = {
        name
        for path in reference.FILES
        for name in re.findall(r"<!-- table: (\w+) -->", (ROOT / path).read_text())
    }
    assert found == set(reference.TABLES)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_lands(path):
    """Relative links name a file that exists and, with an anchor, a heading in it."""
    text = _FENCE.sub("", path.read_text())
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        landing = (path.parent / file).resolve() if file else path
        assert landing.exists(), f"{path.name}: {target}: no such file"
        if anchor and landing.suffix == ".md":
            assert anchor in _anchors(landing), f"{path.name}: {target}: no such heading"


def test_the_readme_is_a_guide_of_one_to_two_thousand_words():
    words = len((ROOT / "README.md").read_text().split())
    assert 1000 <= words <= 2000, words
