"""The dependency rule of DESIGN §6, measured on the source: no import cycle in aqueue/
(runtime, lazy and TYPE_CHECKING imports all count), apart from the user-facing contexts'
typed reference to the App; nothing under worker/ imports the façade; no source file over
500 lines. And the option and setting names written once are the ones implemented."""

from __future__ import annotations

import ast
import dataclasses
from collections import defaultdict
from pathlib import Path

import aqueue
from aqueue.config import Settings, SettingsOptions
from aqueue.options import EnqueueOptions, JobOptions, Options

PACKAGE = Path(aqueue.__file__).parent
CONTEXTS = {"aqueue.context"}  # JobContext and PersistentContext may name App, as a type


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[tuple[str, bool]]]:
    """module -> {(imported aqueue module, only for type checking)}."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    found: dict[str, set[tuple[str, bool]]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        typing_only: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only.update(id(child) for child in ast.walk(node))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in modules else base)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in modules and target != name and target != "aqueue":
                    found[name].add((target, id(node) in typing_only))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_and_no_worker_reaches_into_the_app() -> None:
    imports = _imports()
    assert len(imports) > 40  # the walk sees the package at all
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in imports.items():
        if module == "aqueue":
            continue  # the package's __init__ re-exports: the top, not a node
        for target, typing_only in targets:
            if target == "aqueue.app" and module in CONTEXTS and typing_only:
                continue
            graph[module].add(target)
    assert _cycles(graph) == []
    into_app = sorted(
        module
        for module, targets in imports.items()
        if module.startswith("aqueue.worker") and any(t == "aqueue.app" for t, _ in targets)
    )
    assert into_app == []
    below_facade = {
        module for module, targets in imports.items() if any(t == "aqueue.app" for t, _ in targets)
    }
    surfaces = {
        "aqueue", "aqueue.demo", "aqueue.metrics", "aqueue.tracing", "aqueue.hosting", *CONTEXTS
    }  # fmt: skip
    packages = ("aqueue.cli", "aqueue.dashboard", "aqueue.testing")
    assert {m for m in below_facade if not m.startswith(packages)} <= surfaces


def test_no_source_file_over_500_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): length
        for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.sql")]
        if (length := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}


def test_option_names_are_written_once_and_all_implemented() -> None:
    fields = {f.name for f in dataclasses.fields(Options)}
    assert EnqueueOptions.__optional_keys__ == fields
    assert JobOptions.__optional_keys__ == fields - {
        "scheduled_at",
        "schedule_in",
        "conn",
        "partition_key",
    }
    assert SettingsOptions.__optional_keys__ == set(Settings.model_fields) - {"schema_name"}
