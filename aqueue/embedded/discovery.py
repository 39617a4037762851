"""Finding PostgreSQL server binaries: an installed server ("system") or pgserver's bundle.

Only read-only probing happens here: looking at files and running ``postgres --version``.
Whether the account the server runs as can reach what was found is ``binary_cache``'s
question: it depends on who starts the server, not on where the binaries live.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import EmbeddedPostgresError

__all__ = [
    "Binaries",
    "Source",
    "find_system_binaries",
    "pgserver_bindir",
    "resolve_binaries",
    "server_version",
    "system_bindir",
]

Source = Literal["auto", "system", "pgserver"]

_DEBIAN_ROOTS = (Path("/usr/lib/postgresql"),)

_INSTALL_HINT = (
    "Install PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql`; "
    "Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql`; no "
    "service needs to be running) or the bundled server: `pip install 'aqueue[embedded]'` "
    "(CPython <= 3.12, not on Linux ARM). Alternatively point aqueue at an existing "
    "PostgreSQL server with a database URL."
)


@dataclass(frozen=True)
class Binaries:
    """Where a server's ``postgres`` and ``initdb`` live, and what to call them."""

    bindir: Path
    version: str
    description: str
    # Set for pgserver's bundle: the package folder and its version (None if its metadata
    # is missing). Running as root, binary_cache may run a copy of that folder instead.
    pgserver_dir: Path | None = None
    pgserver_version: str | None = None


def find_system_binaries() -> Path | None:
    """Return the bin directory of an installed PostgreSQL server, or None."""
    return system_bindir(None, _DEBIAN_ROOTS)


def system_bindir(search_path: str | None, roots: Sequence[Path]) -> Path | None:
    """The first server bindir found via ``pg_config``, ``postgres`` on the search path (PATH
    when None) or under ``roots`` (newest version first)."""
    for candidate in _system_candidates(search_path, roots):
        if _is_server_bindir(candidate):
            return candidate
    return None


def _system_candidates(search_path: str | None, roots: Sequence[Path]) -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config", path=search_path)
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))
    postgres = shutil.which("postgres", path=search_path)
    if postgres is not None:
        # Often a symlink (e.g. /usr/local/bin/postgres); initdb lives next to the target.
        candidates.append(Path(postgres).resolve().parent)
    for root in roots:
        with contextlib.suppress(OSError):
            versions = sorted(root.glob("*/bin"), key=lambda p: _version_key(p.parent.name))
            candidates.extend(reversed(versions))
    return candidates


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (-1,)


def _is_server_bindir(bindir: Path) -> bool:
    # pg_config and client tools are often installed without the server.
    return all(
        (bindir / exe).is_file() and os.access(bindir / exe, os.X_OK)
        for exe in ("postgres", "initdb")
    )


def pgserver_bindir() -> Path | None:
    """The bin directory of the bundled server in the ``pgserver`` package, or None."""
    # Only locate the package: importing it has side effects (lock files, warnings about
    # XDG_RUNTIME_DIR, and as root it creates an OS user and chmods folders).
    try:
        spec = importlib.util.find_spec("pgserver")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if _is_server_bindir(bindir):
            return bindir
    return None


@functools.lru_cache(maxsize=8)
def server_version(bindir: Path) -> str:
    """``"15.18"`` from ``postgres --version``."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedPostgresError(f"cannot run {bindir / 'postgres'}: {exc}") from exc
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
    if match is None:
        raise EmbeddedPostgresError(f"unexpected output of postgres --version: {out!r}")
    return match.group(1)


def resolve_binaries(source: Source, search_path: str | None) -> Binaries:
    """The binaries ``source`` asks for; a clear error with install hints if there are none.

    ``search_path`` (tests only) restricts the system search to these directories.
    """
    roots: Sequence[Path] = _DEBIAN_ROOTS if search_path is None else ()
    if source in ("auto", "system"):
        bindir = system_bindir(search_path, roots)
        if bindir is not None:
            version = server_version(bindir)
            return Binaries(bindir, version, f"PostgreSQL {version} (system binaries in {bindir})")
        if source == "system":
            raise EmbeddedPostgresError(
                "No PostgreSQL server binaries found (looked at `pg_config --bindir`, "
                "`postgres` on PATH and /usr/lib/postgresql/*/bin). Install them, e.g. "
                "`apt-get install postgresql` (Debian/Ubuntu), `dnf install "
                "postgresql-server` (Fedora) or `brew install postgresql` (macOS); "
                "no service needs to be running."
            )
    bindir = pgserver_bindir()
    if bindir is not None:
        version = server_version(bindir)
        try:
            pgserver_version: str | None = importlib.metadata.version("pgserver")
        except importlib.metadata.PackageNotFoundError:
            pgserver_version = None
        return Binaries(
            bindir,
            version,
            f"PostgreSQL {version} (bundled pgserver {pgserver_version or 'unknown version'})",
            pgserver_dir=bindir.parent.parent,
            pgserver_version=pgserver_version,
        )
    if source == "pgserver":
        raise EmbeddedPostgresError(
            "The optional pgserver package is not installed: "
            "`pip install 'aqueue[embedded]'` (wheels exist for CPython <= 3.12, "
            "not for Linux ARM)."
        )
    raise EmbeddedPostgresError(
        "No PostgreSQL server binaries found (looked at `pg_config --bindir`, `postgres` "
        "on PATH and /usr/lib/postgresql/*/bin) and pgserver is not installed. " + _INSTALL_HINT
    )
