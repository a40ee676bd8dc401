"""What recording an answer in the analytics event log costs a search: in one process, and over HTTP under load."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx

from suggest_latency import (REPO_ROOT, SEARCH_QUERIES, TICKETS, Server, _raise_interrupt, free_port, percentile,
                             run_load, summarise)  # bench/ is on sys.path


def ms_figures(seconds: list[float]) -> dict:
    values = sorted(s * 1000 for s in seconds)
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 4), "p90_ms": round(percentile(values, 90), 4),
            "p99_ms": round(percentile(values, 99), 4), "mean_ms": round(statistics.fmean(values), 4)}


def ensure_index(index_dir: Path | None, content: Path) -> Path:
    """The index to measure on: --index-dir as given, or the starter knowledge base built once with the real model."""
    if index_dir is not None:
        return index_dir
    from indexer.build import build_index
    from kb.embedder import Embedder
    from kb.settings import load_settings
    from kb.index import open_backend

    target = Path(tempfile.gettempdir()) / "kb-bench-event-log" / "index"
    if open_backend(target).current() is None:
        print(f"building an index of {content} into {target} (once) ...", flush=True)
        build_index(load_settings({}, content_dir=content, index_dir=target), Embedder(), progress=False)
    return target


# ---- 1. in one process: the same searches with and without the recording, side by side -----------------------

def in_process(index_dir: Path, rounds: int, workdir: Path) -> dict:
    """Each query searched twice in alternation, once as it is and once followed by what the routes do to record
    it (answer id, usage log off, language, ranked ids, record_answer onto a live EventLog whose writer redacts,
    takes the topic vector and writes meanwhile), so drift in the machine's load hits both arms alike. Every search
    text is new (a number appended), as real queries are: no arm is answered from the query-vector memory."""
    from kb.embedder import Embedder
    from kb.events import EventLog
    from kb.recent_vectors import RecentVectors
    from kb.settings import load_settings
    from kb.index import open_backend
    from search.routes.events import answered
    from search.searcher import Searcher

    settings = load_settings({}, index_dir=index_dir, analytics_db=workdir / "analytics.sqlite",
                             feedback_db=workdir / "feedback.sqlite")
    # as the service
    encoder = RecentVectors(Embedder(query_engine=settings.query_engine, cache_dir=settings.model_cache_dir))
    encoder.load()
    searcher = Searcher(open_backend(index_dir).open(model_id=encoder.model_id), encoder, settings)
    events = EventLog(settings, encoder)
    events.start()
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(kb=SimpleNamespace(events=events,
                                                                                           usage=None))),
                              headers={}, state=SimpleNamespace())
    for q in SEARCH_QUERIES:  # warm-up
        answered(request, "search", searcher.search(q, 10), time.perf_counter(), source="page")
    assert events.flush(60)
    plain, recorded, recording = [], [], []
    unique = itertools.count(1)
    for n in range(rounds):
        for q in SEARCH_QUERIES:
            arms = ("plain", "recorded") if n % 2 == 0 else ("recorded", "plain")
            for arm in arms:
                text = f"{q} {next(unique)}"
                started = time.perf_counter()
                result = searcher.search(text, 10)
                if arm == "recorded":
                    before = time.perf_counter()
                    answered(request, "search", result, started, source="page")
                    done = time.perf_counter()
                    recording.append(done - before)
                    recorded.append(done - started)
                else:
                    plain.append(time.perf_counter() - started)
    queued_at_end = events.stats()["queued"]
    flush_started = time.perf_counter()
    assert events.flush(300)
    flushed = time.perf_counter() - flush_started
    stats = events.stats()
    events.close()
    figures = {"searches_per_arm": len(plain), "topic_vectors_reused": encoder.hits,
               "search_alone": ms_figures(plain),
               "search_and_recording": ms_figures(recorded), "recording_step": ms_figures(recording),
               "ratio_p50": round(ms_figures(recorded)["p50_ms"] / ms_figures(plain)["p50_ms"], 4),
               "writer": {**stats, "batches": events.batches, "queued_when_searches_ended": queued_at_end,
                          "seconds_to_drain_after": round(flushed, 3)}}
    return figures


# ---- 3. the writer's capacity: how many answer events a second it redacts, embeds and writes ----------------------

def writer_capacity(index_dir: Path, workdir: Path, events: int) -> dict:
    """`events` answer events (search words and cleaned tickets, each text new) queued at once, then timed until
    written: with every topic vector computed by the writer (worst case: no vector to reuse), and with none to
    compute (what the service's query-vector memory gives where redaction changed nothing)."""
    from kb.embedder import Embedder
    from kb.events import EventLog
    from kb.settings import load_settings
    from search.tickets import build_query

    settings = load_settings({})
    encoder = Embedder(query_engine=settings.query_engine, cache_dir=settings.model_cache_dir)
    encoder.load()
    cleaned = [build_query(t["subject"], t["body"], max_words=80).text for t in TICKETS]
    texts = [f"{SEARCH_QUERIES[n % len(SEARCH_QUERIES)]} {n}" if n % 5 < 3 else f"{cleaned[n % len(cleaned)]} {n}"
             for n in range(events)]
    figures = {}
    for name, model in (("topics_computed", encoder), ("topics_reused", None)):
        folder = workdir / name
        settings = load_settings({}, analytics_db=folder / "analytics.sqlite", feedback_db=folder / "fb.sqlite",
                                 analytics_queue_size=events + 1)
        log = EventLog(settings, model)
        for n, text in enumerate(texts):
            log.record_answer("search" if n % 5 < 3 else "suggest", "api:bench", f"{n:016x}", text,
                              [(f"A/{k}", 1.0 - k / 10) for k in range(5)], language="en", confidence=0.7,
                              confident=True, latency_ms=10.0)
        started = time.perf_counter()
        log.start()
        assert log.flush(900)
        seconds = time.perf_counter() - started
        log.close()
        figures[name] = {"events": events, "seconds": round(seconds, 2), "events_per_s": round(events / seconds, 1),
                         **log.stats(), "batches": log.batches}
    return figures


# ---- 2. over HTTP: one kb service, the event log switched on and off between rounds ----------------------------

def serve(index_dir: Path, port: int, workdir: Path, topics: bool = True) -> None:
    """The service with a bench-only switch: POST /__bench/events/on|off detaches or re-attaches the event log
    (off: the routes record nothing, as if there were no event log; the writer is idle)."""
    import uvicorn
    from fastapi import FastAPI

    from kb.settings import load_settings
    from search.app import create_app

    settings = load_settings({}, index_dir=index_dir, port=port, analytics_db=workdir / "analytics.sqlite",
                             feedback_db=workdir / "feedback.sqlite", usage_db=workdir / "usage.sqlite",
                             auth_db=workdir / "auth.sqlite", webhook_db=workdir / "webhooks.sqlite", watch=False,
                             log_level="warning")
    app = create_app(settings)
    original = app.router.lifespan_context
    kept = {}

    @asynccontextmanager
    async def lifespan(a: FastAPI):
        async with original(a) as value:
            kept["events"] = a.state.kb.events
            if not topics:
                a.state.kb.events.encoder = None  # --no-topics: the writer embeds nothing
            yield value
            a.state.kb.events = kept["events"]  # stopped with the service

    app.router.lifespan_context = lifespan

    @app.post("/__bench/events/{switch}", include_in_schema=False)
    def switch_events(switch: str) -> dict:
        log = kept["events"]
        log.flush(120)  # the next round starts with an idle writer
        app.state.kb.events = log if switch == "on" else None
        queries = app.state.kb.queries  # kb/recent_vectors.py: how often a vector was reused
        return {"events": switch, **log.stats(), "vectors_reused": queries.hits, "vectors_computed": queries.misses}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class BenchServer(Server):
    def __init__(self, index_dir: Path, port: int, workdir: Path, topics: bool):
        super().__init__(index_dir, port, "warning")
        self.workdir, self.topics = workdir, topics

    def start(self) -> None:
        env = {"KB_MAX_IN_FLIGHT": "0",  # capacity, not admission (bench/overload.py measures that)
               **os.environ, "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, str(Path(__file__).resolve()), "serve", "--index-dir", str(self.index_dir),
                   "--port", str(self.port), "--workdir", str(self.workdir)] + ([] if self.topics else ["--no-topics"])
        self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)


def over_http(index_dir: Path, workdir: Path, rounds: int, requests: int, clients: tuple[int, ...],
              topics: bool = True) -> dict:
    """Rounds alternate on, off, off, on, ...; each round sends `requests` searches and `requests // 3` suggests per
    client count; latencies of one arm are pooled over its rounds."""
    server = BenchServer(index_dir, free_port(), workdir, topics)
    server.start()
    pooled: dict[tuple[str, str, int], list[float]] = {}
    walls: dict[tuple[str, str, int], float] = {}
    errors = 0
    writer = {}
    try:
        with httpx.Client(timeout=60) as client:
            server.wait_healthy(client, 180)
            unique = itertools.count(1)  # every request's text is new, as real queries and tickets are
            for i in range(20):  # warm-up
                client.get(f"{server.url}/api/search", params={"q": SEARCH_QUERIES[i % len(SEARCH_QUERIES)]})
                ticket = TICKETS[i % len(TICKETS)]
                client.post(f"{server.url}/api/suggest", json={"subject": ticket["subject"], "body": ticket["body"]})
            order = [("on", "off") if r % 2 == 0 else ("off", "on") for r in range(rounds)]
            for pair in order:
                for arm in pair:
                    writer[arm] = client.post(f"{server.url}/__bench/events/{arm}").json()
                    for n in clients:
                        for endpoint, count in (("search", requests), ("suggest", max(requests // 3, 1))):
                            if endpoint == "search":
                                def make(c, i):
                                    q = f"{SEARCH_QUERIES[i % len(SEARCH_QUERIES)]} {next(unique)}"
                                    return c.get(f"{server.url}/api/search", params={"q": q, "k": 10})
                            else:
                                def make(c, i):
                                    ticket = TICKETS[i % len(TICKETS)]
                                    subject = f"{ticket['subject']} {next(unique)}"
                                    return c.post(f"{server.url}/api/suggest",
                                                  json={"subject": subject, "body": ticket["body"], "k": 5})
                            latencies, wall, failed, _ = run_load(make, count, n)
                            key = (arm, endpoint, n)
                            pooled.setdefault(key, []).extend(latencies)
                            walls[key] = walls.get(key, 0.0) + wall
                            errors += failed
            final = client.post(f"{server.url}/__bench/events/on").json()
    finally:
        server.stop()
    figures: dict = {"rounds": rounds, "errors": errors, "writer_after": final, "cells": []}
    for endpoint in ("search", "suggest"):
        for n in clients:
            on, off = summarise(pooled[("on", endpoint, n)], walls[("on", endpoint, n)], 0), \
                summarise(pooled[("off", endpoint, n)], walls[("off", endpoint, n)], 0)
            figures["cells"].append({"endpoint": endpoint, "clients": n, "on": on, "off": off,
                                     "p50_ratio": round(on["p50_ms"] / off["p50_ms"], 3),
                                     "p99_ratio": round(on["p99_ms"] / off["p99_ms"], 3),
                                     "req_s_ratio": round(on["requests_per_s"] / off["requests_per_s"], 3)})
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", choices=("all", "process", "http", "writer", "serve"), default="all")
    parser.add_argument("--index-dir", type=Path, default=None,
                        help="index to search (default: content/ built once into the temp folder)")
    parser.add_argument("--content", type=Path, default=REPO_ROOT / "content")
    parser.add_argument("--rounds", type=int, default=10, help="in process: passes over the 20 queries per arm")
    parser.add_argument("--http-rounds", type=int, default=10, help="over HTTP: rounds per arm (alternating)")
    parser.add_argument("--requests", type=int, default=30,
                        help="over HTTP: searches per round and client count (suggests: a third)")
    parser.add_argument("--writer-events", type=int, default=3000, help="writer capacity: events queued at once")
    parser.add_argument("--clients", default="1,4", help="over HTTP: client counts (default 1,4)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-topics", action="store_true", help="the writer computes no topic vectors")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kb-bench-events-"))
    if args.mode == "serve":
        serve(args.index_dir, args.port, workdir, topics=not args.no_topics)
        return 0
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: 1-minute load average {load:.2f}: figures are noisy on a busy machine", flush=True)
    index_dir = ensure_index(args.index_dir, args.content)
    result: dict = {"index_dir": str(index_dir), "load_average_start": round(load, 2)}
    if args.mode in ("all", "process"):
        fig = in_process(index_dir, args.rounds, workdir / "process")
        result["in_process"] = fig
        print(f"in process, {fig['searches_per_arm']} searches per arm (k=10), alternating:")
        for name in ("search_alone", "search_and_recording", "recording_step"):
            f = fig[name]
            print(f"  {name:<22} p50 {f['p50_ms']:8.4f} ms  p90 {f['p90_ms']:8.4f}  p99 {f['p99_ms']:8.4f}  "
                  f"mean {f['mean_ms']:8.4f}")
        print(f"  ratio of p50 (with / without): {fig['ratio_p50']}   writer: {fig['writer']}")
    if args.mode in ("all", "http"):
        (workdir / "http").mkdir(parents=True, exist_ok=True)
        clients = tuple(int(c) for c in args.clients.split(","))
        fig = over_http(index_dir, workdir / "http", args.http_rounds, args.requests, clients, not args.no_topics)
        result["over_http"] = fig
        print(f"over HTTP, {fig['rounds']} rounds per arm, {fig['errors']} errors; writer {fig['writer_after']}")
        for cell in fig["cells"]:
            on, off = cell["on"], cell["off"]
            print(f"  {cell['endpoint']:<8} clients {cell['clients']}: p50 {on['p50_ms']} / {off['p50_ms']} ms "
                  f"(on / off, ratio {cell['p50_ratio']}), p99 {on['p99_ms']} / {off['p99_ms']} "
                  f"({cell['p99_ratio']}), req/s {on['requests_per_s']} / {off['requests_per_s']} "
                  f"({cell['req_s_ratio']})")
    if args.mode in ("all", "writer"):
        fig = writer_capacity(index_dir, workdir / "writer", args.writer_events)
        result["writer_capacity"] = fig
        for name, f in fig.items():
            print(f"writer, {name}: {f['events']} events in {f['seconds']} s = {f['events_per_s']} events/s "
                  f"({f['batches']} transactions, {f['errors']} errors)")
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
