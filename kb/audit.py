"""AuditLog: who changed keys or ran admin actions, what and when, in the auth SQLite file."""
from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from kb.errors import BadRequest, StoreUnavailable
from kb.side_store import SideStoreHealth
from kb.sqlite_setup import prepare_wal, reopen_after

log = logging.getLogger("kb.audit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,                   -- ISO 8601 UTC
    actor TEXT NOT NULL,                -- 'key:<name>', 'user:<proxy user>', 'cli:<os user>'
    action TEXT NOT NULL,               -- key.create, key.revoke, admin.reindex, signin, ...
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'   -- JSON; never a secret, never customer text
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
"""


class AuditLog:
    """Append-only; one connection under a lock, WAL so `kb keys` and the service write the same file.

    An entry that cannot be stored (read-only file, full disk) never fails the action it records: it goes to the
    service log instead, one line each (actions are rare: sign-ins, key changes, admin jobs), and `health` says once
    that the file cannot be written, and once more when it is written again.
    """

    def __init__(self, path: Path, timeout: float = 10.0):
        self.path, self.timeout = Path(path), timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.health = SideStoreHealth("audit", self.path, "KB_AUTH_DB", log,
                                      "each audit entry is written to the service log instead")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
            conn.row_factory = sqlite3.Row
            try:
                prepare_wal(conn, SCHEMA, self.timeout)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def record(self, actor: str, action: str, target: str = "", **detail) -> None:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        entry = (at, actor, action, target, json.dumps(detail, sort_keys=True))
        with self._lock:
            for fresh in (self._conn is None, True):  # a kept connection may be stale (opened read-only): once more
                try:
                    self._db().execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                                       entry)
                    break
                except (sqlite3.Error, OSError) as exc:
                    if self._conn is not None and reopen_after(exc):
                        with contextlib.suppress(sqlite3.Error):
                            self._conn.close()
                        self._conn = None
                    if fresh or not reopen_after(exc):
                        self.health.failed(exc)
                        log.warning("audit entry not stored, logged here instead: at=%s actor=%s action=%s "
                                    "target=%s detail=%s", *entry)
                        return
        self.health.succeeded()

    def recent(self, limit: int = 100) -> list[dict]:
        """The latest `limit` (1..10000) entries, newest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise BadRequest(f"limit must be an integer from 1 to 10000, got {limit!r}")
        with self._lock:
            try:
                rows = self._db().execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"the audit log cannot be read right now ({type(exc).__name__}: {exc}); "
                                       f"the operator should check KB_AUTH_DB={self.path}", store="audit") from None
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
