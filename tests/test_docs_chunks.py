"""The runnable example of docs/howto/chunks.md runs, in its own database, and prints
what the page says it prints."""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path

import anyio
import asyncpg

PAGE = Path(__file__).resolve().parent.parent / "docs" / "howto" / "chunks.md"


def _blocks_after(heading: str) -> list[tuple[str, str]]:
    """The fenced blocks (language, text) of the section under ``heading``."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


async def test_the_runnable_example_prints_what_the_page_says(
    aqueue_database_url: str, tmp_path: Path
) -> None:
    blocks = _blocks_after("## A runnable example")
    [code] = [body for language, body in blocks if language == "python"]
    [expected] = [body for language, body in blocks if language == "text"]
    script = tmp_path / "chunks_example.py"
    script.write_text(code, encoding="utf-8")
    name = f"docs_chunks_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(aqueue_database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = _with_database(aqueue_database_url, name)
        env = {**os.environ, "AQUEUE_DATABASE_URL": url}
        with anyio.fail_after(120):
            done = await anyio.run_process([sys.executable, str(script)], env=env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode() == expected
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _with_database(url: str, name: str) -> str:
    head, _, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{tail}" if tail else "")
