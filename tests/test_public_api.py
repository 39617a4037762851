"""The public surface: ``aqueue.__all__`` is pinned, typed, and the exception tree drawn in
``aqueue/errors.py`` matches the classes defined there."""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import inspect
import re
import tomllib
import zipfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

import aqueue
import aqueue.errors

PUBLIC_NAMES = [
    "App",
    "AppNotOpen",
    "AqueueError",
    "Backoff",
    "Batch",
    "BatchInfo",
    "Cancel",
    "Chunk",
    "ClusterStatus",
    "ConfigurationError",
    "ConfiguredJob",
    "DatabaseError",
    "DependencyFailed",
    "Discard",
    "Drift",
    "DuplicateJobKind",
    "EmbeddedPostgresError",
    "EnqueueCall",
    "InvalidJobArgs",
    "InvalidOption",
    "InvalidWorkflow",
    "Job",
    "JobContext",
    "JobDefinition",
    "JobNotFound",
    "JobRequest",
    "JobState",
    "JobStateError",
    "JobTimeout",
    "LeaseInfo",
    "NodeInfo",
    "Outcome",
    "Partition",
    "PersistentContext",
    "Queue",
    "QueueStats",
    "Rate",
    "ResultNotJSON",
    "SchemaNotMigrated",
    "Snooze",
    "Unique",
    "UnknownJobKind",
    "UnknownQueue",
    "Worker",
    "Workflow",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowRun",
    "WorkflowStatus",
    "__version__",
    "lifespan",
]

PYPROJECT = Path(aqueue.__file__).parent.parent / "pyproject.toml"


def test_all_is_pinned_and_sorted() -> None:
    assert aqueue.__all__ == PUBLIC_NAMES
    assert sorted(aqueue.__all__) == aqueue.__all__
    assert len(set(aqueue.__all__)) == len(aqueue.__all__)


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("aqueue")
    for name in aqueue.__all__:
        value = getattr(module, name)
        exec(f"from aqueue import {name}", {})  # the way users import it
        if inspect.isclass(value):
            # Defined in aqueue itself, not re-exported from a dependency.
            assert value.__module__.startswith("aqueue."), (name, value.__module__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from aqueue import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(aqueue.__all__)


def test_version_matches_pyproject() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert aqueue.__version__ == project["project"]["version"]


def test_the_wheel_ships_every_file_of_the_package(tmp_path: Path) -> None:
    """Built as pip builds it (the project's build backend), the wheel holds py.typed, the
    SQL, the migrations and the dashboard's templates and static files, and no cache."""
    from hatchling.build import build_wheel

    assert resources.files("aqueue").joinpath("py.typed").is_file()
    root = PYPROJECT.parent
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        name = build_wheel(str(tmp_path))
    with zipfile.ZipFile(tmp_path / name) as wheel:
        shipped = {n for n in wheel.namelist() if n.startswith("aqueue/")}
    package = root / "aqueue"
    wanted = {
        path.relative_to(root).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "aqueue/py.typed" in shipped
    assert {n for n in wanted if n.endswith((".sql", ".html", ".css", ".js"))} <= shipped
    assert wanted == shipped


_TREE_LINE = re.compile(
    r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w*)(?:\(\w*\))?(?: \((?P<base>\w+)\))?(?P<rest>.*)$"
)


def _drawn_tree() -> dict[str, tuple[str | None, str]]:
    """name -> (drawn parent or explicit base, description) from the errors docstring."""
    doc = aqueue.errors.__doc__ or ""
    block = doc.split("The tree::", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break  # back to prose
        lines.append(line)
    tree: dict[str, tuple[str | None, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        if not line.strip():
            stack = []
            continue
        match = _TREE_LINE.match(line)
        assert match, f"cannot read tree line {line!r}"
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else match["base"]
        assert match["name"] not in tree, f"{match['name']} drawn twice"
        tree[match["name"]] = (parent, match["rest"].strip())
        stack.append((depth, match["name"]))
    return tree


def test_error_tree_in_docstring_matches_the_classes() -> None:
    tree = _drawn_tree()
    defined = {
        name: obj
        for name, obj in vars(aqueue.errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == "aqueue.errors"
    }
    assert set(tree) == set(defined)
    assert sorted(aqueue.errors.__all__) == sorted(defined)
    for name, (parent, description) in tree.items():
        cls = defined[name]
        if parent is None:
            assert cls.__bases__ == (Exception,), name
            continue
        base = defined.get(parent) or getattr(builtins, parent)
        # The drawn parent is the class's own (first) base, not just an ancestor.
        assert cls.__bases__[0] is base, f"{name} is drawn under {parent}: {cls.__bases__}"
        for also in re.findall(r"\(also (\w+)\)", description):
            assert issubclass(cls, getattr(builtins, also)), f"{name} is not a {also}"
    aqueue_errors = [n for n, c in defined.items() if issubclass(c, aqueue.AqueueError)]
    job_actions = [n for n, c in defined.items() if issubclass(c, aqueue.errors.JobAction)]
    assert sorted(aqueue_errors + job_actions) == sorted(defined)


def test_public_errors_are_all_exported() -> None:
    for name in aqueue.errors.__all__:
        if name != "JobAction":
            assert name in aqueue.__all__, name


def test_job_record_fields_are_the_contract() -> None:
    fields = [f.name for f in dataclasses.fields(aqueue.Job)]
    assert fields == [
        "id", "kind", "queue", "state", "args", "priority", "attempt", "max_attempts",
        "scheduled_at", "created_at", "attempted_at", "finalized_at", "errors", "result",
        "tags", "meta", "duplicate",
        # Added after the first release, with defaults, so positional construction holds.
        "progress", "progress_note", "workflow_id", "batch_id", "step",
    ]  # fmt: skip
    now = datetime.now(UTC)
    job = aqueue.Job(
        id=1, kind="k", queue="q", state=aqueue.JobState.AVAILABLE, args={}, priority=0,
        attempt=0, max_attempts=1, scheduled_at=now, created_at=now, attempted_at=None,
        finalized_at=None, errors=[], result=None, tags=[], meta={},
    )  # fmt: skip
    assert job.duplicate is False
    assert job.progress is None and job.progress_note is None
    assert job.workflow_id is None and job.batch_id is None and job.step is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = aqueue.JobState.COMPLETED  # type: ignore[misc]


def test_job_states_are_the_contract() -> None:
    assert [s.value for s in aqueue.JobState] == [
        "pending", "scheduled", "available", "running", "retryable",
        "completed", "cancelled", "discarded",
    ]  # fmt: skip
    finals = {s.value for s in aqueue.JobState if s.is_final}
    assert finals == {"completed", "cancelled", "discarded"}


def test_outcome_carries_the_contract_fields() -> None:
    names = {f.name for f in dataclasses.fields(aqueue.Outcome)}
    assert {"state", "result", "error", "duration"} <= names
