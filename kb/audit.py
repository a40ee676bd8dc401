"""AuditLog: who changed keys or ran admin actions, what and when, in the auth SQLite file."""
from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from kb.errors import BadRequest
from kb.sqlite_setup import prepare_wal

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
    """Append-only; one connection under a lock, WAL so `kb keys` and the service write the same file."""

    def __init__(self, path: Path, timeout: float = 10.0):
        self.path, self.timeout = Path(path), timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
            conn.row_factory = sqlite3.Row
            prepare_wal(conn, SCHEMA, self.timeout)
            self._conn = conn
        return self._conn

    def record(self, actor: str, action: str, target: str = "", **detail) -> None:
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            self._db().execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                               (at, actor, action, target, json.dumps(detail, sort_keys=True)))

    def recent(self, limit: int = 100) -> list[dict]:
        """The latest `limit` (1..10000) entries, newest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise BadRequest(f"limit must be an integer from 1 to 10000, got {limit!r}")
        with self._lock:
            rows = self._db().execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
