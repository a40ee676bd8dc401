"""Throughput and latency of POST /api/suggest over loopback: 1, 4 and 16 clients against `kb serve --workers 1, 2`."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from suggest_latency import REPO_ROOT, Server, _raise_interrupt, free_port, summarise  # bench/ is on sys.path

TICKETS = REPO_ROOT / "eval" / "tickets-dev" / "queries.jsonl"


class WorkersServer(Server):
    """`python -m cli.main serve --workers N --no-watch` as a child process (its own session, stopped by pid)."""

    def __init__(self, index_dir: Path, port: int, log_level: str, workers: int):
        super().__init__(index_dir, port, log_level)
        self.workers = workers

    def start(self) -> None:
        env = {"KB_MAX_IN_FLIGHT": "0",  # capacity, not admission (bench/overload.py measures that)
               **os.environ, "HF_HUB_OFFLINE": "1", "KB_LOG_LEVEL": self.log_level,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "cli.main", "serve", "--index-dir", str(self.index_dir), "--host",
                   "127.0.0.1", "--port", str(self.port), "--no-watch", "--workers", str(self.workers)]
        self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)


def load_tickets(path: Path) -> list[dict]:
    """Ticket bodies of a ticket set (`{"id", "subject", "text", "lang"}` per line) as /api/suggest requests."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"subject": row.get("subject", ""), "body": row["text"], "k": 5} for row in rows]


def wait_for_workers(url: str, workers: int, timeout: float = 120.0) -> set[int]:
    """Pids answering /healthz, on fresh connections, until `workers` distinct ones are seen (each has loaded)."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers and time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            pids |= set(pool.map(lambda _: httpx.get(f"{url}/healthz", timeout=10).json()["pid"], range(16)))
    return pids


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pids: set[int]) -> float | None:
    """User + system CPU time the processes have used so far (Linux /proc), in seconds."""
    try:
        fields = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() for pid in pids]
    except OSError:
        return None
    return sum(int(f[11]) + int(f[12]) for f in fields) / os.sysconf("SC_CLK_TCK")


def run_clients(url: str, tickets: list[dict], requests: int, clients: int) -> tuple[dict, Counter]:
    """`requests` suggestions sent by `clients` threads, each over its own keep-alive connection, as a helpdesk
    integration would; returns the figures and how many client connections each worker pid held."""
    latencies: list[float] = []
    failures: list[str] = []
    per_worker: Counter = Counter()
    lock = threading.Lock()
    counter = itertools.count()
    ready = threading.Barrier(clients + 1, timeout=120)  # timing starts once every client is connected

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60.0) as http:
            pid = http.get("/healthz").json()["pid"]  # the worker this connection landed on
            with lock:
                per_worker[pid] += 1
            ready.wait()
            while (i := next(counter)) < requests:
                started = time.perf_counter()
                try:
                    response = http.post("/api/suggest", json=tickets[i % len(tickets)])
                    ok, detail = response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                elapsed = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        failures.append(detail)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        ready.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        wall = time.perf_counter() - started
    figures = summarise(latencies, wall, len(failures))
    figures["failures"] = failures[:3]
    return figures, per_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, required=True, help="index folder to serve (built beforehand)")
    parser.add_argument("--tickets", type=Path, default=TICKETS,
                        help=f"ticket set whose bodies are sent (default {TICKETS.relative_to(REPO_ROOT)})")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per (workers, clients) cell")
    parser.add_argument("--warmup", type=int, default=40, help="untimed requests before each server's cells")
    parser.add_argument("--server-log-level", default="warning")
    args = parser.parse_args(argv)
    index_dir = args.index_dir.resolve()
    if not index_dir.is_dir():
        parser.error(f"index folder {index_dir} does not exist: build it with `kb index --index-dir {index_dir}`")
    tickets = load_tickets(args.tickets)
    worker_counts = [int(w) for w in args.workers.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]
    load1 = os.getloadavg()[0]
    print(f"{len(tickets)} tickets from {args.tickets}; {args.requests} suggest requests per cell; "
          f"{os.cpu_count()} CPUs; 1-minute load average {load1:.2f} at the start"
          + ("  (WARNING: other processes share the CPUs)" if load1 > 0.5 else ""))
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a SIGTERM to the benchmark stops the server too
    cells: dict[str, dict] = {}
    health: dict = {}
    for workers in worker_counts:
        server = WorkersServer(index_dir, free_port(), args.server_log_level, workers)
        try:
            started = time.perf_counter()
            server.start()
            with httpx.Client() as http:
                health = server.wait_healthy(http, 300)
            pids = wait_for_workers(server.url, workers)
            print(f"\nworkers={workers}: pids {sorted(pids)} ready after {time.perf_counter() - started:.1f} s; index "
                  f"{health.get('index_version')} {health.get('counts')}")
            run_clients(server.url, tickets, args.warmup, max(workers * 2, 2))
            for clients in client_counts:
                cpu_before = cpu_seconds(pids)
                figures, per_worker = run_clients(server.url, tickets, args.requests, clients)
                cpu_after = cpu_seconds(pids)
                if cpu_before is not None and cpu_after is not None:  # how much CPU the server got, and needed
                    figures["server_cores"] = round((cpu_after - cpu_before) / figures["wall_s"], 2)
                    figures["server_cpu_ms_per_request"] = round(1000 * (cpu_after - cpu_before) / args.requests, 1)
                figures["connections_per_worker"] = sorted(per_worker.values(), reverse=True)
                figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
                figures["worker_rss_mb"] = [rss_mb(pid) for pid in sorted(pids)]
                cells[f"w{workers}_c{clients}"] = figures
                print(f"  clients={clients:>2}: {figures['requests_per_s']:7.1f} req/s  p50 {figures['p50_ms']:7.1f} "
                      f"ms  p90 {figures['p90_ms']:7.1f}  p99 {figures['p99_ms']:7.1f}  errors {figures['errors']}  "
                      f"connections per worker {figures['connections_per_worker']}  RSS MB {figures['worker_rss_mb']}  "
                      f"server CPU {figures.get('server_cores')} cores, {figures.get('server_cpu_ms_per_request')} ms"
                      f"/request")
        except KeyboardInterrupt:
            print("interrupted; stopping the server", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            server.stop()
            Path(server.log.name).unlink(missing_ok=True)

    ratio = len(worker_counts) > 1
    print("\nside by side: req/s, p50 ms, p99 ms" + ("; req/s ratio to the first column" if ratio else ""))
    print("clients" + "".join(f" | {f'workers={w}':^25}" for w in worker_counts) + (" | ratio" if ratio else ""))
    for clients in client_counts:
        row = [cells[f"w{w}_c{clients}"] for w in worker_counts]
        line = f"{clients:>7}" + "".join(f" | {c['requests_per_s']:7.1f} {c['p50_ms']:8.1f} {c['p99_ms']:8.1f}"
                                         for c in row)
        if ratio:
            line += " | " + " ".join(f"{c['requests_per_s'] / row[0]['requests_per_s']:.2f}x" for c in row[1:])
        print(line)
    errors = sum(c["errors"] for c in cells.values())
    print(json.dumps({"bench": "serve_throughput", "index_dir": str(index_dir),
                      "index_version": health.get("index_version"), "counts": health.get("counts"),
                      "tickets": str(args.tickets), "requests_per_cell": args.requests, "cpus": os.cpu_count(),
                      "loadavg_1m_before": round(load1, 2), "cells": cells}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
