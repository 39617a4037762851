"""docs/howto/chunks.md shows the runnable example as it is (tests/test_examples.py runs
the file and checks what it prints)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_page_shows_the_example_file_as_it_is() -> None:
    page = (ROOT / "docs" / "howto" / "chunks.md").read_text(encoding="utf-8")
    section = page.split("\n## A runnable example\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    [code] = [body for language, body in blocks if language == "python"]
    assert code == (ROOT / "examples" / "chunk_index.py").read_text(encoding="utf-8")
