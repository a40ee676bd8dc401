"""prepare_wal: processes that create the same side-store file at once all get it, none a 'database is locked'."""
import signal
import subprocess
import sys

from kb.sqlite_setup import statements
from tests.conftest import REPO, release_together, stop_process

OPEN = r"""
import sqlite3, sys
from kb.event_schema import SQLITE as SCHEMA
from kb.sqlite_setup import prepare_wal
conn = sqlite3.connect(sys.argv[1], timeout=5, isolation_level=None)
print("ready", flush=True)
sys.stdin.readline()  # the go: every process is started and connected
prepare_wal(conn, SCHEMA, 5)
print(conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("SELECT count(*) FROM events").fetchone()[0])
"""


def test_statements_ignore_semicolons_in_comments():
    schema = "CREATE TABLE a (x INTEGER -- one; two\n);\n-- a comment; with a semicolon\nCREATE INDEX i ON a(x);"
    assert [s.strip() for s in statements(schema)] == ["CREATE TABLE a (x INTEGER \n)", "CREATE INDEX i ON a(x)"]


def test_processes_creating_one_new_file_at_once_all_succeed(tmp_path):
    # Before prepare_wal took the write lock first, about one round in three had a process fail at once with
    # "database is locked" (SQLite refuses a lock upgrade that could deadlock without waiting).
    for round_ in range(3):
        path = tmp_path / f"auth-{round_}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
        try:
            release_together(procs)
            for proc in procs:
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err
                assert out.split() == ["wal", "0"]
        finally:
            for proc in procs:
                stop_process(proc, signal.SIGKILL)
