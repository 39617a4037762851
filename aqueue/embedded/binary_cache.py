"""Running pgserver's bundled PostgreSQL when the server's account cannot reach it.

The problem
-----------
PostgreSQL refuses to run as root, so as root the server runs as an unprivileged account
(``postgres`` or ``nobody``, see ``process.server_account``). That account must be able to
walk every folder above the binaries. pgserver installs them inside the virtualenv, and
a virtualenv in root's home, in a ``mktemp -d`` clone or in pytest's temp folder sits
below a 0700 folder: ``initdb`` fails with "Permission denied".

pgserver's own answer, making every parent folder readable by everyone, is not ours to
give: those folders belong to the user. Instead we run a copy of the bundle kept where
the account can reach it and where nobody but root can change it.

The design
----------
* **Only when needed.** The account itself is asked first (``initdb --version`` run as
  it, which also honours ACLs and mount options). A reachable install runs in place and
  nothing is copied. Only pgserver's bundle is copied: system packages are reachable by
  construction, and a server built into a private folder is the user's to fix (the
  error says how).
* **Where.** ``/tmp/aqueue-pgserver-<version>-<digest>``: short, on every machine, and
  cleaned at boot. The digest covers the bundle's file list and sizes, so two different
  builds of one version never share a copy, and a copy that lost files (to a tmp
  cleaner) or gained some is never used.
* **What.** The package folder, minus C headers and bytecode, and its sibling
  ``pgserver.libs`` with the same layout as in site-packages: the wheel's libraries are
  found through relative RPATHs (``$ORIGIN/../../../pgserver.libs``) and PostgreSQL finds
  ``share/`` and ``lib/`` relative to its own binary, so the copy works unchanged.
* **A copy, not hard links.** A hard link shares the inode, and with it the owner and
  mode of the user's file: the copy could be changed through the virtualenv, and a chmod
  there would break it. A copy is root's, with modes we choose, for ~30 MB and a fraction
  of a second once per boot.
* **Atomic.** Built in a fresh ``mkdtemp`` folder next to its final name (so on the same
  file system), then renamed into place. Renaming onto an existing non-empty folder
  fails, so of two processes racing, one publishes and the other discards its build and
  uses the winner's. Nobody ever sees a half-built copy.
* **Trusted on reuse, never repaired.** ``/tmp`` is writable by everyone, so a name there
  proves nothing. An existing copy is used only if, checked without following links,
  the folder and everything in it is root's and not writable by group or others, holds
  only folders and regular files, and its files and sizes match the bundle's. Since only
  root can then write those folders, nobody can plant or swap a binary, and the sticky
  bit on ``/tmp`` stops anyone renaming the folder itself. A copy that fails the check
  is left alone (it may be someone's, or in use) and the next of a few numbered names is
  tried. We never delete a published copy: others may be running from it; only our own
  unfinished builds, once their builder is dead, are swept.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from ..errors import EmbeddedPostgresError
from .discovery import Binaries
from .process import Account, cannot_run_as, pid_alive

__all__ = ["bundle_copy", "runnable_binaries"]

_PREFIX = "aqueue-pgserver-"
_BUILD_MARK = ".build-"
_BUILD_RE = re.compile(r"\.build-(\d+)-[^/]*$")
# How many names to try past copies we must not use (planted, or pruned by a tmp cleaner).
_NAMES = 8
# C headers are for building extensions; bytecode belongs to a Python package we never
# import from the copy.
_SKIP_DIRS = frozenset({Path("pginstall/include")})
_SKIP_NAMES = frozenset({"__pycache__"})


def runnable_binaries(binaries: Binaries, account: Account | None, base: Path) -> Binaries:
    """Binaries that ``account`` (None: ourselves) can run: ``binaries`` when it can reach
    them, else a root-owned copy of pgserver's bundle under ``base``."""
    if account is None:
        return binaries
    problem = cannot_run_as(account, binaries.bindir / "initdb")
    if problem is None:
        return binaries
    if binaries.pgserver_dir is None:
        raise EmbeddedPostgresError(
            f"Running as root, so PostgreSQL runs as the '{account.name}' account, which "
            f"cannot run {binaries.bindir / 'initdb'}: {problem}. Let that account read and "
            f"execute {binaries.bindir} and every folder above it, or install PostgreSQL "
            "from your system's packages."
        )
    root = bundle_copy(binaries.pgserver_dir, binaries.pgserver_version, base)
    bindir = root / binaries.pgserver_dir.name / binaries.bindir.relative_to(binaries.pgserver_dir)
    problem = cannot_run_as(account, bindir / "initdb")
    if problem is not None:
        raise EmbeddedPostgresError(
            f"Running as root, so PostgreSQL runs as the '{account.name}' account. It cannot "
            f"reach pgserver's binaries in {binaries.bindir}, nor the copy made for it in "
            f"{root}: {problem}. Is {base} mounted noexec?"
        )
    return dataclasses.replace(
        binaries,
        bindir=bindir,
        description=(
            f"PostgreSQL {binaries.version} (bundled pgserver "
            f"{binaries.pgserver_version or 'unknown version'}, copied to {root} for the "
            f"'{account.name}' account)"
        ),
    )


def bundle_copy(package_dir: Path, version: str | None, base: Path) -> Path:
    """A trusted copy of pgserver's package folder (and its ``.libs``) under ``base``,
    made if there is none; returns the folder holding both. Must run as root."""
    _check_base(base)
    try:
        files = _bundle_files(package_dir)
        expected = {rel: src.stat().st_size for rel, src in files.items()}
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot read pgserver's bundle: {exc}") from exc
    digest = hashlib.sha256(json.dumps(sorted(expected.items())).encode()).hexdigest()[:12]
    stem = _PREFIX + re.sub(r"[^A-Za-z0-9.]+", "_", version or "unknown") + "-" + digest
    _sweep_builds(base)
    reasons = []
    for name in [stem, *(f"{stem}-{n}" for n in range(1, _NAMES))]:
        final = base / name
        if not os.path.lexists(final):
            _publish(files, final)
        reason = _untrusted(final, expected)
        if reason is None:
            return final
        reasons.append(reason)
    raise EmbeddedPostgresError(
        "cannot make a trusted copy of pgserver's binaries: " + "; ".join(reasons)
    )


def _check_base(base: Path) -> None:
    # Everything rests on nobody but root being able to rename entries of `base`.
    try:
        st = os.stat(base)
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot use {base} for pgserver's binaries: {exc}") from exc
    world_writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if st.st_uid != 0 or (world_writable and not st.st_mode & stat.S_ISVTX):
        raise EmbeddedPostgresError(
            f"will not keep pgserver's binaries in {base}: others can rename its entries "
            f"(owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)})"
        )


def _bundle_files(package_dir: Path) -> dict[str, Path]:
    """Every file to copy, by its path relative to the copy's root."""
    sources = {package_dir.name: package_dir}
    libs = package_dir.with_name(package_dir.name + ".libs")
    if libs.is_dir():
        sources[libs.name] = libs
    files: dict[str, Path] = {}
    for dest, src in sources.items():
        # An unreadable folder must fail the copy, not silently shrink it.
        for dirpath, dirnames, filenames in os.walk(src, onerror=_raise):
            here = Path(dirpath)
            rel = here.relative_to(src)
            # Linked folders are not followed: a link to a parent would never end.
            dirnames[:] = [
                d
                for d in dirnames
                if d not in _SKIP_NAMES
                and rel / d not in _SKIP_DIRS
                and not (here / d).is_symlink()
            ]
            for name in filenames:
                path = here / name
                if path.is_file():  # follows links to files; drops dangling ones
                    files[str(Path(dest, rel, name))] = path
    if not files:
        raise EmbeddedPostgresError(f"no files to copy in {package_dir}")
    return files


def _raise(exc: OSError) -> None:
    raise exc


def _publish(files: dict[str, Path], final: Path) -> None:
    """Copy ``files`` into a fresh folder and rename it to ``final``, unless someone beat
    us to that name (then their entry is judged by the caller like any other)."""
    try:
        build = Path(
            tempfile.mkdtemp(prefix=f"{final.name}{_BUILD_MARK}{os.getpid()}-", dir=final.parent)
        )
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot copy pgserver's binaries to {final}: {exc}") from exc
    published = False
    try:
        for rel, src in files.items():
            dst = build / rel
            _make_dirs(build, dst.parent)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755 if src.stat().st_mode & 0o111 else 0o644)
        os.chmod(build, 0o755)
        try:
            os.rename(build, final)
            published = True
        except OSError as exc:
            # EEXIST/ENOTEMPTY: another process published first. ENOTDIR: someone put a
            # file or link there. Either way the caller judges what is at `final`.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot copy pgserver's binaries to {final}: {exc}") from exc
    finally:
        if not published:
            shutil.rmtree(build, ignore_errors=True)


def _make_dirs(top: Path, path: Path) -> None:
    # Explicit modes: mkdir honours the umask, and root's may be 077.
    missing = []
    while path != top and not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir()
        os.chmod(directory, 0o755)


def _untrusted(final: Path, expected: dict[str, int]) -> str | None:
    """Why the entry at ``final`` must not be run, or None if it is a sound copy."""
    found: dict[str, int] = {}
    pending = [(final, Path())]
    try:
        top = os.lstat(final)
        if not stat.S_ISDIR(top.st_mode):
            return f"{final} is not a folder"
        problem = _foreign(final, top)
        if problem:
            return problem
        while pending:
            folder, rel = pending.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    problem = _foreign(Path(entry.path), st)
                    if problem:
                        return problem
                    if stat.S_ISDIR(st.st_mode):
                        pending.append((Path(entry.path), rel / entry.name))
                    elif stat.S_ISREG(st.st_mode):
                        found[str(rel / entry.name)] = st.st_size
                    else:
                        return f"{entry.path} is neither a file nor a folder"
    except OSError as exc:
        return f"cannot inspect {final}: {exc}"
    if found != expected:
        return f"{final} does not hold the same files as the installed pgserver"
    return None


def _foreign(path: Path, st: os.stat_result) -> str | None:
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others"
    return None


def _sweep_builds(base: Path) -> None:
    """Remove unfinished builds whose builder died (a SIGKILL during the copy)."""
    for entry in base.glob(_PREFIX + "*" + _BUILD_MARK + "*"):
        match = _BUILD_RE.search(entry.name)
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        # Only root's own folders: anything else under this name is not ours to delete.
        if match is None or st.st_uid != 0 or not stat.S_ISDIR(st.st_mode):
            continue
        if not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
