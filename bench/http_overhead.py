"""What HTTP adds to a search and a suggest: the same calls over HTTP (two clients) and in process, alternated.

A `kb serve --no-watch` child serves --index-dir; this process opens the same version with the service's Searcher
and the same query-vector memory (kb/recent_vectors.py). Each query is asked three ways in rotating order, one right
after the other: GET /api/search or POST /api/suggest through httpx (what bench/growth.py and
bench/suggest_latency.py use) and through the standard library's http.client (both keep-alive), and in process
(Searcher.search / .suggest plus json.dumps of the answer). A warm-up pass asks every query first, so every arm
answers from remembered query vectors: the figures leave the model's encoding out on purpose and compare what
remains (retrieval, marking, the web stack, serialisation, the client). Prints p50 wall per arm, the client's CPU
per call and response sizes. Searches are the `kind: query` items of eval/tickets-dev and eval/tickets-check, suggests
their items with a subject (as bench/growth.py sends them). Usage:
  .venv/bin/python bench/http_overhead.py --index-dir /tmp/office-idx [--rounds 3]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.growth import load_queries  # noqa: E402
from bench.suggest_latency import Server, free_port  # noqa: E402

ARMS = ("httpx", "http.client", "in process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--model-cache", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over every query")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kb.embedder import make_embedder
    from kb.index import open_backend
    from kb.recent_vectors import RecentVectors
    from kb.settings import load_settings
    from search.searcher import Searcher

    queries = load_queries()
    server = Server(args.index_dir, free_port(), "warning")
    server.start()
    try:
        settings = load_settings({}, index_dir=args.index_dir, model_cache_dir=args.model_cache)
        encoder = make_embedder(settings)
        encoder.load()
        searcher = Searcher(open_backend(args.index_dir).open(model_id=encoder.model_id), RecentVectors(encoder),
                            settings)
        client = httpx.Client(timeout=60.0)
        server.wait_healthy(client, 600)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

        def plain(method: str, path: str, body: dict | None = None) -> bytes:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
            return data

        def checked(response: httpx.Response) -> bytes:
            response.raise_for_status()
            return response.content

        arms = {
            "search": (
                lambda q: checked(client.get(f"{server.url}/api/search", params={"q": q, "k": 10})),
                lambda q: plain("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "k": 10})),
                lambda q: json.dumps(searcher.search(q, k=10)).encode()),
            "suggest": (
                lambda t: checked(client.post(f"{server.url}/api/suggest", json={**t, "k": 5})),
                lambda t: plain("POST", "/api/suggest", {**t, "k": 5}),
                lambda t: json.dumps(searcher.suggest(t["subject"], t["body"], k=5)).encode()),
        }
        load = os.getloadavg()
        print(f"index {args.index_dir}, {len(queries['search'])} searches and {len(queries['suggest'])} suggests, "
              f"{args.rounds} rounds, arms rotated call by call; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print("| call | " + " | ".join(f"{a} p50 ms" for a in ARMS) + " | client CPU p50 ms httpx / http.client "
              "| response p50 kB |")
        print("|---|---|---|---|---|---|")
        results = {}
        for kind, calls in arms.items():
            items = queries[kind]
            for item in items:  # warm-up: every arm, every query (lazy loads; the query vectors remembered)
                for call in calls:
                    call(item)
            wall = {a: [] for a in ARMS}
            cpu = {a: [] for a in ARMS}
            sizes = []
            for round_no in range(args.rounds):
                for i, item in enumerate(items):
                    shift = (i + round_no) % len(ARMS)
                    for arm in ARMS[shift:] + ARMS[:shift]:
                        started, used = time.perf_counter(), time.process_time()
                        body = calls[ARMS.index(arm)](item)
                        wall[arm].append((time.perf_counter() - started) * 1000)
                        cpu[arm].append((time.process_time() - used) * 1000)
                    sizes.append(len(body))
            row = {arm: round(statistics.median(wall[arm]), 2) for arm in ARMS}
            row["client_cpu"] = {arm: round(statistics.median(cpu[arm]), 2) for arm in ARMS[:2]}
            row["response_kb"] = round(statistics.median(sizes) / 1000, 1)
            results[kind] = row
            print(f"| {kind} | " + " | ".join(f"{row[a]:.2f}" for a in ARMS) +
                  f" | {row['client_cpu']['httpx']:.2f} / {row['client_cpu']['http.client']:.2f} "
                  f"| {row['response_kb']} |")
        results["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(results))
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


if __name__ == "__main__":
    main()
