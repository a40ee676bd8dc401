"""prepare_wal: processes that create the same side-store file at once all get it, none a 'database is locked'."""
import subprocess
import sys
import time

from kb.sqlite_setup import statements
from tests.conftest import REPO

OPEN = r"""
import sqlite3, sys, time
from kb.keys import SCHEMA
from kb.sqlite_setup import prepare_wal
path, start = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, timeout=5, isolation_level=None)
time.sleep(max(0.0, start - time.time()))
prepare_wal(conn, SCHEMA, 5)
print(conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("SELECT count(*) FROM api_keys").fetchone()[0])
"""


def test_statements_ignore_semicolons_in_comments():
    schema = "CREATE TABLE a (x INTEGER -- one; two\n);\n-- a comment; with a semicolon\nCREATE INDEX i ON a(x);"
    assert [s.strip() for s in statements(schema)] == ["CREATE TABLE a (x INTEGER \n)", "CREATE INDEX i ON a(x)"]


def test_processes_creating_one_new_file_at_once_all_succeed(tmp_path):
    # Before prepare_wal took the write lock first, about one round in three had a process fail at once with
    # "database is locked" (SQLite refuses a lock upgrade that could deadlock without waiting).
    for round_ in range(3):
        path = tmp_path / f"auth-{round_}.sqlite"
        start = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(path), str(start)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert out.split() == ["wal", "0"]
