"""Live re-indexing under `kb serve --watch`: seconds from a file write until the edit is searchable, and failed
requests from concurrent clients while versions are swapped."""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.suggest_latency import TICKETS  # noqa: E402
from kb.index import open_backend  # noqa: E402

SEARCHABLE_TARGET_S = 2.0
QUERIES = ["outlook password prompt", "teams camera black screen", "onedrive sync stuck", "mailbox full",
           "shared mailbox sent items", "sales order posting", "general ledger setup", "item journal"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_server(content: Path, index_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {"KB_MAX_IN_FLIGHT": "0",  # every request admitted: this bench counts failures through swaps
           **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), "KB_LOG_LEVEL": "warning",
           "KB_FEEDBACK_DB": str(index_dir.parent / "bench-feedback.sqlite"),
           "KB_USAGE_DB": str(index_dir.parent / "bench-usage.sqlite")}
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--watch", "--content", str(content),
                             "--index-dir", str(index_dir), "--port", str(port)],
                            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(base: str, proc: subprocess.Popen, log_path: Path) -> dict:
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log_path.read_text()[-3000:]}")
        try:
            response = httpx.get(base + "/healthz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit("server did not come up in 300 s")


def published_articles(index_dir: Path) -> list[tuple[str, str]]:
    with open_backend(index_dir).open(check=False) as version:
        return sorted((a.id, a.path) for a in version.articles() if a.status != "draft")


def edit(content: Path, rel: str, token: str, originals: dict[str, bytes]) -> float:
    """Append a section holding `token`; returns the time just after the file was closed."""
    path = content / rel
    originals.setdefault(rel, path.read_bytes())
    with open(path, "ab") as handle:
        handle.write(f"\n\n## Field note {token}\n\nAgents report that {token} resolves the issue.\n".encode())
    return time.perf_counter()


def wait_searchable(client: httpx.Client, article_id: str, token: str, timeout: float = 120) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        response = client.get("/api/search", params={"q": token, "mode": "lexical", "k": 3})
        if response.status_code == 200 and any(h["id"] == article_id for h in response.json()["results"]):
            return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError(f"{article_id} not searchable for {token!r} after {timeout} s")


def wait_idle(client: httpx.Client) -> None:
    """Until no build runs (a watch build may queue one follow-up)."""
    while client.get("/healthz").json()["reload"]["build_running"]:
        time.sleep(0.05)


class Load:
    """`clients` threads sending searches and suggestions in a loop; counts failures."""

    def __init__(self, base: str, clients: int):
        self.base, self.clients = base, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(clients)]

    def run(self, n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    if rng.random() < 0.5:
                        response = client.get("/api/search", params={"q": rng.choice(QUERIES), "k": 5})
                    else:
                        response = client.post("/api/suggest", json={**rng.choice(TICKETS), "k": 5})
                    ok = response.status_code == 200
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, problem = False, f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.latencies.append((time.perf_counter() - started) * 1000)
                    if not ok:
                        self.failures.append(problem)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--content", type=Path, required=True, help="content folder (edited, restored at the end)")
    parser.add_argument("--index-dir", type=Path, required=True, help="index already built from --content")
    parser.add_argument("--edits", type=int, default=10, help="timed single-article edits")
    parser.add_argument("--swaps", type=int, default=20, help="version swaps under load")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients during the swaps")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    articles = published_articles(args.index_dir)
    rng = random.Random(args.seed)
    originals: dict[str, bytes] = {}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = args.index_dir.parent / "live-reindex-server.log"
    proc = start_server(args.content, args.index_dir, port, log_path)
    try:
        health = wait_healthy(base, proc, log_path)
        print(f"serving {health['counts']['articles']} articles / {health['counts']['passages']} passages "
              f"(version {health['index_version']})")
        searchable: list[float] = []
        with httpx.Client(base_url=base, timeout=30) as client:
            for n in range(args.edits):
                article_id, rel = rng.choice(articles)
                token = f"kbprobe{n}q{rng.randrange(10**6)}"
                written = edit(args.content, rel, token, originals)
                seconds = wait_searchable(client, article_id, token) - written
                searchable.append(seconds)
                print(f"edit {n + 1}: {rel} searchable after {seconds:.3f} s")
                wait_idle(client)
            swaps = 0
            with Load(base, args.clients) as load:
                time.sleep(1)
                for n in range(args.swaps):
                    before = client.get("/healthz").json()["index_version"]
                    article_id, rel = rng.choice(articles)
                    token = f"kbswap{n}q{rng.randrange(10**6)}"
                    edit(args.content, rel, token, originals)
                    wait_searchable(client, article_id, token)
                    wait_idle(client)
                    swaps += client.get("/healthz").json()["index_version"] != before
                time.sleep(1)
        figures = {
            "articles": health["counts"]["articles"], "passages": health["counts"]["passages"],
            "edits": len(searchable), "searchable_median_s": round(statistics.median(searchable), 3),
            "searchable_p90_s": round(percentile(searchable, 90), 3), "searchable_max_s": round(max(searchable), 3),
            "searchable_all_s": [round(s, 3) for s in searchable],
            "swaps": swaps, "clients": args.clients, "requests": len(load.latencies), "failed": len(load.failures),
            "latency_under_swaps_p50_ms": round(percentile(load.latencies, 50), 1),
            "latency_under_swaps_p99_ms": round(percentile(load.latencies, 99), 1),
        }
        print(f"searchable after a write: median {figures['searchable_median_s']} s, p90 "
              f"{figures['searchable_p90_s']} s, max {figures['searchable_max_s']} s "
              f"(target median <= {SEARCHABLE_TARGET_S} s: "
              f"{'OK' if figures['searchable_median_s'] <= SEARCHABLE_TARGET_S else 'MISS'})")
        print(f"{swaps} swaps with {args.clients} clients: {figures['requests']} requests, {figures['failed']} "
              f"failed; latency p50 {figures['latency_under_swaps_p50_ms']} ms, p99 "
              f"{figures['latency_under_swaps_p99_ms']} ms")
        for problem in load.failures[:10]:
            print("  failure:", problem)
        print(json.dumps(figures))
        return 0 if not load.failures else 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for rel, data in originals.items():
            (args.content / rel).write_bytes(data)


if __name__ == "__main__":
    sys.exit(main())
