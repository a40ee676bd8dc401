"""Cost per request of the /metrics middleware (search/metrics.py): the same requests with and without it."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PATHS = ("/api/items/outlook-password", "/api/items/teams/microphone", "/healthz", "/nowhere/42")


def make_app(with_metrics: bool):
    """A FastAPI app shaped like the service's routing (an included router with a path template), trivial handlers
    so that what is measured is the middleware, not the work."""
    from fastapi import APIRouter, FastAPI

    from search.metrics import RequestMetrics, ServiceMetrics

    router = APIRouter(prefix="/api")

    @router.get("/items/{item_id:path}")
    async def item(item_id: str) -> dict:
        return {"id": item_id}

    app = FastAPI()
    app.include_router(router)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    if with_metrics:
        app.add_middleware(RequestMetrics, metrics=ServiceMetrics())
    return app


async def drive(app, n: int) -> float:
    """Seconds per request for `n` requests straight into the ASGI app (no sockets, no HTTP parsing)."""
    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        return None

    scopes = [{"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
               "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
               "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)} for path in PATHS]
    started = time.perf_counter()
    for i in range(n):
        await app(dict(scopes[i % len(scopes)]), receive, send)
    return (time.perf_counter() - started) / n


def measure(rounds: int, requests: int) -> dict:
    """Alternating rounds with and without the middleware (drift on a shared machine hits both alike)."""
    plain, counted = make_app(False), make_app(True)
    loop = asyncio.new_event_loop()
    for app in (plain, counted):  # build middleware stacks, warm caches
        loop.run_until_complete(drive(app, 400))
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(rounds):
        times["without"].append(loop.run_until_complete(drive(plain, requests)))
        times["with"].append(loop.run_until_complete(drive(counted, requests)))
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    deltas = sorted(w - p for w, p in zip(times["with"], times["without"]))

    from search.metrics import ServiceMetrics, multiprocess_mode

    metrics = ServiceMetrics()
    started = time.perf_counter()
    for i in range(requests):
        metrics.observe("GET", "/api/items/{item_id:path}", 200, 0.0042)
    observe = (time.perf_counter() - started) / requests
    return {"multiprocess": multiprocess_mode(), "rounds": rounds, "requests_per_round": requests,
            "us_per_request_without": round(without * 1e6, 2), "us_per_request_with": round(with_ * 1e6, 2),
            "overhead_us_median": round((with_ - without) * 1e6, 2),
            "overhead_us_min_max_of_rounds": [round(deltas[0] * 1e6, 2), round(deltas[-1] * 1e6, 2)],
            "observe_call_us": round(observe * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=4000, help="requests per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one mode, decided by PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported
        print(json.dumps(measure(args.rounds, args.requests)))
        return
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: 1-minute load average {load:.2f}: figures are noisy", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="kb-metrics-bench-") as folder:
        for env in ({}, {"PROMETHEUS_MULTIPROC_DIR": folder}):
            child_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | env
            out = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--requests",
                                  str(args.requests)], env=child_env, check=True, capture_output=True, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        mode = "multiprocess (kb serve --workers N)" if r["multiprocess"] else "single process"
        print(f"{mode}: {r['us_per_request_without']} us/request without, {r['us_per_request_with']} with: "
              f"+{r['overhead_us_median']} us (rounds {r['overhead_us_min_max_of_rounds']}); "
              f"observe() alone {r['observe_call_us']} us")
    print(json.dumps({"load_average_1m": round(load, 2), "results": results}))


if __name__ == "__main__":
    main()
