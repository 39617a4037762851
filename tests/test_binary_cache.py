"""The root-owned copy of pgserver's bundle (aqueue.embedded.binary_cache), on real files.

A small bundle with pgserver's layout stands in for the 30 MB one, so these run in
milliseconds; test_embedded.py starts a real server from a real copy.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from aqueue.embedded import EmbeddedPostgresError, binary_cache
from aqueue.embedded.binary_cache import bundle_copy

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only root makes copies (to run the server as another account); "
    "a copy is trusted only when root owns it",
)

EXPECTED = {
    "pgserver/pginstall/bin/initdb",
    "pgserver/pginstall/lib/postgresql/plpgsql.so",
    "pgserver/pginstall/lib/libpq.so",
    "pgserver/pginstall/share/postgresql/postgres.bki",
    "pgserver/__init__.py",
    "pgserver.libs/libpq-1a2b.so.5",
}


def make_bundle(site: Path) -> Path:
    """pgserver's layout in site-packages, installed under a umask of 077."""
    package = site / "pgserver"
    files = {
        "pginstall/bin/initdb": "#!/bin/sh\necho 'initdb (PostgreSQL) 16.2'\n",
        "pginstall/lib/postgresql/plpgsql.so": "a library",
        "pginstall/share/postgresql/postgres.bki": "catalog",
        "pginstall/include/postgres.h": "a header",
        "__pycache__/__init__.cpython-311.pyc": "bytecode",
        "__init__.py": "",
    }
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o700 if rel.endswith("initdb") else 0o600)
    (package / "pginstall/lib/libpq.so").symlink_to("postgresql/plpgsql.so")
    (package / "pginstall/lib/dangling.so").symlink_to("missing.so")
    (package / "pginstall/share/loop").symlink_to("..")
    libs = site / "pgserver.libs"
    libs.mkdir()
    (libs / "libpq-1a2b.so.5").write_text("libpq")
    for folder in [package, *package.rglob("*"), libs]:
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(0o700)
    return package


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "site")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)  # like /tmp
    return folder


def files_in(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def entries(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir())


def snapshot(root: Path) -> list[tuple[str, int, int, int, int, int]]:
    """What a change to the tree would alter (not atime: inspecting a folder may bump it)."""
    found = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        found.append((str(path), st.st_ino, st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns))
    return sorted(found)


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def test_copy_mirrors_the_bundle_with_modes_of_its_own(bundle: Path, base: Path) -> None:
    copy = bundle_copy(bundle, "0.1.4", base)
    assert copy.parent == base and copy.name.startswith("aqueue-pgserver-0.1.4-")
    # No headers, no bytecode, no dangling link; a link to a file becomes a file, a link
    # to a folder is not followed.
    assert files_in(copy) == EXPECTED
    assert (copy / "pgserver/pginstall/lib/libpq.so").read_text() == "a library"
    for path in [copy, *copy.rglob("*")]:
        st = path.lstat()
        assert st.st_uid == 0, path
        assert not stat.S_ISLNK(st.st_mode), path
        want = 0o755 if path.is_dir() or path.name == "initdb" else 0o644
        assert stat.S_IMODE(st.st_mode) == want, path
    initdb = copy / "pgserver/pginstall/bin/initdb"
    out = subprocess.run([str(initdb)], capture_output=True, text=True, check=True).stdout
    assert out == "initdb (PostgreSQL) 16.2\n"


def test_an_existing_copy_is_reused(bundle: Path, base: Path) -> None:
    first = bundle_copy(bundle, "0.1.4", base)
    inode = first.stat().st_ino
    assert bundle_copy(bundle, "0.1.4", base) == first
    assert first.stat().st_ino == inode
    assert entries(base) == [first.name]


def test_racing_builders_publish_one_copy(bundle: Path, base: Path) -> None:
    racers = 4
    barrier = threading.Barrier(racers)
    results: list[Path] = []
    errors: list[BaseException] = []

    def race() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(bundle_copy(bundle, "0.1.4", base))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(results) == racers and len(set(results)) == 1
    # The losers threw their builds away.
    assert entries(base) == [results[0].name]
    assert files_in(results[0]) == EXPECTED


def test_losing_the_race_keeps_the_winners_copy(bundle: Path, base: Path) -> None:
    # What a racer that finishes second does: its rename fails on the winner's copy.
    winner = bundle_copy(bundle, "0.1.4", base)
    inode = winner.stat().st_ino
    binary_cache._publish(binary_cache._bundle_files(bundle), winner)
    assert winner.stat().st_ino == inode
    assert entries(base) == [winner.name]


def _owned_by_nobody(copy: Path) -> None:
    os.chown(copy, nobody(), -1)


def _group_writable_file(copy: Path) -> None:
    (copy / "pgserver/pginstall/bin/initdb").chmod(0o775)


def _file_missing(copy: Path) -> None:
    # What an age-based tmp cleaner does to files nobody read for days.
    (copy / "pgserver/pginstall/share/postgresql/postgres.bki").unlink()


def _file_added(copy: Path) -> None:
    (copy / "pgserver/pginstall/bin/extra").write_text("?")


def _binary_swapped_for_a_link(copy: Path) -> None:
    initdb = copy / "pgserver/pginstall/bin/initdb"
    initdb.unlink()
    initdb.symlink_to("/bin/sh")


def _folder_swapped_for_a_link(copy: Path) -> None:
    elsewhere = copy.with_name("elsewhere")
    copy.rename(elsewhere)
    copy.symlink_to(elsewhere)


@pytest.mark.parametrize(
    "tamper",
    [
        _owned_by_nobody,
        _group_writable_file,
        _file_missing,
        _file_added,
        _binary_swapped_for_a_link,
        _folder_swapped_for_a_link,
    ],
)
def test_a_copy_that_fails_the_check_is_neither_used_nor_touched(
    bundle: Path, base: Path, tamper: Callable[[Path], None]
) -> None:
    first = bundle_copy(bundle, "0.1.4", base)
    tamper(first)
    before = snapshot(first)
    second = bundle_copy(bundle, "0.1.4", base)
    assert second == first.with_name(first.name + "-1")
    assert files_in(second) == EXPECTED
    assert snapshot(first) == before


def test_a_folder_planted_under_the_name_is_not_used(bundle: Path, base: Path) -> None:
    name = bundle_copy(bundle, "0.1.4", base / "..").name  # learn the name elsewhere
    planted = base / name
    (planted / "pgserver/pginstall/bin").mkdir(parents=True)
    os.chown(planted, nobody(), -1)
    assert bundle_copy(bundle, "0.1.4", base) == base / (name + "-1")
    assert planted.stat().st_uid == nobody()


def test_a_changed_bundle_gets_a_copy_of_its_own(bundle: Path, base: Path) -> None:
    first = bundle_copy(bundle, "0.1.4", base)
    with (bundle / "pginstall/bin/initdb").open("a") as f:
        f.write("# rebuilt\n")
    second = bundle_copy(bundle, "0.1.4", base)
    assert second != first and second.name.startswith("aqueue-pgserver-0.1.4-")
    assert "rebuilt" in (second / "pgserver/pginstall/bin/initdb").read_text()
    assert "rebuilt" not in (first / "pgserver/pginstall/bin/initdb").read_text()


def test_a_base_where_others_can_rename_entries_is_refused(bundle: Path, base: Path) -> None:
    base.chmod(0o777)  # world-writable without the sticky bit
    with pytest.raises(EmbeddedPostgresError, match="others can rename its entries"):
        bundle_copy(bundle, "0.1.4", base)
    assert entries(base) == []


def test_unfinished_builds_of_dead_builders_are_swept(bundle: Path, base: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid names no process now
    dead = base / f"aqueue-pgserver-0.1.4-abc.build-{proc.pid}-x"
    alive = base / f"aqueue-pgserver-0.1.4-abc.build-{os.getpid()}-y"
    foreign = base / f"aqueue-pgserver-0.1.4-abc.build-{proc.pid}-z"
    for folder in (dead, alive, foreign):
        folder.mkdir()
        (folder / "half-copied").write_text("")
    os.chown(foreign, nobody(), -1)
    copy = bundle_copy(bundle, "0.1.4", base)
    assert entries(base) == sorted([alive.name, foreign.name, copy.name])
