"""In-process latency of Searcher.search and .suggest of two source trees over one index, calls interleaved.

Each tree runs in a child process of its own (its code on sys.path first) that loads the service's query encoder and
a Searcher over --index-dir; the driver hands both the same calls in alternating rounds (the order alternated each
round), so that both see the same machine load, and prints p50 / p90 (wall) per call kind and tree, the ratio B / A,
the median of the per-round ratios (paired under the same load) and the process CPU time per call (less sensitive to
what else runs on the machine).
Kinds: search and suggest as the API calls them (encoding included), each without a filter and with the public-only
filter of keys without the internal scope, and `retrieve`: the retrieval of a suggest from a query vector computed
beforehand (the index's share alone). Usage:
  git worktree add /tmp/wt-before HEAD
  .venv/bin/python bench/searcher_ab.py --a /tmp/wt-before --b . --index-dir /tmp/office-idx [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.suggest_latency import TICKETS  # noqa: E402

CHILD = r"""
import json, os, sys, time
from pathlib import Path
root, index_dir, cache = sys.argv[1:4]
sys.path.insert(0, root)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from kb.embedder import make_embedder
from kb.settings import load_settings
from search.searcher import Filters, Searcher, make_query
from search.tickets import build_query
if (Path(root) / "kb" / "index").is_dir():
    from kb.index import open_backend
    def open_index(path, model):
        return open_backend(path).open(model_id=model)
else:  # a tree from before kb.index (an editable install would find this tree's kb.index for it: not asked)
    from kb.store import open_current as open_index
settings = load_settings({}, index_dir=Path(index_dir), model_cache_dir=Path(cache))
encoder = make_embedder(settings)
encoder.load()
S = Searcher(open_index(Path(index_dir), encoder.model_id), encoder, settings)
tickets = json.loads(sys.stdin.readline())
vectors = []
for t in tickets:
    ticket = build_query(t["subject"], t["body"], max_words=settings.query_max_words)
    query = make_query(ticket, t["subject"], S.glossary, S.embed)
    vectors.append((query, encoder.encode_queries([query.dense, *query.alternatives])[0]))
PUBLIC = Filters(public_only=True)
def run(kind, i):
    t = tickets[i % len(tickets)]
    if kind == "search":
        return S.search(t["subject"], k=10)
    if kind == "search public":
        return S.search(t["subject"], k=10, filters=PUBLIC)
    if kind == "suggest":
        return S.suggest(t["subject"], t["body"], k=5)
    if kind == "suggest public":
        return S.suggest(t["subject"], t["body"], k=5, filters=PUBLIC)
    query, vector = vectors[i % len(vectors)]
    return S.candidates(query, vector=vector)
for kind in ("search", "suggest", "retrieve"):
    for i in range(len(tickets)):
        run(kind, i)  # warm-up: first calls pay for lazy loads
print("ready", flush=True)
for line in sys.stdin:
    kind, n = json.loads(line)
    times, cpu, answers = [], [], []
    for i in range(n):
        started, used = time.perf_counter(), time.process_time()
        out = run(kind, i)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
        if kind.startswith(("search", "suggest")):
            answers.append(json.dumps(out, sort_keys=True))  # the whole response: articles, scores, snippets
        else:
            answers.append([sorted((k, round(v, 5)) for k, v in s.items()) for s in out])
    print(json.dumps({"times": times, "cpu": cpu, "answers": answers}), flush=True)
"""

KINDS = ("search", "search public", "suggest", "suggest public", "retrieve")


def start(root: Path, index_dir: Path, cache: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root.resolve()), str(index_dir), str(cache)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(root.resolve()),
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root.resolve())})
    proc.stdin.write(json.dumps(TICKETS) + "\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{root}: the child exited ({proc.wait()})")
        if line.strip() == "ready":
            return proc


def ask(proc: subprocess.Popen, kind: str, n: int) -> dict:
    proc.stdin.write(json.dumps([kind, n]) + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="source tree A (e.g. a worktree of the code before)")
    parser.add_argument("--b", type=Path, default=REPO_ROOT, help="source tree B (default: this one)")
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--model-cache", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=len(TICKETS), help="calls of each kind per round and tree")
    args = parser.parse_args()
    procs = {"A": start(args.a, args.index_dir, args.model_cache), "B": start(args.b, args.index_dir, args.model_cache)}
    times = {(side, kind): [] for side in procs for kind in KINDS}
    cpu = {(side, kind): [] for side in procs for kind in KINDS}
    paired = {kind: [] for kind in KINDS}  # per round: B's median / A's median (both under the same load)
    differ = 0
    try:
        for round_no in range(args.rounds):
            order = ("A", "B") if round_no % 2 == 0 else ("B", "A")
            for kind in KINDS:
                out = {side: ask(procs[side], kind, args.calls) for side in order}
                for side in order:
                    times[(side, kind)] += out[side]["times"]
                    cpu[(side, kind)] += out[side]["cpu"]
                paired[kind].append(statistics.median(out["B"]["times"]) / statistics.median(out["A"]["times"]))
                differ += sum(a != b for a, b in zip(out["A"]["answers"], out["B"]["answers"]))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(timeout=30)
    print(f"A = {args.a}, B = {args.b}, index {args.index_dir}: {args.rounds} rounds x {args.calls} calls per kind, "
          f"interleaved; answers that differ between A and B: {differ}")
    print("| call | A p50 ms | B p50 ms | B/A p50 | A p90 ms | B p90 ms | B/A p90 | B/A per round (median) "
          "| A CPU p50 ms | B CPU p50 ms | B/A CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        a, b = times[("A", kind)], times[("B", kind)]
        pa, pb = statistics.median(a), statistics.median(b)
        qa, qb = statistics.quantiles(a, n=10)[-1], statistics.quantiles(b, n=10)[-1]
        ca, cb = statistics.median(cpu[("A", kind)]), statistics.median(cpu[("B", kind)])
        print(f"| {kind} | {pa:.2f} | {pb:.2f} | {pb / pa:.3f} | {qa:.2f} | {qb:.2f} | {qb / qa:.3f} | "
              f"{statistics.median(paired[kind]):.3f} | {ca:.2f} | {cb:.2f} | {cb / ca:.3f} |")


if __name__ == "__main__":
    main()
