"""Runs the examples of a docs page that are marked to run, so that they cannot drift.

A marker is an HTML comment (invisible on the rendered page) on the line right before a
fenced block, ``<!-- docs-test: ACTION [NAME] -->``:

- ``file NAME``: write the block to NAME in the page's project directory.
- ``python``: run the block as a script there; it must exit 0. A ``stdout`` block right
  after it is its expected output.
- ``console``: a transcript. Each ``$ command`` runs in bash (``aqueue`` is on PATH) and
  its output (stdout and stderr) must match the lines below it, up to the next ``$``.
  A ``^C`` line: the command runs until the lines before it are printed, then gets
  SIGINT, and the lines after it must follow.
- ``start NAME``: a transcript of one command left running once the lines shown are
  printed; ``output NAME`` (a later block) is its whole output, checked when it exits.

A comment ``<!-- docs-test: hidden-python`` whose following lines (up to ``-->``) are
Python runs that code, unseen by readers: the setup a reference page does not show.

Output matching ignores what changes between runs: numbers, 8-digit hex ids, the
throwaway server's socket directory, how many blanks separate words (table columns
widen with their values) and trailing blanks. ``...`` as a whole line matches
any lines (none included), and ``...`` inside a line matches any text.

Every page runs in a fresh directory against a database of its own (``AQUEUE_DATABASE_URL``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Block", "blocks_of", "matches", "run_page"]

_MARKER_RE = re.compile(r"^<!-- docs-test: (\w[\w-]*)(?: (\S+))? -->\s*$")
_HIDDEN_RE = re.compile(r"^<!-- docs-test: hidden-python\s*$")
_FENCE_RE = re.compile(r"^```(\w*)\s*$")
_TIMEOUT = 60.0


@dataclasses.dataclass
class Block:
    action: str
    name: str | None
    text: str
    line: int  # 1-based line of the marker, for failure messages


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        if _HIDDEN_RE.match(lines[i]):
            end = lines.index("-->", i)
            found.append(Block("hidden-python", None, "\n".join(lines[i + 1 : end]), i + 1))
            i = end + 1
            continue
        marker = _MARKER_RE.match(lines[i])
        if marker is None:
            i += 1
            continue
        if i + 1 >= len(lines) or not _FENCE_RE.match(lines[i + 1]):
            raise AssertionError(f"{path}:{i + 1}: a docs-test marker must precede a ``` block")
        end = i + 2
        while lines[end] != "```":
            end += 1
        body = "\n".join(lines[i + 2 : end])
        found.append(Block(marker.group(1), marker.group(2), body, i + 1))
        i = end + 1
    return found


def _normalize(text: str) -> str:
    text = re.sub(r"/tmp/aqpg-\w+", "/tmp/aqpg-X", text)
    text = re.sub(r"\b[0-9a-f]{8}\b", "H", text)
    # Column widths follow the values, so runs of blanks count as one.
    return re.sub(r"[ \t]+", " ", re.sub(r"\d+", "0", text))


def _pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = [re.escape(p) for p in _normalize(line.rstrip()).split("...")]
            parts.append(r"[^\n]*".join(pieces) + r"[ \t]*\n")
    return re.compile("".join(parts))


def matches(expected: list[str], actual: str, *, prefix: bool = False) -> bool:
    """Whether ``actual`` (all of it, or its beginning with ``prefix``) fits ``expected``."""
    text = _normalize("".join(line.rstrip() + "\n" for line in actual.splitlines()))
    pattern = _pattern(expected)
    return bool(pattern.match(text) if prefix else pattern.fullmatch(text))


def _commands(block: Block) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"line {block.line}: a transcript starts with '$ '")
    return commands


class _Page:
    def __init__(self, source: Path, cwd: Path, env: dict[str, str]) -> None:
        self.source = source
        self.cwd = cwd
        self.env = env
        self.background: dict[str, tuple[subprocess.Popen[str], Path]] = {}
        self.count = 0

    def where(self, block: Block) -> str:
        return f"{self.source.name}:{block.line}"

    def _spawn(self, command: str, log: Path) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                ["bash", "-c", f"exec {command}" if "|" not in command else command],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def _log(self) -> Path:
        self.count += 1
        return self.cwd / f".docs-test-{self.count}.log"

    def _wait_for(self, block: Block, expected: list[str], log: Path, what: str) -> None:
        deadline = time.monotonic() + _TIMEOUT
        while not matches(expected, log.read_text(), prefix=True):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.where(block)}: {what}: expected\n"
                    + "\n".join(expected)
                    + f"\ngot\n{log.read_text()}"
                )
            time.sleep(0.05)

    def _check(self, block: Block, expected: list[str], output: str, what: str) -> None:
        if not matches(expected, output):
            raise AssertionError(
                f"{self.where(block)}: {what}: expected\n"
                + "\n".join(expected)
                + f"\ngot\n{output}"
            )

    def console(self, block: Block) -> None:
        for command, expected in _commands(block):
            log = self._log()
            proc = self._spawn(command, log)
            try:
                if "^C" in expected:
                    cut = expected.index("^C")
                    self._wait_for(block, expected[:cut], log, f"$ {command} (before ^C)")
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=_TIMEOUT)
                    expected = [*expected[:cut], *expected[cut + 1 :]]
                else:
                    proc.wait(timeout=_TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            self._check(block, expected, log.read_text(), f"$ {command}")

    def start(self, block: Block) -> None:
        [(command, expected)] = _commands(block)
        log = self._log()
        proc = self._spawn(command, log)
        assert block.name, f"{self.where(block)}: start needs a NAME"
        self.background[block.name] = (proc, log)
        self._wait_for(block, expected, log, f"$ {command}")

    def output(self, block: Block) -> None:
        assert block.name in self.background, f"{self.where(block)}: nothing started"
        proc, log = self.background.pop(block.name)
        proc.wait(timeout=_TIMEOUT)
        self._check(block, block.text.splitlines(), log.read_text(), f"output {block.name}")
        assert proc.returncode == 0, f"{self.where(block)}: exit status {proc.returncode}"

    def python(self, block: Block, stdout: Block | None) -> None:
        script = self.cwd / f".docs-test-{block.line}.py"
        script.write_text(block.text + "\n")
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )
        assert result.returncode == 0, f"{self.where(block)}: failed\n{result.stderr}"
        if stdout is not None:
            self._check(stdout, stdout.text.splitlines(), result.stdout, "stdout")

    def stop(self) -> None:
        for proc, _ in self.background.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_page(source: Path, cwd: Path, database_url: str) -> int:
    """Run every marked block of ``source``; the number of blocks run."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "AQUEUE_DATABASE_URL": database_url,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(cwd),
        "PYTHONUNBUFFERED": "1",
    }
    page = _Page(source, cwd, env)
    blocks = blocks_of(source)
    try:
        for index, block in enumerate(blocks):
            if block.action == "file":
                assert block.name, f"{page.where(block)}: file needs a NAME"
                (cwd / block.name).write_text(block.text + "\n")
            elif block.action in ("python", "hidden-python"):
                following = blocks[index + 1] if index + 1 < len(blocks) else None
                stdout = following if following and following.action == "stdout" else None
                page.python(block, stdout)
            elif block.action == "stdout":
                continue  # checked with its python block
            elif block.action == "console":
                page.console(block)
            elif block.action == "start":
                page.start(block)
            elif block.action == "output":
                page.output(block)
            else:
                raise AssertionError(f"{page.where(block)}: unknown action {block.action!r}")
    finally:
        page.stop()
    return len(blocks)
