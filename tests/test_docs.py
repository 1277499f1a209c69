"""The user-facing documentation: no issue or ticket numbers (they mean nothing to a reader),
a README short enough to read, and links between the pages that resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USER_DOCS = sorted(
    [REPO / "README.md", REPO / "bench" / "README.md", *(REPO / "docs").glob("*.md")]
)
# `issue 13`, `issues 13`, `issue #13`, or a bare `#13` (not a link anchor such as `a.md#6-x`).
ISSUE_REFERENCE = re.compile(r"\bissues? #?\d+|(?<![\w/])#\d+\b", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#([^)\s]+))?\)")
README_MAX_LINES = 300


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_user_docs_exist():
    names = {_name(p) for p in USER_DOCS}
    for page in ("operations", "cluster", "training", "distillation", "contributing"):
        assert f"docs/{page}.md" in names
    assert "docs/configuration.md" in names


@pytest.mark.parametrize("path", USER_DOCS, ids=_name)
def test_no_issue_numbers(path):
    hits = [
        f"{_name(path)}:{number}: {line.strip()[:100]}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ISSUE_REFERENCE.search(line)
    ]
    assert not hits, "issue references in user-facing docs:\n" + "\n".join(hits)


def test_the_issue_pattern_catches_what_it_should():
    for text in ("see issue 13", "Issue 7 measured", "(issue #4)", "fixed in #12.", "issues 3"):
        assert ISSUE_REFERENCE.search(text), text
    for text in ("[x](cluster.md#6-schedule)", "a tissue 3", "`#` comments", "#ffffff"):
        assert not ISSUE_REFERENCE.search(text), text


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}"


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings, plus explicit `<a id=...>` ones."""
    text = path.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([^"]+)"', text))
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", USER_DOCS, ids=_name)
def test_links_between_pages_resolve(path):
    broken = []
    for target, anchor in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        page = (path.parent / target).resolve()
        if not page.is_file():
            broken.append(f"{target} (no such file)")
        elif anchor and anchor not in _anchors(page):
            broken.append(f"{target}#{anchor} (no such heading)")
    assert not broken, f"{_name(path)} links to: {broken}"
