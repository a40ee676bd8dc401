"""In-process latency of Searcher.search and .suggest of two source trees over one index, calls interleaved.

Each tree runs in a child process of its own (its code on sys.path first) that loads the service's query encoder and
a Searcher over --index-dir; the driver hands both the same calls in alternating rounds (the order alternated each
round), so that both see the same machine load, and prints p50 / p90 (wall) per call kind and tree, the ratio B / A,
the median of the per-round ratios (paired under the same load) and the process CPU time per call (less sensitive to
what else runs on the machine).
Kinds: search and suggest as the API calls them (encoding included), each without a filter and with the public-only
filter of keys without the internal scope, and `retrieve`: the retrieval of a suggest from a query vector computed
beforehand (the index's share alone), and each tree's floor of a search and a suggest (bench/request_floor.py: the
query encoder on the texts the service embeds + the dense search of KB_CANDIDATES), so that each tree's ratio to its
floor is printed from the same run. Calls come from the bench's own tickets (searches: their subjects), or with --sets
from ticket sets (searches: their `kind: query` items; suggests: the rest, with their language). Both children run
with one PYTHONHASHSEED: the marked sentences of a snippet sum floats over a set of words, so a tie can break
differently in two processes with different string hashes (about 1 snippet in 1,300 on the office KB). Usage:
  git worktree add /tmp/wt-before HEAD
  .venv/bin/python bench/searcher_ab.py --a /tmp/wt-before --b . --index-dir /tmp/office-idx [--rounds 20] \
      [--sets eval/tickets-dev eval/tickets-check] [--b-index-dir DIR --b-backend milvus]
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
        return open_backend(path, os.environ.get("KB_INDEX_BACKEND", "faiss")).open(model_id=model)
else:  # a tree from before kb.index (an editable install would find this tree's kb.index for it: not asked)
    from kb.store import open_current as open_index
settings = load_settings({}, index_dir=Path(index_dir), model_cache_dir=Path(cache))
encoder = make_embedder(settings)
encoder.load()
S = Searcher(open_index(Path(index_dir), encoder.model_id), encoder, settings)
from search.tickets import TicketQuery, detect_language, extract_codes
calls = json.loads(sys.stdin.readline())
searches, tickets = calls["searches"], calls["tickets"]
queries, vectors, floors = [], [], {"floor search": [], "floor suggest": []}
for t in tickets:
    ticket = build_query(t["subject"], t["body"], language=t.get("lang"), max_words=settings.query_max_words)
    query = make_query(ticket, f"{t['subject']}\n{t['body']}".strip(), S.glossary, S.embed)
    vectors.append((query, encoder.encode_queries([query.dense, *query.alternatives])[0]))
    floors["floor suggest"].append([query.dense, *query.alternatives])
for q in searches:
    query = make_query(TicketQuery(text=q, lexical=q, codes=tuple(extract_codes(q)), language=detect_language(q)),
                       q, S.glossary, S.embed)
    floors["floor search"].append([query.dense, *query.alternatives])
PUBLIC = Filters(public_only=True)
def floor(texts):
    return [sorted(S.version.dense_search(v, settings.candidates).items())[:3] for v in encoder.encode_queries(texts)]
def run(kind, i):
    if kind.startswith("floor"):
        texts = floors[kind][i % len(floors[kind])]
        return floor(texts)
    if kind.startswith("search"):
        q = searches[i % len(searches)]
        return S.search(q, k=10, filters=PUBLIC if kind.endswith("public") else Filters())
    t = tickets[i % len(tickets)]
    if kind.startswith("suggest"):
        return S.suggest(t["subject"], t["body"], language=t.get("lang"), k=5,
                         filters=PUBLIC if kind.endswith("public") else Filters())
    query, vector = vectors[i % len(vectors)]
    return S.candidates(query, vector=vector)
for kind in ("search", "suggest", "retrieve", "floor search", "floor suggest"):
    for i in range(len(searches) if "search" in kind else len(tickets)):
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
        if kind.startswith(("search", "suggest", "floor")):
            answers.append(json.dumps(out, sort_keys=True))  # the whole response: articles, scores, snippets
        else:
            answers.append([sorted((k, round(v, 5)) for k, v in s.items()) for s in out])
    print(json.dumps({"times": times, "cpu": cpu, "answers": answers}), flush=True)
"""

KINDS = ("search", "search public", "suggest", "suggest public", "retrieve", "floor search", "floor suggest")
HASH_SEED = "0"  # one string hash order for both trees (see above)


def read_calls(sets: list[Path] | None) -> dict:
    """{"searches": [text], "tickets": [{subject, body, lang}]} of the bench's tickets or of ticket sets."""
    if not sets:
        return {"searches": [t["subject"] for t in TICKETS], "tickets": TICKETS}
    items = [json.loads(line) for folder in sets for line in (folder / "queries.jsonl").open() if line.strip()]
    return {"searches": [i["text"] for i in items if i.get("kind") == "query"],
            "tickets": [{"subject": i.get("subject", ""), "body": i.get("text", ""), "lang": i.get("lang")}
                        for i in items if i.get("kind") != "query"]}


def start(root: Path, index_dir: Path, cache: Path, calls: dict, backend: str = "faiss") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root.resolve()), str(index_dir), str(cache)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(root.resolve()),
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root.resolve()),
                                 "PYTHONHASHSEED": HASH_SEED, "KB_INDEX_BACKEND": backend})
    proc.stdin.write(json.dumps(calls) + "\n")
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
    parser.add_argument("--b-index-dir", type=Path, help="B's index, when B changes what a build writes (e.g. a copy "
                        "whose ANN file B's code trained; default: --index-dir)")
    parser.add_argument("--a-backend", default="faiss", choices=("faiss", "milvus"), help="A's index backend")
    parser.add_argument("--b-backend", default="faiss", choices=("faiss", "milvus"),
                        help="B's index backend (milvus: the milvus-lite file in B's index folder)")
    parser.add_argument("--model-cache", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, help="calls of each kind per round and tree (default: one per search or "
                        "ticket)")
    parser.add_argument("--sets", type=Path, nargs="*", help="ticket sets (queries.jsonl) instead of the bench's tickets")
    args = parser.parse_args()
    calls = read_calls(args.sets)
    procs = {"A": start(args.a, args.index_dir, args.model_cache, calls, args.a_backend),
             "B": start(args.b, args.b_index_dir or args.index_dir, args.model_cache, calls, args.b_backend)}
    times = {(side, kind): [] for side in procs for kind in KINDS}
    cpu = {(side, kind): [] for side in procs for kind in KINDS}
    paired = {kind: [] for kind in KINDS}  # per round: B's median / A's median (both under the same load)
    differ = 0
    try:
        for round_no in range(args.rounds):
            order = ("A", "B") if round_no % 2 == 0 else ("B", "A")
            for kind in KINDS:
                n = args.calls or len(calls["searches"] if "search" in kind else calls["tickets"])
                out = {side: ask(procs[side], kind, n) for side in order}
                for side in order:
                    times[(side, kind)] += out[side]["times"]
                    cpu[(side, kind)] += out[side]["cpu"]
                paired[kind].append(statistics.median(out["B"]["times"]) / statistics.median(out["A"]["times"]))
                differ += sum(a != b for a, b in zip(out["A"]["answers"], out["B"]["answers"]))
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(timeout=30)
    load = os.getloadavg()
    b_index = f" (B: {args.b_index_dir})" if args.b_index_dir else ""
    b_index += f"; backends A {args.a_backend}, B {args.b_backend}"
    print(f"A = {args.a}, B = {args.b}, index {args.index_dir}{b_index}: {args.rounds} rounds of "
          f"{len(calls['searches'])} "
          f"searches and {len(calls['tickets'])} suggests{' from ' + ', '.join(map(str, args.sets)) if args.sets else ''}"
          f", interleaved; answers that differ between A and B: {differ}; load average at the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
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
    summary = {"differ": differ, "load_average": [round(x, 2) for x in load], "to_floor": {}}
    print("\nratio to the floor (p50 of the call / p50 of its floor, same tree, same run):")
    for kind in ("search", "suggest"):
        for side in ("A", "B"):
            ratio = statistics.median(times[(side, kind)]) / statistics.median(times[(side, f"floor {kind}")])
            summary["to_floor"][f"{side} {kind}"] = round(ratio, 3)
            print(f"  {side} {kind}: {ratio:.2f}x")
    summary["p50_ms"] = {f"{side} {kind}": round(statistics.median(times[(side, kind)]), 2)
                         for side in ("A", "B") for kind in KINDS}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
