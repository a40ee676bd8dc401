"""Search and suggest over HTTP from two source trees side by side: what a change does to a request end to end.

Two `kb serve --no-watch` children, one per tree (A: e.g. a worktree of the code before, B: this one), each over its
index (--b-index-dir when B's code writes a different index, e.g. a copy whose ANN file B trained), with their side
stores in a temporary folder and the model cache of this checkout. One keep-alive http.client connection per server;
every call goes to both, one right after the other, the order alternating call by call, so both see the same load.
Calls: the `kind: query` items of eval/tickets-dev and eval/tickets-check as GET /api/search (k=10) and their items
with a subject as POST /api/suggest (k=5), as bench/growth.py sends them; each round appends its number to every
text after the first, so every timed call is new to both servers' query-vector memory (the encoding is included, as
for a user). Prints p50 / p90 per tree, B / A, the per-call ratio's median and whether the answers' article ids
agree. `--blocks N`: instead of call by call, each server in turn answers a block of N calls while the other is
idle, so that what a server does in the background after a call (the event log's writer) slows its own next
calls and not the other's. `--clients N` (with --blocks): N client threads, one connection each, share a block's
calls, so both servers are compared under concurrent load; the table then adds each server's calls a second over
its blocks. Usage:
  git worktree add --detach /tmp/wt-before HEAD
  .venv/bin/python bench/http_ab.py --a /tmp/wt-before --b . --index-dir IDX [--b-index-dir IDX2] [--rounds 2]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.growth import load_queries  # noqa: E402
from bench.suggest_latency import Server, free_port  # noqa: E402

SIDES = ("A", "B")


def ask(conn: http.client.HTTPConnection, kind: str, item) -> tuple[float, list[str]]:
    """(wall ms, article ids) of one call on a kept-alive connection."""
    if kind == "search":
        method, path, body = "GET", "/api/search?" + urllib.parse.urlencode({"q": item, "k": 10}), None
    else:
        method, path, body = "POST", "/api/suggest", json.dumps({**item, "k": 5})
    started = time.perf_counter()
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    response = conn.getresponse()
    data = response.read()
    wall = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{path[:40]}: {response.status} {data[:200]!r}")
    answer = json.loads(data)
    return wall, [hit["id"] for hit in answer.get("results", answer.get("articles", []))]


def answer_block(pool: ThreadPoolExecutor, conns: list, kind: str, block: list) -> list[tuple[float, list[str]]]:
    """Every call of a block, in order: client thread c (its own connection) asks calls c, c + N, c + 2N, ..."""
    if len(conns) == 1:
        return [ask(conns[0], kind, call) for call in block]
    got: list = [None] * len(block)

    def client(c: int) -> None:
        for k in range(c, len(block), len(conns)):
            got[k] = ask(conns[c], kind, block[k])

    for future in [pool.submit(client, c) for c in range(len(conns))]:
        future.result()
    return got


def variant(kind: str, item, round_no: int):
    """The call of this round: the item itself in round 0, its text with the round number appended after."""
    if round_no == 0:
        return item
    if kind == "search":
        return f"{item} {round_no}"
    return {**item, "body": f"{item['body']} {round_no}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="source tree A")
    parser.add_argument("--b", type=Path, default=REPO_ROOT, help="source tree B (default: this one)")
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--b-index-dir", type=Path, help="B's index (default: --index-dir)")
    parser.add_argument("--model-cache", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=0, help="calls per block, servers taking turns (0: call by "
                        "call)")
    parser.add_argument("--clients", type=int, default=1, help="client threads sharing a block's calls")
    args = parser.parse_args()
    if args.clients < 1 or (args.clients > 1 and args.blocks < args.clients):
        parser.error("--clients N needs --blocks of at least N calls")
    queries = load_queries()
    work = Path(tempfile.mkdtemp(prefix="kb-http-ab-"))
    servers = {}
    for side, root, index_dir in (("A", args.a, args.index_dir), ("B", args.b, args.b_index_dir or args.index_dir)):
        env = {"KB_MODEL_CACHE_DIR": str(args.model_cache.resolve()),
               **{f"KB_{store}_DB": str(work / f"{side}-{store.lower()}.sqlite")
                  for store in ("ANALYTICS", "FEEDBACK", "USAGE", "AUTH")}}
        servers[side] = Server(index_dir.resolve(), free_port(), "warning", root=root.resolve(), env=env)
    try:
        for server in servers.values():
            server.start()
        with httpx.Client(timeout=60.0) as client:
            for server in servers.values():
                server.wait_healthy(client, 900)
        conns = {side: [http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                        for _ in range(args.clients)] for side, server in servers.items()}
        pool = ThreadPoolExecutor(max_workers=args.clients)
        load = os.getloadavg()
        print(f"A = {args.a} ({args.index_dir}), B = {args.b} ({args.b_index_dir or args.index_dir}); "
              f"{len(queries['search'])} searches and {len(queries['suggest'])} suggests x {args.rounds} rounds, "
              f"every call new to both, {f'blocks of {args.blocks}' if args.blocks else 'call by call'}, "
              f"{args.clients} client(s); "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        for kind in ("search", "suggest"):
            for item in queries[kind][-5:]:  # warm-up (lazy loads), on texts no timed call asks
                for side in SIDES:
                    ask(conns[side][0], kind, variant(kind, item, 99))
        results = {}
        for kind in ("search", "suggest"):
            wall = {side: [] for side in SIDES}
            busy = {side: 0.0 for side in SIDES}  # seconds each server spent answering its blocks
            ratios, differ = [], 0
            calls = [variant(kind, item, round_no) for round_no in range(args.rounds) for item in queries[kind]]
            size = args.blocks or 1
            for number, start in enumerate(range(0, len(calls), size)):
                block = calls[start:start + size]
                order = SIDES if number % 2 == 0 else SIDES[::-1]
                got = {}
                for side in order:
                    started = time.perf_counter()
                    got[side] = answer_block(pool, conns[side], kind, block)
                    busy[side] += time.perf_counter() - started
                for k in range(len(block)):
                    for side in SIDES:
                        wall[side].append(got[side][k][0])
                    ratios.append(got["B"][k][0] / got["A"][k][0])
                    differ += got["A"][k][1] != got["B"][k][1]
            row = {side: {"p50": round(statistics.median(wall[side]), 2),
                          "p90": round(statistics.quantiles(wall[side], n=10)[-1], 2)} for side in SIDES}
            row["b_over_a_p50"] = round(row["B"]["p50"] / row["A"]["p50"], 3)
            row["per_call_ratio_median"] = round(statistics.median(ratios), 3)
            row["calls"], row["article_lists_differ"] = len(ratios), differ
            for side in SIDES:
                row[side]["calls_per_s"] = round(len(ratios) / busy[side], 1)
            results[kind] = row
            print(f"| {kind} | A p50 {row['A']['p50']} / p90 {row['A']['p90']} ms | B p50 {row['B']['p50']} / p90 "
                  f"{row['B']['p90']} ms | B/A p50 {row['b_over_a_p50']} | per call {row['per_call_ratio_median']} "
                  f"| article lists differ {differ} of {len(ratios)} | calls/s A {row['A']['calls_per_s']} / B "
                  f"{row['B']['calls_per_s']} |", flush=True)
        results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(results))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
