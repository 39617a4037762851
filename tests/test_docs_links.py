"""Relative links in README.md, CHANGELOG.md and docs/ lead to a file, and ``#anchor`` to a
heading.

No database and no network: this reads Markdown files. Links with a scheme (``https:``,
``mailto:``) are not checked. Code blocks and inline code are skipped, so examples that
happen to look like links are not taken for links. Anchors are GitHub's heading slugs.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.rglob("*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(?P<target>\S+)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for _, line in _prose_lines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = _slug(match["title"])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def _paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each run of prose lines, joined: link text may wrap."""
    paragraphs: list[tuple[int, str]] = []
    start, previous = 0, -1
    parts: list[str] = []
    for number, line in [*_prose_lines(path), (-1, "")]:
        if line.strip() and number == previous + 1 and parts:
            parts.append(line.strip())
        else:
            if parts:
                paragraphs.append((start, " ".join(parts)))
            start, parts = number, [line.strip()] if line.strip() else []
        previous = number
    return paragraphs


def _links(path: Path) -> list[tuple[int, str]]:
    links: list[tuple[int, str]] = []
    for number, line in _prose_lines(path):
        definition = _REFERENCE_DEF.match(line)
        if definition:
            links.append((number, definition["target"]))
    for number, paragraph in _paragraphs(path):
        # Inline code may hold link-like text; a code span used as link text stays a link.
        prose = _INLINE_CODE.sub(lambda m: "x" * len(m.group(2)), paragraph)
        links.extend((number, m["target"]) for m in _INLINE_LINK.finditer(prose))
    return links


def _problem(page: Path, target: str) -> str | None:
    if _SCHEME.match(target) or target.startswith("//"):
        return None  # external: not checked here
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part)
    if path_part.startswith("/"):
        return "absolute path: use a path relative to this page"
    destination = (page.parent / path_part).resolve() if path_part else page
    if not destination.exists():
        return "no such file"
    if ROOT not in destination.parents and destination != ROOT:
        return "points outside the repository"
    if anchor:
        if destination.is_dir() or destination.suffix != ".md":
            return f"#{anchor} on a file that is not Markdown"
        if anchor not in _anchors(destination):
            return f"no heading with anchor #{anchor} in {destination.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        f"{page.relative_to(ROOT)}, paragraph at line {number}: ({target}) {problem}"
        for number, target in _links(page)
        if (problem := _problem(page, target)) is not None
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_index_or_a_page_it_links() -> None:
    index = DOCS / "index.md"
    reached = {index}
    todo = [index]
    while todo:
        page = todo.pop()
        for _, target in _links(page):
            path_part = unquote(target.partition("#")[0])
            if not path_part or _SCHEME.match(target):
                continue
            destination = (page.parent / path_part).resolve()
            inside = destination.suffix == ".md" and DOCS in destination.parents
            if inside and destination.exists() and destination not in reached:
                reached.add(destination)
                todo.append(destination)
    orphans = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p not in reached)
    assert not orphans, f"pages no reader can reach from docs/index.md: {orphans}"


def test_the_slugs_follow_github() -> None:
    assert _slug("A throwaway PostgreSQL: `aqueue.embedded.EmbeddedPostgres`") == (
        "a-throwaway-postgresql-aqueueembeddedembeddedpostgres"
    )
    assert _slug("`retry`: `aqueue.Backoff`") == "retry-aqueuebackoff"
    assert _slug("Waiting for a result: `app.wait`") == "waiting-for-a-result-appwait"
    assert _slug("The v1 → v2 cut-over") == "the-v1--v2-cut-over"
