"""The docs' marked examples run, and their shown output is what aqueue prints
(tests/docs_runner.py has the marker syntax)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.docs_runner import blocks_of, matches, run_page

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    path
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    if "<!-- docs-test:" in path.read_text(encoding="utf-8")
)


def test_some_pages_are_run() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in PAGES}
    assert {
        "docs/tutorial/quickstart.md",
        "docs/reference/cli.md",
        "docs/howto/workers.md",
    } <= names


@pytest.fixture
async def page_database(aqueue_database_url: str) -> AsyncIterator[str]:
    # A database per page: the examples use the default schema, "aqueue", which other
    # tests expect to find unmigrated in the suite's database.
    name = f"docs_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(aqueue_database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(aqueue_database_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page: Path, tmp_path: Path, page_database: str) -> None:
    assert run_page(page, tmp_path, page_database) > 0


def test_matching_rules() -> None:
    assert matches(["job 7 took 12ms"], "job 1234 took 3ms\n")
    assert matches(["worker 3f2a91c0 ready"], "worker dcb77bb1 ready")
    assert not matches(["job 7 completed"], "job 7 discarded")
    assert matches(["a", "...", "d"], "a\nb\nc\nd\n")
    assert matches(["a", "...", "b"], "a\nb\n")
    assert not matches(["a", "d"], "a\nb\nd\n")
    assert matches(["applied: 0001_init.sql, ..."], "applied: 0001_init.sql, 0002_x.sql\n")
    assert matches(["first"], "first\nsecond\n", prefix=True)
    assert not matches(["first"], "first\nsecond\n")


def test_markers_must_precede_a_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- docs-test: console -->\ntext\n")
    with pytest.raises(AssertionError, match="must precede"):
        blocks_of(page)
