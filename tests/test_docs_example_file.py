"""docs/howto/testing.md shows the FastAPI example's test file in full: it must be that
file, so the page cannot drift from the tests CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "howto" / "testing.md"
FILE = ROOT / "examples" / "fastapi_app" / "tests" / "test_service.py"
HEADER = "# examples/fastapi_app/tests/test_service.py\n"


def test_the_page_shows_the_example_test_file_as_it_is() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    [shown] = [block for block in blocks if block.startswith(HEADER)]
    source = FILE.read_text(encoding="utf-8")
    # The file's module docstring and __future__ import are left out of the page.
    code = source.split("from __future__ import annotations\n\n", 1)[1]
    assert shown.removeprefix(HEADER) == code
