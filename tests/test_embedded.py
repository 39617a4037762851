"""Tests for aqueue.embedded against real PostgreSQL servers (no mocks).

Each test starts its own throwaway server (~1 s): this file must not depend on the
session fixtures in conftest.py, since those are built on top of this module.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from aqueue.embedded import EmbeddedPostgres, EmbeddedPostgresError, find_system_binaries
from aqueue.embedded.discovery import pgserver_bindir, system_bindir
from aqueue.embedded.process import pid_alive, server_account
from tests.embedded_support import (
    children_of,
    created_by_us,
    execute,
    fetchval,
    process_uid,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

requires_system = pytest.mark.skipif(
    find_system_binaries() is None, reason="no system PostgreSQL server binaries"
)


def spawner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aqueue-pg-spawner"]


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    if find_system_binaries() is None:
        pytest.skip("no system PostgreSQL server binaries")
    server = EmbeddedPostgres(source="system")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------ system source


@requires_system
def test_find_system_binaries_returns_a_server_bindir() -> None:
    bindir = find_system_binaries()
    assert bindir is not None
    assert (bindir / "postgres").is_file()
    assert (bindir / "initdb").is_file()


@requires_system
def test_start_query_stop() -> None:
    pg = EmbeddedPostgres(source="system")
    pg.start()
    try:
        pid, root = pg.pid, pg.socket_dir
        assert pid is not None and root is not None
        assert len(str(root / ".s.PGSQL.5432")) <= 107
        assert pg.url.startswith("postgresql://postgres@/postgres?host=/tmp/aqpg-")
        assert pg.url.endswith("&port=5432")
        assert fetchval(pg.url, "SELECT 40 + 2") == 42
        assert fetchval(pg.url, "SELECT current_user") == "postgres"
        server_version = fetchval(pg.url, "SHOW server_version")
        assert isinstance(server_version, str) and server_version.startswith(pg.version)
        assert pg.source_description.startswith(f"PostgreSQL {pg.version} (system binaries in ")
        assert fetchval(pg.url, "SHOW listen_addresses") == ""
        if os.geteuid() == 0:
            # PostgreSQL refuses root; the server must run as an unprivileged account.
            assert process_uid(pid) != 0
    finally:
        pg.stop()
    assert pg.pid is None
    assert not root.exists()
    # stop() waits for the postmaster, which takes its backends down with it.
    assert not pid_alive(pid)


@requires_system
def test_start_is_idempotent(pg: EmbeddedPostgres) -> None:
    url, pid = pg.url, pg.pid
    pg.start()
    assert (pg.url, pg.pid) == (url, pid)


def test_stop_before_start_and_twice() -> None:
    pg = EmbeddedPostgres()
    pg.stop()
    pg.stop()
    with pytest.raises(EmbeddedPostgresError):
        _ = pg.url


@requires_system
def test_stop_twice_after_start() -> None:
    pg = EmbeddedPostgres(source="system")
    pg.start()
    root = pg.socket_dir
    assert root is not None
    pg.stop()
    pg.stop()
    assert not root.exists()


@requires_system
def test_context_manager() -> None:
    with EmbeddedPostgres(source="system") as pg:
        root, pid = pg.socket_dir, pg.pid
        assert root is not None and pid is not None
        assert fetchval(pg.url, "SELECT 1") == 1
    assert not root.exists()
    assert not pid_alive(pid)


@requires_system
def test_listen_notify_over_unix_socket(pg: EmbeddedPostgres) -> None:
    async def run() -> str:
        listener = await asyncpg.connect(pg.url)
        notifier = await asyncpg.connect(pg.url)
        try:
            received: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def on_notify(conn: object, pid: int, channel: str, payload: object) -> None:
                if not received.done():
                    received.set_result(f"{channel}:{payload}")

            await listener.add_listener("aq_test", on_notify)
            await notifier.execute("SELECT pg_notify('aq_test', 'hello')")
            return await asyncio.wait_for(received, timeout=10)
        finally:
            await notifier.close()
            await listener.close()

    assert asyncio.run(run()) == "aq_test:hello"


@requires_system
def test_create_database_with_quoting_and_template(pg: EmbeddedPostgres) -> None:
    tmpl_url = pg.create_database("tmpl")
    execute(tmpl_url, "CREATE TABLE marker (x int); INSERT INTO marker VALUES (7)")
    odd = 'odd "name" with spaces/and?chars'
    url = pg.create_database(odd, template="tmpl")
    assert fetchval(url, "SELECT current_database()") == odd
    assert fetchval(url, "SELECT x FROM marker") == 7
    with pytest.raises(asyncpg.DuplicateDatabaseError):
        pg.create_database("tmpl")


@requires_system
def test_create_database_inside_running_event_loop(pg: EmbeddedPostgres) -> None:
    # The other modules call it from async fixtures; it must not need (or clash with) a loop.
    async def run() -> str:
        return pg.create_database("from_async")

    url = asyncio.run(run())
    assert fetchval(url, "SELECT current_database()") == "from_async"


@requires_system
def test_restart_keeps_url_and_data(pg: EmbeddedPostgres) -> None:
    url, old_pid = pg.url, pg.pid
    execute(url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2)")
    pg.restart()
    assert pg.url == url
    assert pg.pid != old_pid
    assert old_pid is not None and not pid_alive(old_pid)
    assert fetchval(url, "SELECT sum(x) FROM kept") == 3


@requires_system
def test_restart_after_server_was_killed(pg: EmbeddedPostgres) -> None:
    # Fault injection: the postmaster dies hard, orphaned backends linger briefly.
    url, pid = pg.url, pg.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="killed postmaster to exit")
    pg.restart()
    assert pg.url == url
    assert fetchval(url, "SELECT 1") == 1


@requires_system
def test_start_relaunches_a_dead_server_on_the_same_directory(pg: EmbeddedPostgres) -> None:
    url, pid = pg.url, pg.pid
    execute(url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (5)")
    # Commits are asynchronous by default; a checkpoint makes them survive SIGKILL.
    execute(url, "CHECKPOINT")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="killed postmaster to exit")
    pg.start()
    assert pg.url == url
    assert fetchval(url, "SELECT x FROM kept") == 5


@requires_system
def test_settings_are_applied_and_override_defaults() -> None:
    settings = {"work_mem": "12MB", "max_connections": "50", "application_name": "aq test"}
    with EmbeddedPostgres(source="system", settings=settings) as pg:
        assert fetchval(pg.url, "SHOW work_mem") == "12MB"
        assert fetchval(pg.url, "SHOW max_connections") == "50"


@requires_system
def test_non_durable_by_default(pg: EmbeddedPostgres) -> None:
    assert fetchval(pg.url, "SHOW fsync") == "off"
    assert fetchval(pg.url, "SHOW synchronous_commit") == "off"
    assert fetchval(pg.url, "SHOW full_page_writes") == "off"
    assert fetchval(pg.url, "SHOW max_connections") == "200"


@requires_system
def test_durable_keeps_postgres_defaults() -> None:
    with EmbeddedPostgres(source="system", durable=True) as pg:
        assert fetchval(pg.url, "SHOW fsync") == "on"
        assert fetchval(pg.url, "SHOW synchronous_commit") == "on"
        assert fetchval(pg.url, "SHOW full_page_writes") == "on"


@requires_system
def test_failed_start_reports_server_log_and_cleans_up() -> None:
    before = set(Path("/tmp").glob("aqpg-*"))
    threads_before = spawner_threads()
    pg = EmbeddedPostgres(source="system", settings={"no_such_setting": "1"})
    with pytest.raises(EmbeddedPostgresError, match="no_such_setting"):
        pg.start()
    assert pg.socket_dir is None
    assert spawner_threads() == threads_before
    assert not [d for d in set(Path("/tmp").glob("aqpg-*")) - before if created_by_us(d)]


@requires_system
def test_server_outlives_the_thread_that_started_it() -> None:
    # The parent-death signal is tied to the forking thread; asyncio.to_thread(pg.start)
    # must not lose the server when the executor's worker thread exits.
    pg = EmbeddedPostgres(source="system")
    native_id: list[int | None] = []

    def starter() -> None:
        native_id.append(threading.get_native_id())
        pg.start()

    thread = threading.Thread(target=starter)
    thread.start()
    thread.join()
    try:
        task = Path(f"/proc/self/task/{native_id[0]}")
        wait_until(lambda: not task.exists(), what="starter thread to exit")
        pid = pg.pid
        assert pid is not None and pid_alive(pid)
        assert fetchval(pg.url, "SELECT 1") == 1
    finally:
        pg.stop()


@requires_system
def test_spawner_thread_lives_from_start_to_stop() -> None:
    # The thread that forks the server is the instance's, not the module's: none before
    # start(), one per running server, none left after stop().
    before = spawner_threads()
    first = EmbeddedPostgres(source="system")
    second = EmbeddedPostgres(source="system")
    first.start()
    try:
        second.start()
        try:
            assert len(spawner_threads()) == len(before) + 2
            first.stop()
            assert len(spawner_threads()) == len(before) + 1
            # The thread that forked `second` is not the one that just exited.
            pid = second.pid
            assert pid is not None and pid_alive(pid)
            assert fetchval(second.url, "SELECT 1") == 1
        finally:
            second.stop()
    finally:
        first.stop()
    assert spawner_threads() == before


@requires_system
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only"
)
def test_killed_parent_does_not_leak_the_server() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from aqueue.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres(source="system")
        pg.start()
        print(pg.pid, pg.socket_dir, flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "child failed to start a server"
        pid_text, root_text = line.split()
        pid, root = int(pid_text), Path(root_text)
        backends = children_of(pid)
        assert backends, "expected postgres auxiliary processes"
        assert pid_alive(pid)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()
    wait_until(
        lambda: not any(pid_alive(p) for p in [pid, *backends]),
        what="postgres processes of the killed parent to exit",
    )
    # The directory is left behind; the next start sweeps it since nobody owns it.
    assert root.exists()
    with EmbeddedPostgres(source="system"):
        assert not root.exists()


# ---------------------------------------------------------------------- pgserver source


@pytest.mark.skipif(pgserver_bindir() is None, reason="pgserver is not installed")
def test_pgserver_source() -> None:
    with EmbeddedPostgres(source="pgserver", settings={"work_mem": "9MB"}) as pg:
        assert "bundled pgserver" in pg.source_description
        server_version = fetchval(pg.url, "SHOW server_version")
        assert isinstance(server_version, str) and server_version.startswith(pg.version)
        assert fetchval(pg.url, "SHOW work_mem") == "9MB"
        assert fetchval(pg.url, "SHOW fsync") == "off"
        url = pg.create_database("pgs")
        assert fetchval(url, "SELECT current_database()") == "pgs"
        root = pg.socket_dir
    assert root is not None and not root.exists()


# ------------------------------------------------------- as root, binaries out of reach


def private_folder(tmp_path: Path) -> Path:
    """A 0700 folder, like root's home or a ``mktemp -d`` clone."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    return folder


def run_as_server_account(exe: Path) -> None:
    account = server_account()
    assert account is not None
    subprocess.run(
        [str(exe), "--version"],
        capture_output=True,
        check=True,
        user=account.uid,
        group=account.gid,
        extra_groups=[],
    )


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another account")
@pytest.mark.skipif(pgserver_bindir() is None, reason="pgserver is not installed")
def test_pgserver_in_a_private_folder_runs_from_a_root_owned_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bug: a fresh clone in a 0700 folder put pgserver's binaries where the
    # 'postgres'/'nobody' account cannot go, and initdb failed with EACCES.
    installed = pgserver_bindir()
    assert installed is not None
    site = private_folder(tmp_path)
    for folder in (installed.parents[1], installed.parents[2] / "pgserver.libs"):
        if folder.is_dir():
            shutil.copytree(folder, site / folder.name, copy_function=link_or_copy)
    folders = [site, *site.parents]
    modes = [p.stat().st_mode for p in folders]
    monkeypatch.syspath_prepend(str(site))
    bindir = pgserver_bindir()
    assert bindir == site / "pgserver" / "pginstall" / "bin"
    with pytest.raises(PermissionError):
        run_as_server_account(bindir / "initdb")

    with EmbeddedPostgres(source="pgserver") as pg:
        assert fetchval(pg.url, "SELECT 1") == 1
        pid = pg.pid
        assert pid is not None and process_uid(pid) != 0
        exe = Path(os.readlink(f"/proc/{pid}/exe"))
        assert site not in exe.parents
        copy = exe.parents[3]
        assert copy.parent == Path("/tmp") and copy.name.startswith("aqueue-pgserver-")
        assert f"copied to {copy}" in pg.source_description
        for path in [copy, *copy.rglob("*")]:
            st = path.lstat()
            assert st.st_uid == 0 and not st.st_mode & 0o022, path
        url = pg.create_database("private")
        assert fetchval(url, "SELECT current_database()") == "private"
    # The user's folders are as they were.
    assert [p.stat().st_mode for p in folders] == modes


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another account")
@requires_system
def test_system_binaries_out_of_the_accounts_reach_fail_clearly(tmp_path: Path) -> None:
    # Only pgserver's bundle is copied: a server built into a private folder is the
    # user's to fix, and the error must say what to do before anything is created.
    system = find_system_binaries()
    assert system is not None
    bindir = private_folder(tmp_path)
    for exe in ("postgres", "initdb"):
        shutil.copy2(system / exe, bindir / exe)
    before = set(Path("/tmp").glob("aqpg-*"))
    pg = EmbeddedPostgres(source="system", _search_path=str(bindir))
    with pytest.raises(EmbeddedPostgresError, match=r"cannot run .*initdb.*every folder above"):
        pg.start()
    assert not [d for d in set(Path("/tmp").glob("aqpg-*")) - before if created_by_us(d)]


# ------------------------------------------------------------------ nothing available


@pytest.fixture
def no_pgserver(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes the import system report the package as not installed.
    monkeypatch.setitem(sys.modules, "pgserver", None)


@pytest.mark.usefixtures("no_pgserver")
def test_neither_source_available_explains_how_to_get_one(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(_search_path=str(tmp_path))
    with pytest.raises(EmbeddedPostgresError) as excinfo:
        pg.start()
    message = str(excinfo.value)
    assert "apt-get install postgresql" in message
    assert "pip install 'aqueue[embedded]'" in message
    pg.stop()


@pytest.mark.usefixtures("no_pgserver")
def test_explicit_sources_explain_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="apt-get install postgresql"):
        EmbeddedPostgres(source="system", _search_path=str(tmp_path)).start()
    with pytest.raises(EmbeddedPostgresError, match=r"pip install 'aqueue\[embedded\]'"):
        EmbeddedPostgres(source="pgserver").start()


def test_pg_config_without_server_is_not_enough(tmp_path: Path) -> None:
    # Client packages ship pg_config; it must not be mistaken for a server install.
    fake_bindir = tmp_path / "clientonly"
    fake_bindir.mkdir()
    pg_config = tmp_path / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {fake_bindir}\n")
    pg_config.chmod(0o755)
    assert system_bindir(str(tmp_path), ()) is None
