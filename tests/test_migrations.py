"""kb/migrations.py: each store's schema versioned; a new version migrates an old database in place, on both engines."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from kb.database import KeptConnection
from kb.migrations import Schema, SchemaError, statements

V1 = {"sqlite": "CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, seen REAL NOT NULL) WITHOUT ROWID",
      "postgres": "CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL)"}
V2 = ("ALTER TABLE tickets ADD COLUMN note INTEGER NOT NULL DEFAULT 0;  -- a step written once for both engines\n"
      "CREATE INDEX tickets_seen ON tickets(seen)")


def version(kept: KeptConnection, store: str) -> int | None:
    row = kept.read(lambda db: db.execute("SELECT version FROM kb_schema WHERE store = ?", (store,)).fetchone(), None)
    return None if row is None else row[0]


def test_statements_drop_comments_that_hold_semicolons():
    assert statements("CREATE TABLE a (x); -- one; two\nCREATE INDEX i ON a(x);") == ["CREATE TABLE a (x)",
                                                                                    "CREATE INDEX i ON a(x)"]


def test_a_new_version_migrates_an_old_database_in_place(side_db):
    database = side_db("webhooks")
    old = KeptConnection(database, Schema("tickets", (V1,)))
    old.write(lambda db: db.execute("INSERT INTO tickets (id, seen) VALUES (?, ?)", ("t-1", 1.5)))
    assert version(old, "tickets") == 1
    old.close()

    new = KeptConnection(database, Schema("tickets", (V1, V2)))
    new.write(lambda db: db.execute("UPDATE tickets SET note = 1 WHERE id = ?", ("t-1",)))
    assert [tuple(r) for r in new.read(lambda db: db.execute("SELECT id, seen, note FROM tickets").fetchall(), [])] \
        == [("t-1", 1.5, 1)]  # the row written at version 1 is kept
    assert version(new, "tickets") == 2
    new.close()
    again = KeptConnection(database, Schema("tickets", (V1, V2)))  # opening at the same version changes nothing
    again.write(lambda db: db.execute("INSERT INTO tickets (id, seen) VALUES ('t-2', 2.0)"))
    assert version(again, "tickets") == 2
    again.close()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(side_db):
    database = side_db("webhooks")
    newer = KeptConnection(database, Schema("tickets", (V1, V2)))
    newer.write(lambda db: db.execute("INSERT INTO tickets (id, seen) VALUES ('t-1', 1.0)"))
    newer.close()
    older = KeptConnection(database, Schema("tickets", (V1,)))
    with pytest.raises(SchemaError, match="schema version 2, newer than this KB Search knows"):
        older.write(lambda db: db.execute("INSERT INTO tickets (id, seen) VALUES ('t-2', 2.0)"))
    older.close()
    check = KeptConnection(database, Schema("tickets", (V1, V2)))
    assert check.read(lambda db: db.execute("SELECT count(*) FROM tickets").fetchone()[0], 0) == 1
    assert version(check, "tickets") == 2
    check.close()


def test_stores_in_one_database_keep_their_own_versions(side_db):
    database = side_db("keys")
    first = KeptConnection(database, Schema("tickets", (V1, V2)))
    other = KeptConnection(database, Schema("notes", ("CREATE TABLE IF NOT EXISTS notes (body TEXT)",)))
    first.write(lambda db: None)
    other.write(lambda db: None)
    assert (version(first, "tickets"), version(first, "notes")) == (2, 1)
    first.close()
    other.close()


def test_processes_opening_a_new_database_together_migrate_it_once(side_db):
    database = side_db("webhooks")
    schema = Schema("tickets", (V1, V2))
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_and_write(n: int) -> None:
        kept = KeptConnection(database, schema)  # its own connection, as another worker process has
        try:
            barrier.wait()
            kept.write(lambda db: db.execute("INSERT INTO tickets (id, seen) VALUES (?, ?)", (f"t-{n}", n)))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            kept.close()

    threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check = KeptConnection(database, schema)
    assert check.read(lambda db: db.execute("SELECT count(*) FROM tickets").fetchone()[0], 0) == 6
    assert check.read(lambda db: db.execute("SELECT count(*) FROM kb_schema").fetchone()[0], 0) == 1
    check.close()


def test_a_sqlite_file_from_before_versions_is_adopted_as_version_1(tmp_path):
    """auth.sqlite as KB Search wrote it before kb_schema existed: its keys verify, and it is marked version 1."""
    from kb.keys import KeyStore

    path = tmp_path / "auth.sqlite"
    store = KeyStore(path)
    key, secret = store.create("zendesk", ["search"])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE kb_schema")  # what the file looked like before versions
    store = KeyStore(path)
    assert store.verify(secret).name == "zendesk"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT store, version FROM kb_schema").fetchall() == [("keys", 1)]
    store.close()


OPEN = r"""
import sys
from kb.database import Database, KeptConnection
from kb.keys import SCHEMA
where = sys.argv[1]
database = Database.postgres(where) if where.startswith("postgresql://") else Database.sqlite(where, "KB_AUTH_DB")
kept = KeptConnection(database, SCHEMA)
print("ready", flush=True)
sys.stdin.readline()  # the go: every process is started
print(kept.write(lambda db: db.execute("SELECT count(*) FROM api_keys").fetchone()[0]))
"""


def test_processes_creating_one_new_database_at_once_all_succeed(side_db):
    """`kb serve --workers N` (or N replicas) opening a new database together: each waits for the one migrating it
    (SQLite's write lock taken first, so the busy timeout applies; PostgreSQL's advisory lock), none fails."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, release_together, stop_process

    target = side_db("keys").target
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, target], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = []
    try:
        release_together(procs)
        outcomes = [(proc.communicate(timeout=60), proc.returncode) for proc in procs]
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGKILL)
    assert [(out.split(), code) for (out, _), code in outcomes] == [(["0"], 0)] * 6, outcomes
