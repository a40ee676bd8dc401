"""Overload: goodput, p99 of admitted requests, share refused with 503 and /healthz latency for 8-128 clients of a
real `kb serve`, without admission control (KB_MAX_IN_FLIGHT=0) and with it, side by side in one run."""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serve_throughput import TICKETS as TICKET_SET, cpu_seconds, load_tickets  # bench/ is on sys.path
from suggest_latency import REPO_ROOT, SEARCH_QUERIES, Server, _raise_interrupt, free_port, percentile

OFFICE_INDEX = Path("/tmp/serve-bench/office-idx")
HEALTH_EVERY_S = 0.2  # one /healthz probe this often while the clients run
ROUTES = ("/api/search", "/api/suggest")
THREADS_PER_PROCESS = 16  # client threads that share one client process (and its GIL)


class LimitedServer(Server):
    """`kb serve --no-watch` with one admission setting (in flight / queue / wait ms; "0": no limit), its side
    stores in a folder of its own (never the repo's var/)."""

    def __init__(self, index_dir: Path, port: int, log_level: str, limits: str, stores: Path):
        super().__init__(index_dir, port, log_level)
        self.limits, self.stores = limits, stores

    def environment(self) -> dict[str, str]:
        parts = self.limits.split("/")
        env = {"KB_MAX_IN_FLIGHT": parts[0]}
        if len(parts) == 3:
            env.update(KB_MAX_QUEUE=parts[1], KB_MAX_QUEUE_WAIT_MS=parts[2])
        for name in ("feedback", "usage", "analytics", "auth", "webhooks"):
            env[f"KB_{'WEBHOOK' if name == 'webhooks' else name.upper()}_DB"] = str(self.stores / f"{name}.sqlite")
        return env

    def arguments(self) -> list[str]:
        """What `kb serve` is told besides its address: this index, serving only (no watcher)."""
        return ["--index-dir", str(self.index_dir), "--no-watch"]

    def start(self) -> None:
        env = {**os.environ, **self.environment(), "HF_HUB_OFFLINE": "1", "KB_LOG_LEVEL": self.log_level,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   *self.arguments()]
        self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)


def copy_index(source: Path, target: Path) -> Path:
    """CURRENT and the version it names (not the embedding cache): the service reads them, never the original."""
    build_id = (source / "CURRENT").read_text().strip()
    target.mkdir(parents=True)
    shutil.copytree(source / build_id, target / build_id)
    shutil.copy2(source / "CURRENT", target / "CURRENT")
    return target


def served_histograms(url: str) -> dict[str, dict[float, float]]:
    """The service's own latency histograms (arrival to the end of the response, as its /metrics counts them, free
    of the clients' own delays): `ok` the 200s and `refused` the 503s of search and suggest, `health` /healthz;
    each upper bound in seconds -> cumulative count."""
    groups: dict[str, dict[float, float]] = {"ok": {}, "refused": {}, "health": {}}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name != "kb_http_request_duration_seconds_bucket":
                continue
            route, status = sample.labels.get("route"), sample.labels.get("status")
            group = ("health" if route == "/healthz" and status == "200" else
                     "ok" if route in ROUTES and status == "200" else
                     "refused" if route in ROUTES and status == "503" else None)
            if group is not None:
                bound = float(sample.labels["le"])
                groups[group][bound] = groups[group].get(bound, 0.0) + sample.value
    return groups


def max_bucket(buckets: dict[float, float]) -> float | None:
    """The upper bound of the highest histogram bucket that holds a sample, in ms (None: no samples)."""
    total = buckets.get(float("inf"), 0.0)
    return next((bound * 1000 for bound in sorted(buckets) if total > 0 and buckets[bound] >= total), None)


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile over the counts added between two scrapes (linear within a bucket), in ms."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return lower * 1000
            return 1000 * (lower + (bound - lower) * (rank - below) / max(count - below, 1e-9))
        lower, below = bound, count
    return None


def client_process(url: str, count: int, offset: int, tickets: list[dict], honour_retry_after: bool,
                   connected, go, clock, results) -> None:
    """One client process: `count` threads, each on its own keep-alive connection, alternating GET /api/search and
    POST /api/suggest from the start to the deadline the parent puts in `clock`; its figures go back on `results`.

    A 503 must be `overloaded` with Retry-After; anything else not 200 is an error. A refused client waits Retry-After
    times a random 1-2 (clients back off with jitter: all of them coming back in one instant would test the clients'
    lockstep rather than the service)."""
    out: dict = {"ok": [], "refused": [], "errors": [], "ok_in_window": 0}
    lock = threading.Lock()
    counter = itertools.count(offset)
    all_connected = threading.Barrier(count + 1, timeout=120)
    start = threading.Event()

    def client() -> None:
        jitter = random.Random()
        with httpx.Client(base_url=url, timeout=60.0) as http:
            http.get("/healthz")  # connect before the clock starts
            all_connected.wait()
            start.wait()
            deadline = clock[1]
            while time.monotonic() < deadline:
                i = next(counter)
                started = time.monotonic()
                try:
                    if i % 2:
                        response = http.post("/api/suggest", json=tickets[i % len(tickets)])
                    else:
                        response = http.get("/api/search", params={"q": SEARCH_QUERIES[i % len(SEARCH_QUERIES)]})
                except httpx.HTTPError as exc:
                    with lock:
                        out["errors"].append(repr(exc))
                    continue
                done = time.monotonic()
                retry_after = None
                with lock:
                    if response.status_code == 200:
                        out["ok"].append(done - started)
                        out["ok_in_window"] += done <= deadline
                    elif (response.status_code == 503 and response.headers.get("retry-after", "").isdigit()
                          and response.json().get("error", {}).get("code") == "overloaded"):
                        out["refused"].append(done - started)
                        retry_after = int(response.headers["retry-after"])
                    else:
                        out["errors"].append(f"{response.status_code} {response.text[:200]}")
                if retry_after is not None and honour_retry_after:
                    pause = retry_after * (1 + jitter.random())
                    time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    all_connected.wait()
    connected.put(count)
    go.wait()
    time.sleep(max(0.0, clock[0] - time.monotonic()))
    start.set()
    for thread in threads:
        thread.join()
    results.put(out)


def run_cell(url: str, clients: int, seconds: float, tickets: list[dict], honour_retry_after: bool) -> dict:
    """`clients` client threads, THREADS_PER_PROCESS to a process (so that the clients' own GIL does not hold
    requests back), for `seconds` after all have connected; /healthz probed from this process meanwhile."""
    context = multiprocessing.get_context("fork")  # before this process starts any thread of the cell
    connected, results, go = context.Queue(), context.Queue(), context.Event()
    clock = context.Array("d", 2)  # start, deadline (time.monotonic: one clock for every process of the machine)
    sizes = [min(THREADS_PER_PROCESS, clients - n) for n in range(0, clients, THREADS_PER_PROCESS)]
    processes = [context.Process(target=client_process, args=(url, size, n * 7919, tickets, honour_retry_after,
                                                              connected, go, clock, results), daemon=True)
                 for n, size in enumerate(sizes)]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            connected.get(timeout=180)
        served_before = served_histograms(url)
        clock[0] = time.monotonic() + 0.2
        clock[1] = clock[0] + seconds
        go.set()
        health: list[float] = []
        health_errors: list[str] = []

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=60.0) as http:
                time.sleep(max(0.0, clock[0] - time.monotonic()))
                while time.monotonic() < clock[1]:
                    started = time.monotonic()
                    try:
                        status = http.get("/healthz").status_code
                    except httpx.HTTPError as exc:
                        status = repr(exc)
                    if status == 200:
                        health.append(time.monotonic() - started)
                    else:
                        health_errors.append(f"/healthz: {status}")
                    time.sleep(HEALTH_EVERY_S)

        prober = threading.Thread(target=probe)
        prober.start()
        outs = [results.get(timeout=seconds + 180) for _ in processes]
        prober.join()
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [e for out in outs for e in out["errors"]] + health_errors
    return {"served_before": served_before, "served_after": served_histograms(url),
            "ok": sum(len(out["ok"]) for out in outs), "ok_in_window": sum(out["ok_in_window"] for out in outs),
            "refused": sum(len(out["refused"]) for out in outs), "errors": len(errors), "error_samples": errors[:3],
            "seconds": seconds, "ok_latencies": [x for out in outs for x in out["ok"]],
            "refused_latencies": [x for out in outs for x in out["refused"]], "health_latencies": health}


def figures(cells: list[dict]) -> dict:
    """The rounds of one (setting, clients) pooled: goodput, admitted and refused latency, share refused, health,
    the server's CPU and its own view of the admitted requests' p99."""
    def ms(key: str) -> list[float]:
        return sorted(x * 1000 for cell in cells for x in cell[key])

    def r(value: float | None) -> float | None:
        return None if value is None or value != value else round(value, 1)  # NaN: no samples

    ok, refused, health = ms("ok_latencies"), ms("refused_latencies"), ms("health_latencies")
    seconds = sum(cell["seconds"] for cell in cells)
    answered = len(ok) + len(refused)
    cpu = sum(cell["server_cpu_s"] for cell in cells)
    served: dict[str, dict[float, float]] = {"ok": {}, "refused": {}, "health": {}}
    for cell in cells:  # what the cells added to the service's histograms
        for group, buckets in cell["served_after"].items():
            for bound, count in buckets.items():
                added = count - cell["served_before"][group].get(bound, 0.0)
                served[group][bound] = served[group].get(bound, 0.0) + added
    return {"goodput_per_s": round(sum(c["ok_in_window"] for c in cells) / seconds, 1),
            "ok": len(ok), "refused": len(refused), "errors": sum(c["errors"] for c in cells),
            "refused_share": round(len(refused) / answered, 3) if answered else None,
            "ok_p50_ms": r(percentile(ok, 50)), "ok_p99_ms": r(percentile(ok, 99)),
            "ok_max_ms": r(ok[-1] if ok else None),
            "goodput_rounds": [round(cell["ok_in_window"] / cell["seconds"], 1) for cell in cells],
            "served_ok_p99_ms": r(histogram_quantile({}, served["ok"], 0.99)),
            "served_refused_p99_ms": r(histogram_quantile({}, served["refused"], 0.99)),
            "served_health_max_ms": r(max_bucket(served["health"])),
            "refused_p50_ms": r(percentile(refused, 50)), "refused_p99_ms": r(percentile(refused, 99)),
            "health_p50_ms": r(percentile(health, 50)), "health_max_ms": r(health[-1] if health else None),
            "server_cores": round(cpu / seconds, 2),
            "server_cpu_ms_per_ok": round(1000 * cpu / len(ok), 1) if ok else None,
            "error_samples": [s for c in cells for s in c["error_samples"]][:3]}


def rejected_in_metrics(url: str) -> float:
    """kb_admission_rejected_total over every reason, as the service's /metrics says."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kb_admission_rejected_total"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index-dir", type=Path, default=OFFICE_INDEX,
                        help=f"index folder to serve; copied first, never modified (default {OFFICE_INDEX})")
    parser.add_argument("--limits", default="0,4/8/250",
                        help="settings compared, comma-separated: 0 (no admission control) or IN_FLIGHT/QUEUE/WAIT_MS;"
                             " the first is the baseline of the ratios (default 0,4/8/250: the defaults)")
    parser.add_argument("--clients", default="8,32,128", help="client threads per cell (default 8,32,128)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one cell (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every cell, settings interleaved")
    parser.add_argument("--ignore-retry-after", action="store_true",
                        help="clients send again at once after a 503 (default: they wait Retry-After, as asked)")
    parser.add_argument("--server-log-level", default="warning")
    args = parser.parse_args(argv)
    source = args.index_dir.resolve()
    if not (source / "CURRENT").is_file():
        parser.error(f"{source} holds no index (no CURRENT): build one with `kb index --index-dir {source}`")
    limits = args.limits.split(",")
    client_counts = [int(c) for c in args.clients.split(",")]
    tickets = load_tickets(TICKET_SET)
    load1 = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs; 1-minute load average {load1:.2f} at the start"
          + ("  (WARNING: other processes share the CPUs)" if load1 > 0.5 else ""))
    print(f"mixed GET /api/search ({len(SEARCH_QUERIES)} queries) and POST /api/suggest ({len(tickets)} tickets); "
          f"{args.seconds:.0f} s cells, {args.rounds} rounds; clients "
          f"{'send again at once' if args.ignore_retry_after else 'wait Retry-After'} after a 503")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    work = Path(tempfile.mkdtemp(prefix="kb-overload-"))
    servers: dict[str, LimitedServer] = {}
    try:
        index_dir = copy_index(source, work / "index")
        for setting in limits:  # all up at once, loaded in turn: the same machine state for every setting
            stores = work / f"stores-{setting.replace('/', '-')}"
            stores.mkdir()
            server = servers[setting] = LimitedServer(index_dir, free_port(), args.server_log_level, setting, stores)
            server.start()
        for setting, server in servers.items():
            with httpx.Client() as http:
                health = server.wait_healthy(http, 300)
            run_cell(server.url, 4, 2.0, tickets, True)  # warm up
            print(f"KB_MAX_IN_FLIGHT/QUEUE/WAIT_MS {setting}: pid {server.proc.pid}, index "
                  f"{health.get('index_version')} {health.get('counts')}")
        cells: dict[tuple[str, int], list[dict]] = {}
        for round_ in range(args.rounds):
            for clients in client_counts:
                order = limits if (round_ + clients) % 2 == 0 else limits[::-1]  # neither always goes first
                for setting in order:
                    pid = servers[setting].proc.pid
                    cpu_before = cpu_seconds({pid})
                    cell = run_cell(servers[setting].url, clients, args.seconds, tickets, not args.ignore_retry_after)
                    cell["server_cpu_s"] = cpu_seconds({pid}) - cpu_before  # the cell's tail included
                    cells.setdefault((setting, clients), []).append(cell)
                    print(f"  round {round_ + 1} clients {clients:>3} setting {setting:>10}: {cell['ok']} ok, "
                          f"{cell['refused']} refused, {cell['errors']} errors; load {os.getloadavg()[0]:.1f}")
                    time.sleep(1.0)  # let the server drain
        in_metrics = {setting: rejected_in_metrics(server.url) for setting, server in servers.items()}
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers.values():
            server.stop()
            Path(server.log.name).unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    table = {f"{setting} c{clients}": figures(rounds) for (setting, clients), rounds in cells.items()}
    base = limits[0]
    print("\nper cell: goodput req/s (each round) | admitted p50 / p99 / max ms | refused share, refused p99 ms | "
          "/healthz p50 / max ms | errors | the service's own histograms: admitted p99, refused p99, /healthz max "
          "bucket | server cores, CPU ms per 200")
    for clients in client_counts:
        for setting in limits:
            f = table[f"{setting} c{clients}"]
            line = (f"{clients:>4} clients {setting:>10}: {f['goodput_per_s']:5.1f} {f['goodput_rounds']} | "
                    f"{f['ok_p50_ms']} {f['ok_p99_ms']} {f['ok_max_ms']} | {f['refused_share']:.3f} "
                    f"{f['refused_p99_ms']} | {f['health_p50_ms']} {f['health_max_ms']} | {f['errors']} | "
                    f"{f['served_ok_p99_ms']} {f['served_refused_p99_ms']} {f['served_health_max_ms']} | "
                    f"{f['server_cores']} {f['server_cpu_ms_per_ok']}")
            if setting != base:
                b = table[f"{base} c{clients}"]
                line += (f"   goodput x{f['goodput_per_s'] / b['goodput_per_s']:.2f}, "
                         f"p99 x{f['ok_p99_ms'] / b['ok_p99_ms']:.2f}, in the service x"
                         f"{f['served_ok_p99_ms'] / b['served_ok_p99_ms']:.2f}")
            print(line)
    refused = {s: sum(table[f"{s} c{c}"]["refused"] for c in client_counts) for s in limits}
    print("503s seen by the clients / kb_admission_rejected_total in /metrics (with warm-up): "
          + ", ".join(f"{s}: {refused[s]} / {in_metrics[s]:.0f}" for s in limits))
    errors = sum(f["errors"] for f in table.values())
    print(json.dumps({"bench": "overload", "index": str(source), "cpus": os.cpu_count(),
                      "loadavg_1m_before": round(load1, 2), "seconds": args.seconds, "rounds": args.rounds,
                      "honour_retry_after": not args.ignore_retry_after, "cells": table,
                      "rejected_in_metrics": in_metrics}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
