"""A throwaway local PostgreSQL server for the demo, ``aqueue dev`` and the test suite.

Two sources of server binaries are supported:

* ``system``: an installed PostgreSQL (found via ``pg_config --bindir``, ``postgres`` on
  ``PATH`` or Debian's ``/usr/lib/postgresql/*/bin``). Preferred: fastest to start.
* ``pgserver``: the PostgreSQL build bundled in the optional ``pgserver`` wheel
  (``pip install 'aqueue[embedded]'``).

Both are run the same way: ``initdb`` into a fresh short directory under ``/tmp`` and then
``postgres`` as a direct child process listening only on a unix socket in that directory.
We deliberately do not use ``pg_ctl`` or pgserver's own server management: both detach
the server from this process, so a killed test run leaks servers, and pgserver cannot
pass server settings.

The package, one concept per module:

* ``discovery``: finding server binaries (system, pgserver);
* ``binary_cache``: as root, a root-owned copy of pgserver's bundle for the server's
  account, when that account cannot reach the virtualenv;
* ``process``: the child processes (accounts, parent-death signal, stale-folder sweep);
* ``server``: ``EmbeddedPostgres`` itself.

Example::

    with EmbeddedPostgres() as pg:
        conn = await asyncpg.connect(pg.url)
"""

from __future__ import annotations

from ..errors import EmbeddedPostgresError
from .discovery import find_system_binaries
from .server import EmbeddedPostgres

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "find_system_binaries"]
