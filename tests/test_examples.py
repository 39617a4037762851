"""The runnable examples the docs point to (``examples/*.py``) run and print what the docs
say they print, each in a process of its own against the suite's server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aqueue.testing import unique_schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "workflow_etl.py": ["workflow: completed", "load said: loaded 3 rows: [1, 2, 3]"],
    "batch_report.py": ["callback pending", "report: december: 9 sent, 1 failed of 10"],
    "chunk_index.py": [
        "completed: 245, discarded: 5",
        "calls: 3, largest: 100",
        "result of the second document: {'words': 3}",
    ],
    "resumable_steps.py": [
        "job completed after 2 attempts: receipt for ch_42",
        "card charged 1 time(s); receipt tried 2 times",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, aqueue_database_url: str) -> None:
    env = {
        **os.environ,
        "AQUEUE_DATABASE_URL": aqueue_database_url,
        "AQUEUE_SCHEMA": unique_schema("ex"),
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for line in EXPECTED[name]:
        assert line in result.stdout, result.stdout
