"""IndexVersion: one opened index version, the users it has, and the files it releases when it is replaced."""
from __future__ import annotations

import sqlite3
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import faiss

from kb.errors import IndexNotFound

META = "meta.sqlite"


@dataclass
class IndexVersion:
    """One opened, read-only index version: manifest, FAISS vectors and the SQLite metadata.

    Its open files (a SQLite connection per thread that asked, the lease on the manifest) are released by
    `close()`; a service counts the users of a version (`acquire` / `release`) and `retire`s it when another
    version replaces it, so that it closes when its last request finishes, not when the garbage collector runs.
    FAISS holds no file: the vectors are read into memory on open.
    """

    path: Path
    manifest: dict
    vectors: faiss.Index
    sealed: bool = False  # the manifest carries checksums (versions written before them do not)
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _lease: object = field(default=None, repr=False)  # shared flock on the manifest until closed
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _conns: list = field(default_factory=list, repr=False)  # every thread's connection, to close them all
    _users: int = field(default=0, repr=False)
    _retired: bool = field(default=False, repr=False)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self._lease is not None:
            weakref.finalize(self, self._lease.close)  # a version never closed still lets go when it is garbage

    def __enter__(self) -> IndexVersion:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def closed(self) -> bool:
        return self._closed

    def db(self) -> sqlite3.Connection:
        """A read-only connection for the calling thread (SQLite connections are not shared across threads)."""
        if self._closed:
            raise IndexNotFound(f"index version {self.build_id} was replaced and closed; ask again")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"file:{self.path / META}?mode=ro&immutable=1"
            with self._guard:
                if self._closed:
                    raise IndexNotFound(f"index version {self.build_id} was replaced and closed; ask again")
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def acquire(self) -> bool:
        """Count one more user (a request); False when the version is already closed (take the new one)."""
        with self._guard:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        """One user finished; the last one to leave a retired version closes it."""
        with self._guard:
            self._users -= 1
            handles = self._shut() if self._retired and self._users <= 0 else None
        self._let_go(handles)

    def retire(self) -> None:
        """No longer in service: close now if nobody uses it, else when the last user releases it."""
        with self._guard:
            self._retired = True
            handles = self._shut() if self._users <= 0 else None
        self._let_go(handles)

    def close(self) -> None:
        """Close every SQLite connection and give up the lease (prune may then delete the folder). Idempotent."""
        with self._guard:
            handles = self._shut()
        self._let_go(handles)

    def _shut(self) -> list | None:
        if self._closed:
            return None
        self._closed = True
        handles, self._conns = self._conns, []
        return handles + ([self._lease] if self._lease is not None else [])

    @staticmethod
    def _let_go(handles: list | None) -> None:
        for handle in handles or ():
            handle.close()
