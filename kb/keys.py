"""KeyStore: API keys in SQLite (salted hashes only), their scopes, expiry, per-minute rate and use counts."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, TypeVar

from kb.database import Connection, Database, KeptConnection, as_database
from kb.errors import BadRequest, Conflict, KeyInvalid, NotFound, RateLimited, StoreUnavailable
from kb.rate_window import RateWindow, retry_after
from kb.migrations import Schema
from kb.side_store import SideStoreHealth

log = logging.getLogger("kb.keys")
T = TypeVar("T")

SCOPES = ("search", "suggest", "feedback", "analytics", "admin", "internal")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# kb_<key id>_<secret>: the id (public) finds the row, the secret (32 random bytes) is checked against its hash.
SECRET = re.compile(r"^kb_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*min)?\s*$")
WINDOW_SECONDS = 60

# Version 1 is the schema from before versions (kb/migrations.py); timestamps are ISO 8601 UTC text on both engines.
SCHEMA = Schema("keys", ({
    "sqlite": """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,                -- public key id, part of the secret
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,               -- space-separated, from SCOPES
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,                 -- HMAC-SHA256(salt, secret): the secret itself is never stored
    created TEXT NOT NULL,              -- ISO 8601 UTC
    expires TEXT,                       -- ISO 8601 UTC, NULL: never
    rate_per_min INTEGER,               -- NULL: unlimited
    revoked TEXT,                       -- ISO 8601 UTC when revoked
    last_used TEXT,
    requests INTEGER NOT NULL DEFAULT 0,
    window_start INTEGER NOT NULL DEFAULT 0,   -- start (unix seconds) of the current rate window
    window_count INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked IS NULL;
CREATE TABLE IF NOT EXISTS service_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
""",
    "postgres": """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    salt BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    rate_per_min INTEGER,
    revoked TEXT,
    last_used TEXT,
    requests BIGINT NOT NULL DEFAULT 0,
    window_start BIGINT NOT NULL DEFAULT 0,
    window_count INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked IS NULL;
CREATE TABLE IF NOT EXISTS service_secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
"""},))


def now_iso(at: datetime | None = None) -> str:
    return (at or datetime.now(timezone.utc)).isoformat(timespec="seconds")


def parse_scopes(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Scopes in SCOPES order; BadRequest naming an unknown one."""
    wanted = {s.strip().lower() for v in values for s in v.replace(",", " ").split() if s.strip()}
    if not wanted:
        raise BadRequest(f"give at least one --scope: {', '.join(SCOPES)}")
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise BadRequest(f"unknown scope {', '.join(unknown)}: scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def parse_rate(value: str | int | None) -> int | None:
    """'120/min' or '120' -> 120 requests a minute; None: unlimited."""
    if value is None:
        return None
    match = RATE.match(str(value))
    if not match or int(match[1]) < 1:
        raise BadRequest(f"--rate must be a positive number of requests a minute such as 120/min, got {value!r}")
    return int(match[1])


def digest(salt: bytes, secret: str) -> bytes:
    # A fast keyed hash suffices: the secret has 256 random bits, so it cannot be guessed from its hash.
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class ApiKey:
    """One key as listed: never its secret."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created: str
    expires: str | None
    rate_per_min: int | None
    revoked: str | None
    last_used: str | None
    requests: int

    def to_dict(self) -> dict:
        return {"name": self.name, "scopes": list(self.scopes), "created": self.created, "expires": self.expires,
                "rate_per_min": self.rate_per_min, "revoked": self.revoked, "last_used": self.last_used,
                "requests": self.requests}

    @classmethod
    def from_row(cls, row) -> "ApiKey":
        return cls(row["id"], row["name"], tuple(row["scopes"].split()), row["created"], row["expires"],
                   row["rate_per_min"], row["revoked"], row["last_used"], row["requests"])


class KeyStore:
    """Keys in the auth database (KB_AUTH_DB, a SQLite file in WAL mode, or KB_DATABASE_URL), shared by every worker
    process, every replica on the same PostgreSQL database, and `kb keys`.

    One kept connection used under a lock in this process (kb/database.py); other processes wait on SQLite's busy
    timeout or PostgreSQL's row locks. A verified request costs one indexed read and one small update (use count,
    rate window).

    A database that can be read but not written (read-only file or database, full disk) still verifies keys: their
    use is not counted meanwhile and rates are counted in this process's memory instead; `health` logs that once, and
    once more when it is written again. Creating and revoking keys then fails with StoreUnavailable (503), as does
    everything when the database cannot even be read (or reached).
    """

    def __init__(self, where: Database | Path, timeout: float = 10.0):
        self.database = as_database(where, "KB_AUTH_DB", timeout)
        self.path = self.database.where
        self._kept = KeptConnection(self.database, SCHEMA)
        self.health = SideStoreHealth("keys", self.database.where, self.database.setting, log, "keys are verified "
                                      "but their use is not counted, rates are counted per worker in memory, "
                                      "`kb keys create` and `revoke` fail")
        self._memory = RateWindow(0, "requests")  # rate windows while the database cannot be written

    def _read(self, fn: Callable[[Connection], T], empty: T) -> T:
        """`fn` on the connection (`empty` before anything was stored); StoreUnavailable (503) when it fails."""
        try:
            return self._kept.read(fn, empty)
        except self.database.errors as exc:
            raise StoreUnavailable(f"the keys store cannot be read right now ({type(exc).__name__}: {exc}), so no "
                                   f"key can be checked; the operator should check {self.database.setting}",
                                   store="keys") from None

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """`fn` on the connection; a failure is counted and said once by `health`, and is a StoreUnavailable (503)."""
        try:
            result = self._kept.write(fn)
        except self.database.integrity_errors:
            raise
        except self.database.errors as exc:
            raise self.health.failed(exc) from None
        self.health.succeeded()
        return result

    def close(self) -> None:
        self._kept.close()

    # ---- management (kb keys) ------------------------------------------------------------------
    def create(self, name: str, scopes: list[str] | tuple[str, ...], expires_days: int | None = None,
               rate: str | int | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once: only its salted hash is stored)."""
        if not isinstance(name, str) or not NAME.match(name):
            raise BadRequest(f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit")
        scopes = parse_scopes(scopes)
        rate_per_min = parse_rate(rate)
        if expires_days is not None and expires_days < 1:
            raise BadRequest(f"--expires-days must be at least 1, got {expires_days}")
        created = datetime.now(timezone.utc)
        expires = now_iso(created + timedelta(days=expires_days)) if expires_days else None
        key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = f"kb_{key_id}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_bytes(16)
        row = (key_id, name, " ".join(scopes), salt, digest(salt, secret), now_iso(created), expires, rate_per_min)
        try:
            self._write(lambda db: db.execute("INSERT INTO api_keys (id, name, scopes, salt, hash, created, expires, "
                                              "rate_per_min) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row))
        except self.database.integrity_errors:
            raise Conflict(f"a key named {name!r} already exists: revoke it first or choose another name") from None
        return self.get(name), secret

    def get(self, name: str) -> ApiKey:
        """The active key called `name` (NotFound when there is none)."""
        row = self._read(lambda db: db.execute("SELECT * FROM api_keys WHERE name = ? AND revoked IS NULL",
                                               (name,)).fetchone(), None)
        if row is None:
            raise NotFound(f"no active key named {name!r} (kb keys list shows them)")
        return ApiKey.from_row(row)

    def list(self, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else "WHERE revoked IS NULL"
        rows = self._read(lambda db: db.execute(f"SELECT * FROM api_keys {where} ORDER BY created, name").fetchall(),
                          [])
        return [ApiKey.from_row(r) for r in rows]

    def revoke(self, name: str) -> ApiKey:
        key = self.get(name)
        self._write(lambda db: db.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (now_iso(), key.id)))
        return key

    # ---- requests ------------------------------------------------------------------------------
    def verify(self, secret: str, now: float | None = None) -> ApiKey:
        """The key a request presented, counted as used; KeyInvalid (401) or RateLimited (429) otherwise."""
        match = SECRET.match(secret or "")
        if match is None:
            raise KeyInvalid("unknown API key")
        row = self._read(lambda db: db.execute("SELECT * FROM api_keys WHERE id = ?", (match[1],)).fetchone(), None)
        if row is None or not hmac.compare_digest(digest(row["salt"], secret), row["hash"]):
            raise KeyInvalid("unknown API key")
        return self.admit(ApiKey.from_row(row), now)

    def by_id(self, key_id: str, now: float | None = None) -> ApiKey:
        """A key known by its id (a signed-in session), checked and counted as `verify` does."""
        row = self._read(lambda db: db.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone(), None)
        if row is None:
            raise KeyInvalid("the key this session was signed in with no longer exists")
        return self.admit(ApiKey.from_row(row), now)

    def admit(self, key: ApiKey, now: float | None = None) -> ApiKey:
        """Refuse a revoked or expired key; count the request; 429 over its rate (a fixed one-minute window)."""
        now = time.time() if now is None else now
        if key.revoked:
            raise KeyInvalid(f"API key {key.name!r} was revoked on {key.revoked}", reason="revoked")
        if key.expires and datetime.fromisoformat(key.expires).timestamp() <= now:
            raise KeyInvalid(f"API key {key.name!r} expired on {key.expires}", reason="expired")
        window = int(now // WINDOW_SECONDS * WINDOW_SECONDS)
        used = datetime.fromtimestamp(now, timezone.utc)
        try:
            count = self._write(lambda db: db.execute(
                "UPDATE api_keys SET requests = requests + 1, last_used = ?, "
                "window_count = CASE WHEN window_start = ? THEN window_count + 1 ELSE 1 END, "
                "window_start = ? WHERE id = ? RETURNING window_count",
                (now_iso(used), window, window, key.id)).fetchone()[0])
        except StoreUnavailable:  # verified from a database that cannot be written: the rate is kept in memory
            count = self._memory.hit(key.id, now)
        if key.rate_per_min is not None and count > key.rate_per_min:
            retry = retry_after(now)
            raise RateLimited(f"API key {key.name!r} is over its rate of {key.rate_per_min} requests a minute; "
                              f"retry in {retry} s", retry_after=retry)
        return key

    # ---- signing sessions ----------------------------------------------------------------------
    def service_secret(self, name: str) -> bytes:
        """A random secret kept in the auth database (created once), shared by every worker and replica: signs session
        cookies. Read first, so that a database that cannot be written still gives the secret it holds."""
        select = "SELECT value FROM service_secrets WHERE name = ?"
        row = self._read(lambda db: db.execute(select, (name,)).fetchone(), None)
        if row is not None:
            return bytes(row[0])

        def create(db: Connection) -> bytes:
            db.execute("INSERT INTO service_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                       (name, secrets.token_bytes(32)))
            return bytes(db.execute(select, (name,)).fetchone()[0])

        return self._write(create)
