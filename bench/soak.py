"""Soak (issue 14): a real `kb serve --watch` under searching and suggesting clients for an hour while a writer
edits or adds an article every minute (a new index version built and swapped in each time); the server's memory,
open files, threads and served version sampled every 10 s; PASS/FAIL on memory growth, flat open files and 0
failed requests."""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from live_reindex import edit, published_articles  # bench/ is on sys.path
from overload import LimitedServer
from suggest_latency import REPO_ROOT, SEARCH_QUERIES, TICKETS, _raise_interrupt, free_port, percentile
from version_swaps import open_files, rss_mb

from tests.conftest import stop_process  # noqa: E402  (the repo root is on sys.path: suggest_latency puts it)

OFFICE_CONTENT = Path("/work/shared/datasets/md-office-support-kb/articles")
OFFICE_INDEX = Path("/tmp/serve-bench/office-idx")
CACHE_FILE = "embed-cache.sqlite"
SAMPLE_EVERY_S = 10.0
MEMORY_GROWTH_LIMIT_PCT = 10.0
OPEN_FILES_SLACK = 5  # "flat": the last window's median at most this many files above the first's


class SoakServer(LimitedServer):
    """`kb serve --watch` over a content folder with admission control at the service's defaults and its side
    stores in a folder of its own; stopped as the tests stop a server (SIGTERM, a bounded wait, SIGKILL to its
    process group)."""

    def __init__(self, content: Path, index_dir: Path, port: int, stores: Path):
        super().__init__(index_dir, port, "warning", "", stores)
        self.content = content

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in super().environment().items() if not k.startswith("KB_MAX_")}

    def arguments(self) -> list[str]:
        return ["--index-dir", str(self.index_dir), "--content", str(self.content), "--watch"]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, timeout=30, group=True)
        self.log.close()


def build_index(content: Path, index_dir: Path, cache: Path | None) -> float:
    """`kb index` of the content copy, reusing the embedding cache `cache` when given (seconds, not minutes); the
    build is killed on any way out. Returns its seconds."""
    index_dir.mkdir(parents=True)
    if cache is not None:
        shutil.copy2(cache, index_dir / CACHE_FILE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "index", "--quiet", "--content", str(content),
                             "--index-dir", str(index_dir)], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=3 * 3600)  # from scratch on 2 shared cores: tens of minutes
    finally:
        stop_process(proc, signal.SIGTERM, timeout=30, group=True)
    if code != 0:
        raise RuntimeError(f"kb index exited with {code}")
    return time.monotonic() - started


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


class Tally:
    """What the clients, the writer and the sampler saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: list[tuple[float, float]] = []  # (monotonic time, latency ms) of each 2xx answer of a client
        self.refused = 0  # 503 with Retry-After
        self.failed: list[str] = []  # anything else, clients and probes alike
        self.probes = 0  # /healthz and the writer's own searches

    def failure(self, problem: str) -> None:
        with self.lock:
            self.failed.append(problem)


def refusal(response: httpx.Response) -> int | None:
    """Retry-After seconds when the response is the service's overload refusal (503 with Retry-After), else None."""
    retry_after = response.headers.get("retry-after", "")
    return int(retry_after) if response.status_code == 503 and retry_after.isdigit() else None


def client(n: int, base: str, stop_at: float, think_s: float, tally: Tally, stop: threading.Event) -> None:
    """One keep-alive connection alternating GET /api/search and POST /api/suggest with real queries and tickets, a
    think time of `think_s` x 0.5-1.5 between requests, and Retry-After x 1-2 after a refusal."""
    rng = random.Random(n)
    with httpx.Client(base_url=base, timeout=30) as http:
        i = n
        while not stop.is_set() and time.monotonic() < stop_at:
            started = time.monotonic()
            pause = think_s * rng.uniform(0.5, 1.5)
            try:
                if i % 2:
                    response = http.post("/api/suggest", json=rng.choice(TICKETS))
                else:
                    response = http.get("/api/search", params={"q": rng.choice(SEARCH_QUERIES)})
                retry_after = refusal(response)
                with tally.lock:
                    if response.is_success:
                        tally.ok.append((started, (time.monotonic() - started) * 1000))
                    elif retry_after is not None:
                        tally.refused += 1
                        pause = retry_after * (1 + rng.random())
                    else:
                        tally.failed.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                tally.failure(f"{type(exc).__name__}: {exc}")
            stop.wait(max(0.0, min(pause, stop_at - time.monotonic())))
            i += 1


def health(http: httpx.Client, tally: Tally) -> dict | None:
    """/healthz (never waits behind searches); None, and a failure counted, when it does not answer 200."""
    with tally.lock:
        tally.probes += 1
    try:
        response = http.get("/healthz")
        if response.status_code == 200:
            return response.json()
        tally.failure(f"/healthz {response.status_code} {response.text[:200]}")
    except httpx.HTTPError as exc:
        tally.failure(f"/healthz {type(exc).__name__}: {exc}")
    return None


def sampler(pid: int, base: str, started: float, stop_at: float, tally: Tally, samples: list[dict],
            stop: threading.Event) -> None:
    """Every SAMPLE_EVERY_S: RSS, open files and threads summed over the server's processes, and the version
    /healthz names."""
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set() and time.monotonic() < stop_at:
            rss = files = count = 0
            pids = process_tree(pid)
            for each in pids:
                try:
                    rss, files, count = rss + rss_mb(each), files + open_files(each), count + threads(each)
                except (OSError, ValueError):
                    continue  # exited between the listing and the reading
            state = health(http, tally) or {}
            samples.append({"t": round(time.monotonic() - started, 1), "rss_mb": round(rss, 1), "open_files": files,
                            "threads": count, "processes": len(pids), "version": state.get("index_version"),
                            "failed_build": bool((state.get("reload") or {}).get("failed_build")),
                            "load1": round(os.getloadavg()[0], 2)})
            stop.wait(max(0.0, min(SAMPLE_EVERY_S - (time.monotonic() - started) % SAMPLE_EVERY_S,
                                   stop_at - time.monotonic())))


def searchable(http: httpx.Client, article_id: str, token: str, tally: Tally, until: float) -> bool:
    """Whether a lexical search for `token` finds `article_id` (a refusal waits its Retry-After and asks again)."""
    while time.monotonic() < until:
        with tally.lock:
            tally.probes += 1
        try:
            response = http.get("/api/search", params={"q": token, "mode": "lexical", "k": 5})
        except httpx.HTTPError as exc:
            tally.failure(f"writer search {type(exc).__name__}: {exc}")
            return False
        retry_after = refusal(response)
        if retry_after is not None:
            with tally.lock:
                tally.refused += 1
            time.sleep(retry_after)
            continue
        if response.status_code != 200:
            tally.failure(f"writer search {response.status_code} {response.text[:200]}")
            return False
        return any(hit["id"] == article_id for hit in response.json()["results"])
    return False


def add_article(content: Path, n: int, token: str) -> str:
    """A new published article under soak/ that holds `token`; returns its id."""
    rel = f"soak/soak-note-{n}.md"
    (content / "soak").mkdir(exist_ok=True)
    (content / rel).write_text(
        f"---\ntitle: \"Soak note {n}: mailbox sync after a password change\"\nproduct: Outlook\nstatus: published\n"
        f"---\n\n# Soak note {n}\n\nAfter a password change Outlook may stop syncing the mailbox until the "
        f"profile signs in again. Agents report that {token} resolves the issue: close Outlook, sign in to the "
        f"web mailbox once, then open Outlook and enter the new password when asked.\n", encoding="utf-8")
    return rel.removesuffix(".md")


def writer(base: str, content: Path, articles: list[tuple[str, str]], swap_s: float, started: float,
           stop_at: float, tally: Tally, swaps: list[dict], stop: threading.Event) -> None:
    """Every `swap_s`: edit a published article (odd turns: add a new one), then wait for the version it makes to be
    served and check the edit is searchable."""
    rng = random.Random(7)
    with httpx.Client(base_url=base, timeout=30) as http:
        for n in range(1, int((stop_at - started) // swap_s) + 1):
            due = started + n * swap_s
            if stop.wait(max(0.0, due - time.monotonic())) or due + 0.5 * swap_s > stop_at:
                return  # stopped, or too late for a swap to be seen before the end
            before = (health(http, tally) or {}).get("index_version")
            token = f"kbsoak{n}q{rng.randrange(10 ** 6)}"
            if n % 2:
                article_id = add_article(content, n, token)
                kind = "add"
            else:
                article_id, rel = rng.choice(articles)
                edit(content, rel, token, {})
                kind = "edit"
            written = time.monotonic()
            until, served = written + 0.9 * swap_s, None
            while not stop.is_set() and time.monotonic() < until:
                version = (health(http, tally) or {}).get("index_version")
                if version and version != before:
                    served = version
                    break
                time.sleep(0.2)
            swaps.append({"n": n, "kind": kind, "article": article_id, "t": round(written - started, 1),
                          "version": served, "seconds": round(time.monotonic() - written, 2) if served else None,
                          "searchable": bool(served) and searchable(http, article_id, token, tally, until)})


def windows(values: list[tuple[float, float]], window_s: float) -> list[list[float]]:
    """Values (elapsed seconds, value) split into consecutive windows of `window_s`."""
    count = max(1, int(max((t for t, _ in values), default=0) // window_s) + 1)
    out: list[list[float]] = [[] for _ in range(count)]
    for t, value in values:
        out[min(count - 1, int(t // window_s))].append(value)
    return out


def report(samples: list[dict], tally: Tally, swaps: list[dict], started: float, window_s: float, args) -> dict:
    """The figures and the verdict on issue 14's three criteria (the first window is the warm-up)."""
    rss = windows([(s["t"], s["rss_mb"]) for s in samples], window_s)
    files = windows([(s["t"], s["open_files"]) for s in samples], window_s)
    thread_counts = windows([(s["t"], s["threads"]) for s in samples], window_s)
    latency = windows([(t - started, ms) for t, ms in tally.ok], window_s)
    first, last = (1, len(rss) - 1) if len(rss) >= 3 else (0, len(rss) - 1)
    rss_first, rss_last = statistics.median(rss[first]), statistics.median(rss[last])
    growth = 100 * (rss_last - rss_first) / rss_first
    files_first, files_last = statistics.median(files[first]), statistics.median(files[last])
    served = [s for s in swaps if s["version"]]
    versions = [s["version"] for s in samples if s["version"]]
    figures = {
        "minutes": args.minutes, "clients": args.clients, "swap_seconds": args.swap_seconds, "think_ms": args.think_ms,
        "window_minutes": round(window_s / 60, 2), "samples": len(samples),
        "requests": len(tally.ok) + tally.refused + len(tally.failed), "ok": len(tally.ok), "refused": tally.refused,
        "failed": len(tally.failed), "failure_samples": tally.failed[:5], "probes": tally.probes,
        "writes": len(swaps), "swaps": len(served), "swaps_searchable": sum(s["searchable"] for s in swaps),
        "seconds_to_swap_median": statistics.median([s["seconds"] for s in served]) if served else None,
        "seconds_to_swap_max": max([s["seconds"] for s in served], default=None),
        "writes_not_served": [{k: s[k] for k in ("n", "kind", "article", "t")} for s in swaps if not s["version"]],
        "versions_seen_by_sampler": len(set(versions)),
        "failed_build_samples": sum(s["failed_build"] for s in samples),
        "rss_mb_first_window": round(rss_first, 1), "rss_mb_last_window": round(rss_last, 1),
        "rss_growth_pct": round(growth, 2), "rss_mb_max": max(s["rss_mb"] for s in samples),
        "per_window": [{"window": k, "rss_mb_median": round(statistics.median(rss[k]), 1) if rss[k] else None,
                        "open_files_min_median_max": [min(files[k]), statistics.median(files[k]), max(files[k])]
                        if files[k] else None,
                        "threads_max": max(thread_counts[k]) if thread_counts[k] else None,
                        "requests_ok": len(latency[k]) if k < len(latency) else 0,
                        "p50_ms": round(percentile(sorted(latency[k]), 50), 1) if k < len(latency) and latency[k]
                        else None,
                        "p99_ms": round(percentile(sorted(latency[k]), 99), 1) if k < len(latency) and latency[k]
                        else None} for k in range(len(rss))],
        "open_files_first_window_median": files_first, "open_files_last_window_median": files_last,
        "load1_min_median_max": [min(s["load1"] for s in samples), statistics.median(s["load1"] for s in samples),
                                 max(s["load1"] for s in samples)],
    }
    figures["pass"] = {"memory_growth_under_10pct": growth < MEMORY_GROWTH_LIMIT_PCT,
                       "open_files_flat": files_last <= files_first + OPEN_FILES_SLACK,
                       "zero_failed_requests": not tally.failed}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the load (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="client threads, one keep-alive connection each")
    parser.add_argument("--swap-seconds", type=float, default=60.0, help="a write (a new version) this often")
    parser.add_argument("--think-ms", type=float, default=50.0, help="a client's pause between requests (x 0.5-1.5)")
    parser.add_argument("--window-minutes", type=float, default=None,
                        help="length of a reporting window (default 10, or a third of a shorter run)")
    parser.add_argument("--content", type=Path, default=OFFICE_CONTENT, help="content folder (copied, never edited)")
    parser.add_argument("--cache-from", type=Path, default=OFFICE_INDEX / CACHE_FILE,
                        help="an embedding cache to start from (copied; default the prebuilt office index's); "
                             "missing: every passage is embedded (slow)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.swap_seconds < 5:
        parser.error("--minutes above 0, --clients at least 1, --swap-seconds at least 5")
    window_s = 60 * (args.window_minutes or min(10.0, args.minutes / 3))
    admission = {k: v for k, v in os.environ.items() if k.startswith("KB_MAX_")}
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start; "
          f"admission control {admission or 'at the service defaults'}", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    work = Path(tempfile.mkdtemp(prefix="kb-soak-"))
    server = None
    stop = threading.Event()
    tally, samples, swaps = Tally(), [], []
    workers: list[threading.Thread] = []
    try:
        content = work / "content"
        shutil.copytree(args.content, content)
        cache = args.cache_from if args.cache_from and args.cache_from.is_file() else None
        seconds = build_index(content, work / "index", cache)
        print(f"built the index of {content} in {seconds:.0f} s ({'from the cache ' + str(cache) if cache else 'from scratch'})",
              flush=True)
        (work / "stores").mkdir()
        server = SoakServer(content, work / "index", free_port(), work / "stores")
        server.start()
        with httpx.Client() as http:
            state = server.wait_healthy(http, 300)
        print(f"kb serve --watch pid {server.proc.pid}: version {state['index_version']} {state['counts']}, "
              f"watching {state['reload'].get('watching')}", flush=True)
        articles = published_articles(work / "index")
        started = time.monotonic()
        stop_at = started + 60 * args.minutes
        workers = [threading.Thread(target=client, args=(n, server.url, stop_at, args.think_ms / 1000, tally, stop))
                   for n in range(args.clients)]
        workers.append(threading.Thread(target=sampler, args=(server.proc.pid, server.url, started, stop_at, tally,
                                                              samples, stop)))
        workers.append(threading.Thread(target=writer, args=(server.url, content, articles, args.swap_seconds,
                                                             started, stop_at, tally, swaps, stop)))
        for worker in workers:
            worker.start()
        reported = 0
        while time.monotonic() < stop_at and server.proc.poll() is None:
            time.sleep(min(5.0, max(0.0, stop_at - time.monotonic())))
            if len(samples) >= reported + 30 or (samples and time.monotonic() >= stop_at):  # every 5 minutes
                reported = len(samples)
                s = samples[-1]
                print(f"  {s['t'] / 60:5.1f} min: RSS {s['rss_mb']:.0f} MB, {s['open_files']} open files, "
                      f"{s['threads']} threads, version {s['version']}; {len(tally.ok)} ok, {tally.refused} refused, "
                      f"{len(tally.failed)} failed, {sum(1 for w in swaps if w['version'])} swaps; load {s['load1']}",
                      flush=True)
        if server.proc.poll() is not None:
            tally.failure(f"kb serve exited with {server.proc.returncode}")
            print(server.log_tail(), file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; stopping the server", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        if server is not None:
            server.stop()
            Path(server.log.name).unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    if not samples:
        print("no sample taken", file=sys.stderr)
        return 1
    figures = report(samples, tally, swaps, started, window_s, args)
    print(f"\nswaps {figures['swaps']} of {figures['writes']} writes (searchable {figures['swaps_searchable']}, "
          f"seconds to swap median {figures['seconds_to_swap_median']} max {figures['seconds_to_swap_max']}); "
          f"requests {figures['requests']}: {figures['ok']} ok, {figures['failed']} failed, "
          f"{figures['refused']} refused (503 + Retry-After); {figures['probes']} probes")
    for write in figures["writes_not_served"]:
        print(f"  write {write['n']} ({write['kind']} {write['article']} at {write['t']} s): no new version served "
              f"within {0.9 * args.swap_seconds:g} s")
    for problem in figures["failure_samples"]:
        print("  failure:", problem)
    print(f"RSS (sum over {max(s['processes'] for s in samples)} process(es), median of a window) "
          f"{figures['rss_mb_first_window']} MB in the first window after the warm-up -> "
          f"{figures['rss_mb_last_window']} MB in the last: {figures['rss_growth_pct']:+.2f}%")
    for w in figures["per_window"]:
        print(f"  window {w['window']} ({w['window'] * figures['window_minutes']:g}-"
              f"{(w['window'] + 1) * figures['window_minutes']:g} min): RSS {w['rss_mb_median']} MB, open files "
              f"min/median/max {w['open_files_min_median_max']}, threads max {w['threads_max']}, "
              f"{w['requests_ok']} ok, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms")
    print(f"load average min/median/max {figures['load1_min_median_max']}")
    verdict = figures["pass"]
    for name, ok in verdict.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(json.dumps({"bench": "soak", **figures}))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
