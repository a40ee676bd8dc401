"""Database: the side stores' one small data layer, a SQLite file by default or PostgreSQL (KB_DATABASE_URL).

Each store keeps its own tables and SQL in its own module, written once with `?` placeholders and SQL that both
engines read (ON CONFLICT, RETURNING, row values); where the engines differ (column types, WITHOUT ROWID) its
schema names one script per engine. `KeptConnection` is what every store shares: one connection under a lock,
opened on first use, its schema migrated (kb/migrations.py), reopened after a fault, and never the cause of a
failed search: the store decides what a failure means for its own routes (kb/side_store.py).

psycopg 3 talks to PostgreSQL; it is imported only when a PostgreSQL URL is used (it costs 0.2 s to import).
"""
from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kb.migrations import Schema, SchemaError, migrate
from kb.sqlite_setup import reopen_after

T = TypeVar("T")
URL_SCHEMES = ("postgresql://", "postgres://")
RECONNECT_SECONDS = 5.0  # after a failed connection attempt, others fail at once for this long (no wait per request)

# Which SQLite file each store lives in without KB_DATABASE_URL: (settings field, its environment variable).
SQLITE_FILES = {"keys": ("auth_db", "KB_AUTH_DB"), "audit": ("auth_db", "KB_AUTH_DB"),
                "feedback": ("feedback_db", "KB_FEEDBACK_DB"), "usage": ("usage_db", "KB_USAGE_DB"),
                "webhooks": ("webhook_db", "KB_WEBHOOK_DB"), "analytics": ("analytics_db", "KB_ANALYTICS_DB")}


def redact_url(url: str) -> str:
    """A PostgreSQL URL without its password (in the netloc or as a parameter): for logs and messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in credentials and credentials.split(":", 1)[1] else f"{user}@{host}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Row(tuple):
    """A PostgreSQL row read by position or by column name, as sqlite3.Row is (and `dict(row)` works)."""

    def __new__(cls, values: Iterable[Any], index: dict[str, int]):
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key):  # type: ignore[override]
        return tuple.__getitem__(self, self._index[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Iterable[Any]], Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


@functools.lru_cache(maxsize=512)
def _postgres_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled); the stores' SQL has no `?` inside a string."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """One open connection of either engine: `execute`, `executemany` and `transaction` take the same SQL."""

    def __init__(self, raw: Any, engine: str):
        self.raw, self.engine = raw, engine

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        if self.engine == "sqlite":
            return self.raw.execute(sql, tuple(params))
        return self.raw.execute(_postgres_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        if self.engine == "sqlite":
            self.raw.executemany(sql, rows)
        else:
            with self.raw.cursor() as cursor:
                cursor.executemany(_postgres_sql(sql), list(rows))

    @contextlib.contextmanager
    def transaction(self, write: bool = False, snapshot: bool = False) -> Iterator["Connection"]:
        """BEGIN ... COMMIT (ROLLBACK on an error). `write`: take SQLite's write lock first (BEGIN IMMEDIATE, so the
        busy timeout applies instead of a refused lock upgrade); `snapshot`: every read of the block sees one moment
        (PostgreSQL's REPEATABLE READ; a SQLite transaction always does)."""
        if self.engine == "sqlite":
            begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        else:
            begin = "BEGIN ISOLATION LEVEL REPEATABLE READ" if snapshot else "BEGIN"
        self.raw.execute(begin)
        try:
            yield self
        except BaseException:
            with contextlib.suppress(Exception):
                self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()


@dataclass
class Database:
    """Where a side store's tables live: a SQLite file (`target` is its path) or a PostgreSQL database (a URL)."""

    engine: str                   # "sqlite" | "postgres"
    target: str                   # file path or URL
    setting: str                  # the environment variable that names it, for messages
    timeout: float = 10.0         # SQLite's busy timeout; PostgreSQL's connect and statement timeouts
    reconnect_seconds: float = RECONNECT_SECONDS
    _failed_at: float = field(default=0.0, repr=False)
    _failure: BaseException | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def sqlite(cls, path: Path | str, setting: str, timeout: float = 10.0) -> "Database":
        return cls("sqlite", str(path), setting, timeout)

    @classmethod
    def postgres(cls, url: str, timeout: float = 10.0) -> "Database":
        if not url.startswith(URL_SCHEMES):
            raise ValueError(f"KB_DATABASE_URL must start with postgresql://, got {redact_url(url)!r}")
        return cls("postgres", url, "KB_DATABASE_URL", timeout)

    @property
    def where(self) -> str:
        """What a log line names: the file, or the URL without its password."""
        return self.target if self.engine == "sqlite" else redact_url(self.target)

    @property
    def path(self) -> Path:
        """The SQLite file (engine "sqlite" only)."""
        return Path(self.target)

    @functools.cached_property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a failing database raises (caught by the stores: a fault, never a crash)."""
        if self.engine == "sqlite":
            return (sqlite3.Error, OSError, SchemaError)
        import psycopg

        return (psycopg.Error, OSError, SchemaError)

    @functools.cached_property
    def integrity_errors(self) -> tuple[type[BaseException], ...]:
        if self.engine == "sqlite":
            return (sqlite3.IntegrityError,)
        import psycopg

        return (psycopg.IntegrityError,)

    def exists(self) -> bool:
        """Is there anything to read? (Reading never creates a SQLite file.)"""
        return self.engine == "postgres" or self.path.is_file()

    def missing_table(self, exc: BaseException) -> bool:
        """Did a read fail only because the store's tables do not exist yet?"""
        if self.engine == "sqlite":
            return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table")
        import psycopg.errors

        return isinstance(exc, psycopg.errors.UndefinedTable)

    def stale(self, conn: Connection, exc: BaseException) -> bool:
        """Should `conn`, which raised `exc`, be closed and opened again next time? (A lost server; a read-only
        session, which a new connection may not be once the database is writable again, as SQLite's READONLY.)"""
        if self.engine == "sqlite":
            return reopen_after(exc)
        import psycopg
        import psycopg.errors

        return bool(conn.raw.closed or conn.raw.broken or isinstance(exc, (
            psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)))

    def connect(self, synchronous: str = "NORMAL") -> Connection:
        """A new connection (autocommit: each statement on its own unless in `transaction()`). `synchronous` is
        SQLite's setting, applied by the migration; on PostgreSQL, NORMAL commits without waiting for the WAL flush
        (synchronous_commit off: a crash of the server may lose the last fraction of a second of writes, never
        consistency, as SQLite's NORMAL in WAL mode may lose the last ones on power loss) and FULL waits for it."""
        if self.engine == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            raw = sqlite3.connect(self.target, timeout=self.timeout, check_same_thread=False, isolation_level=None)
            raw.row_factory = sqlite3.Row
            return Connection(raw, "sqlite")
        return Connection(self._connect_postgres(synchronous), "postgres")

    def _connect_postgres(self, synchronous: str) -> Any:
        """A PostgreSQL connection; after a failed attempt, the same error again for RECONNECT_SECONDS without trying,
        so that an unreachable server costs the requests that need it no wait each."""
        import psycopg

        with self._lock:
            if self._failure is not None and time.monotonic() - self._failed_at < self.reconnect_seconds:
                raise type(self._failure)(f"{self._failure} (not tried again for {self.reconnect_seconds:g} s)")
        try:
            raw = psycopg.connect(self.target, autocommit=True, row_factory=_row_factory,
                                  connect_timeout=max(1, round(self.timeout)))
            ms = int(self.timeout * 1000)
            raw.execute(f"SET statement_timeout = {ms}")
            raw.execute(f"SET lock_timeout = {ms}")
            raw.execute(f"SET synchronous_commit = {'on' if synchronous.upper() == 'FULL' else 'off'}")
        except psycopg.Error as exc:
            with self._lock:
                self._failure, self._failed_at = exc, time.monotonic()
            raise
        with self._lock:
            self._failure = None
        return raw


def side_database(settings: Any, store: str) -> Database:
    """The database of one side store: KB_DATABASE_URL when set, else the store's own SQLite file."""
    if settings.database_url:
        return Database.postgres(settings.database_url)
    field_name, env = SQLITE_FILES[store]
    return Database.sqlite(getattr(settings, field_name), env)


def as_database(where: "Database | Path | str", setting: str, timeout: float) -> Database:
    """A store's argument: a Database, or the path of a SQLite file (as every store took before KB_DATABASE_URL)."""
    if isinstance(where, Database):
        return where
    return Database.sqlite(where, setting, timeout)


class KeptConnection:
    """A store's one connection, used under a lock by the threads of this process.

    `read(fn, empty)` and `write(fn)` run `fn(connection)`. A read of a store with nothing in it yet (no SQLite file,
    no tables) gives `empty` and creates nothing; a write migrates the schema first. A connection that failed in a
    way it cannot recover from (opened read-only, I/O error, a lost server) is closed and opened again on the next
    call, and a write that met such a stale kept connection is tried once more on a fresh one. Errors are the
    database's (`database.errors`): each store turns them into its own behaviour.
    """

    def __init__(self, database: Database, schema: Schema, synchronous: str = "NORMAL"):
        self.database, self.schema, self.synchronous = database, schema, synchronous
        self.lock = threading.Lock()
        self._conn: Connection | None = None
        self._ready = False  # the schema is migrated

    def _open(self, write: bool) -> Connection | None:
        """The kept connection (call with the lock held): None for a read when there is nothing to read; migrated
        first for a write (a read migrates when it can, and reads on when it cannot: a read-only file or database)."""
        if self._conn is None:
            if not write and not self.database.exists():
                return None
            self._conn, self._ready = self.database.connect(self.synchronous), False
        if not self._ready:
            try:
                migrate(self._conn, self.schema, self.database.timeout, self.synchronous)
                self._ready = True
            except self.database.errors:
                if write:
                    raise
        return self._conn

    def drop(self, exc: BaseException) -> None:
        """Close the kept connection when `exc` says it cannot recover by itself (call with the lock held)."""
        if self._conn is not None and self.database.stale(self._conn, exc):
            self._conn.close()
            self._conn, self._ready = None, False

    def read(self, fn: Callable[[Connection], T], empty: T) -> T:
        return self._run(fn, write=False, empty=empty)

    def write(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=True, empty=None)

    def _run(self, fn: Callable[[Connection], T], write: bool, empty: Any) -> Any:
        with self.lock:
            for fresh in (self._conn is None, True):  # a kept connection may be stale (read-only, lost): once more
                try:
                    conn = self._open(write)
                    return empty if conn is None else fn(conn)
                except self.database.errors as exc:
                    if isinstance(exc, self.database.integrity_errors):
                        raise
                    if not write and self.database.missing_table(exc):
                        return empty
                    stale = self._conn is not None and self.database.stale(self._conn, exc)
                    self.drop(exc)
                    if fresh or not stale:
                        raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn, self._ready = None, False
