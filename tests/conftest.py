"""Shared fixtures: the real model (loaded once per session), a tiny deterministic encoder, fixture indexes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_CONTENT = FIXTURES / "content"


class TinyEncoder:
    """Deterministic bag-of-words vectors (hashed, 64 dims): for fast unit tests of plumbing, never of quality."""

    model_id = "test/tiny-bow"
    dim = 64
    multilingual = False

    def __init__(self):
        self.calls = 0
        self.texts_encoded = 0

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def encode_queries(self, texts):
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_passages(self, texts, batch_size=64):
        self.calls += 1
        self.texts_encoded += len(texts)
        return self.encode_queries(texts)


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser of its own
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required: apt-get install -y chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def tiny_encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    """The real packaged all-MiniLM-L6-v2 with the service's default query encoder and passage precision, loaded
    once."""
    from kb.embedder import Embedder
    from kb.settings import load_settings

    defaults = load_settings({})
    embedder = Embedder(query_engine=defaults.query_engine, cache_dir=tmp_path_factory.mktemp("models"),
                        precision=defaults.encode_precision)
    embedder.load()
    return embedder


@pytest.fixture
def content_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture knowledge base."""
    target = tmp_path / "content"
    shutil.copytree(FIXTURE_CONTENT, target)
    return target


@pytest.fixture(scope="session")
def real_index(tmp_path_factory, embedder):
    """Settings of an index built once from the fixture articles with the real model."""
    from indexer.build import build_index
    from kb.settings import load_settings

    root = tmp_path_factory.mktemp("real-index")
    settings = load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=root / "index",
                             feedback_db=root / "feedback.sqlite", usage_db=root / "usage.sqlite",
                             analytics_db=root / "analytics.sqlite")
    build_index(settings, embedder, progress=False)
    return settings


@pytest.fixture(scope="session")
def searcher(real_index, embedder):
    from kb.index import open_backend
    from search.searcher import Searcher

    return Searcher(open_backend(real_index.index_dir).open(model_id=embedder.model_id), embedder, real_index)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, message: str | Callable[[], str] = "",
               interval: float = 0.05):
    """Poll `condition` until it returns something true, and return that; fail once `timeout` seconds have passed.
    For states another thread or process reaches (a job done, a version in service): a deadline, not a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout} s: {message() if callable(message) else message}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0,
                 group: bool = False) -> int | None:
    """Stop `proc` on any way out of a test: `sig`, at most `timeout` seconds to exit, then SIGKILL (to its whole
    process group too when `group`: a server's workers must not outlive it). Never raises, so it cannot hide the
    failure that brought the test here; returns the exit code (negative: the signal that ended it)."""
    with contextlib.suppress(ProcessLookupError):
        if proc.poll() is None:
            proc.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    if group:  # also any worker left behind by a parent that exited (the group outlives its leader)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    elif proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    return proc.returncode


def read_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    """The first line the child writes to its stdout (a pipe) that starts with `prefix`: its readiness signal.
    Fails when the child exits first or `timeout` passes. Reads the pipe unbuffered, so use it for a child that
    writes nothing more until the test acts (it waits on its stdin, or is killed)."""
    fd, seen = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while True:
        lines = seen.decode(errors="replace").split("\n")
        for line in lines[:-1]:
            if line.startswith(prefix):
                return line
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line {prefix!r} within {timeout} s; the child wrote {seen!r}")
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the child exited ({proc.wait(timeout=30)}) before a line {prefix!r}; "
                                     f"it wrote {seen!r}")
            seen += chunk


def release_together(procs: list[subprocess.Popen], timeout: float = 60) -> None:
    """A start line for child processes that race (stdin and stdout pipes, text mode): wait for each one's "ready"
    line, then tell them all to go, a line on each stdin written back to back. They then race for real, however
    long each took to start, where a start time guessed in advance is sometimes too early for one of them."""
    for proc in procs:
        read_line(proc, "ready", timeout)
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _kernel_dev(st_dev: int) -> int:
    return (os.major(st_dev) << 20) | os.minor(st_dev)  # as /proc/*/fdinfo shows it (sdev)


def inotify_watched() -> set[tuple[int, int]]:
    """(device, inode) of every file or folder a process of this user watches with inotify, from
    /proc/PID/fdinfo (Linux); processes of other users are skipped."""
    watched = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    for match in re.finditer(r"^inotify wd:\S+ ino:([0-9a-f]+) sdev:([0-9a-f]+)", info.read(), re.M):
                        watched.add((int(match[2], 16), int(match[1], 16)))
            except OSError:
                continue
    return watched


def wait_for_inotify_watches(root: Path, timeout: float = 60, watcher: subprocess.Popen | None = None,
                             log: Path | None = None) -> None:
    """Wait until some process watches `root` and every folder under it with inotify: from then on the kernel
    queues each change there for the watcher, so an edit the test makes next cannot be missed. A fixed sleep is
    no such proof, nor is a "watching" log line (`kb watch` and `kb serve --watch` print theirs before the
    watches are added). With `watcher`, fails at once when that process exits (showing `log`)."""
    folders = [root, *(Path(d) / n for d, names, _ in os.walk(root) for n in names)]
    wanted = {(_kernel_dev(s.st_dev), s.st_ino) for s in map(os.stat, folders)}

    def watched() -> bool:
        if watcher is not None and watcher.poll() is not None:
            raise AssertionError(f"the watcher exited with {watcher.returncode}: {log.read_text() if log else ''}")
        return wanted <= inotify_watched()

    wait_until(watched, timeout,
               lambda: f"no inotify watch on {len(wanted - inotify_watched())} of the {len(wanted)} folders "
                       f"under {root}", interval=0.02)


@contextlib.contextmanager
def running_server(index_dir: Path, workdir: Path, env: dict[str, str] | None = None,
                   args: tuple[str, ...] = ("--no-watch",)):
    """`kb serve ARGS` as a real process on a free loopback port; yields (base URL, port) once /healthz is 200.
    On every way out: SIGTERM, at most 30 s to shut down, then SIGKILL to its process group (workers too)."""
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "KB_FEEDBACK_DB": str(workdir / "feedback.sqlite"), "KB_USAGE_DB": str(workdir / "usage.sqlite"),
           "KB_ANALYTICS_DB": str(workdir / "analytics.sqlite"), **(env or {})}
    log_path = workdir / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--index-dir", str(index_dir),
                                 "--port", str(port), *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, f"kb serve exited with {proc.returncode}:\n{log_path.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            return False

        wait_until(healthy, 120, lambda: f"kb serve did not come up:\n{log_path.read_text()}", interval=0.1)
        yield base, port
    finally:
        stop_process(proc, signal.SIGTERM, timeout=30, group=True)


# ---- side stores on both engines (kb/database.py) -----------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests/postgres.py); started only when a test needs it."""
    from tests.postgres import start_server

    server = start_server()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def side_db(request, tmp_path) -> Callable:
    """`side_db(store)`: a kb.database.Database for that side store, on SQLite (a file in tmp_path) and then on
    PostgreSQL (a fresh database of the session's server, shared by every store of the test as KB_DATABASE_URL is)."""
    from kb.database import SQLITE_FILES, Database

    if request.param == "sqlite":
        return lambda store, timeout=10.0: Database.sqlite(tmp_path / f"{SQLITE_FILES[store][0]}.sqlite",
                                                           SQLITE_FILES[store][1], timeout)
    url = request.getfixturevalue("postgres_server").create_database()
    return lambda store, timeout=10.0: Database.postgres(url, timeout)
