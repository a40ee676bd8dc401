"""Shared fixtures: the real model (loaded once per session), a tiny deterministic encoder, fixture indexes."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    """The real packaged all-MiniLM-L6-v2 with the service's default ONNX query encoder, loaded once."""
    from kb.embedder import Embedder

    embedder = Embedder(query_engine="onnx", cache_dir=tmp_path_factory.mktemp("models"))
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
    from kb.store import open_current
    from search.searcher import Searcher

    return Searcher(open_current(real_index.index_dir, embedder.model_id), embedder, real_index)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(index_dir: Path, workdir: Path, env: dict[str, str] | None = None,
                   args: tuple[str, ...] = ("--no-watch",)):
    """`kb serve ARGS` as a real process on a free loopback port; yields (base URL, port) once /healthz is 200."""
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "KB_FEEDBACK_DB": str(workdir / "feedback.sqlite"), "KB_USAGE_DB": str(workdir / "usage.sqlite"),
           "KB_ANALYTICS_DB": str(workdir / "analytics.sqlite"), **(env or {})}
    log_path = workdir / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--index-dir", str(index_dir),
                                 "--port", str(port), *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline, "server did not come up"
                time.sleep(0.3)
            yield base, port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
