"""One search and one suggest in process against their floor (the query encoder on the same texts + a flat search).

The floor of a call is what no implementation of the service can skip: the ONNX query encoding of exactly the texts
the service embeds for it (the query's dense text and, for an Indonesian ticket on a knowledge base with Indonesian
articles, its original text as well; built beforehand with the service's own make_query) and the index's dense search
of `KB_CANDIDATES` (100) for each vector. Searches are the `kind: query` items of the ticket sets (eval/tickets-dev and
eval/tickets-check by default), suggests the tickets (answerable and not, with their language as `kb eval` passes it).
Each call is timed right after its floor (their order alternated call by call), so both see the same load; the script
prints p50 / p99 (wall) of floor and service, their ratio, the median of the per-call ratios, and with --profile where
the service's time above the floor goes (cProfile of one more pass, cumulative ms per call of named stages; the
profiler inflates Python-heavy stages). --cold empties the sentence-marking memo (search.snippets.analysed) before
every service call, as for passages no request marked before; without it the warm-up has marked every passage the
timed calls mark. Usage:
  .venv/bin/python bench/request_floor.py --index-dir /tmp/office-idx [--rounds 5] [--profile] [--cold]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TARGET_RATIO = 1.3  # issue 15: a request within 1.3x its floor
DEFAULT_SETS = (REPO_ROOT / "eval" / "tickets-dev", REPO_ROOT / "eval" / "tickets-check")

# Stage -> (file suffix, function name) whose cumulative time is the stage's (cProfile, per call).
STAGES = {
    "query encoding (ONNX)": ("kb/onnx_query.py", "encode"),
    "dense search (FAISS)": ("faiss_sqlite/version.py", "dense_search"),
    "exact cosines of the other candidates": ("search/signals.py", "score"),
    "ticket cleaning + query building": ("search/tickets.py", "build_query"),
    "language detection": ("search/tickets.py", "detect_language"),
    "glossary rendering": ("search/glossary.py", "translate"),
    "lexical FTS5 (BM25)": ("faiss_sqlite/version.py", "lexical_search"),
    "  of which the term query (extract + prune)": ("search/lexical.py", "term_query"),
    "code phrase search": ("faiss_sqlite/version.py", "phrase_search"),
    "fusion": ("search/fusion.py", "combine"),
    "article grouping": ("search/searcher.py", "group_articles"),
    "passage fetch": ("faiss_sqlite/version.py", "passages"),
    "sentence marking": ("search/snippets.py", "mark_sentences"),
    "confidence": ("search/searcher.py", "assess"),
}


def read_items(folders) -> tuple[list[str], list[dict]]:
    """(search queries, tickets) of the ticket sets' queries.jsonl."""
    items = [json.loads(line) for folder in folders for line in (Path(folder) / "queries.jsonl").open() if line.strip()]
    queries = [i["text"] for i in items if i.get("kind") == "query"]
    tickets = [i for i in items if i.get("kind") != "query"]
    return queries, tickets


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stage_table(profiles: list[cProfile.Profile], calls: int) -> list[tuple[str, float]]:
    """(stage, cumulative ms per call) of STAGES from the profiles of the threads a call runs on."""
    stats = pstats.Stats(*profiles).stats
    out = []
    for stage, (suffix, name) in STAGES.items():
        total = sum(ct for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items()
                    if func == name and path.replace(os.sep, "/").endswith(suffix))
        out.append((stage, total * 1000 / calls))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--model-cache", type=Path, default=REPO_ROOT / "var" / "models")
    parser.add_argument("--sets", type=Path, nargs="+", default=list(DEFAULT_SETS), help="ticket sets (queries.jsonl)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over every query and ticket")
    parser.add_argument("--profile", action="store_true", help="then one cProfile pass: ms per call of each stage")
    parser.add_argument("--cold", action="store_true", help="empty the sentence-marking memo before every service call")
    parser.add_argument("--query-engine", default=None, help="KB_QUERY_ENGINE for this run (default: the service's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kb.embedder import make_embedder
    from kb.index import open_backend
    from kb.settings import load_settings
    from search.searcher import Searcher, make_query
    from search.signals import AHEAD
    from search.snippets import analysed
    from search.tickets import TicketQuery, build_query, detect_language, extract_codes

    settings = load_settings({"KB_QUERY_ENGINE": args.query_engine} if args.query_engine else {},
                             index_dir=args.index_dir, model_cache_dir=args.model_cache)
    encoder = make_embedder(settings)
    encoder.load()
    searcher = Searcher(open_backend(args.index_dir).open(model_id=encoder.model_id), encoder, settings)
    version, limit = searcher.version, settings.candidates
    queries, tickets = read_items(args.sets)

    def texts_of_search(q: str) -> list[str]:
        ticket = TicketQuery(text=q, lexical=q, codes=tuple(extract_codes(q)), language=detect_language(q))
        query = make_query(ticket, q, searcher.glossary, searcher.embed)
        return [query.dense, *query.alternatives]

    def texts_of_suggest(t: dict) -> list[str]:
        ticket = build_query(t.get("subject", ""), t.get("text", ""), language=t.get("lang"),
                             max_words=settings.query_max_words)
        query = make_query(ticket, f"{t.get('subject', '')}\n{t.get('text', '')}".strip(), searcher.glossary,
                           searcher.embed)
        return [query.dense, *query.alternatives]

    def floor(texts: list[str]) -> None:
        for vector in encoder.encode_queries(texts):
            version.dense_search(vector, limit)

    calls = {
        "search": [(texts_of_search(q), (lambda q=q: searcher.search(q, k=10))) for q in queries],
        "suggest": [(texts_of_suggest(t), (lambda t=t: searcher.suggest(t.get("subject", ""), t.get("text", ""),
                                                                        language=t.get("lang"), k=5)))
                    for t in tickets],
    }
    for kind, pairs in calls.items():  # warm-up: first calls pay for lazy loads
        for texts, call in pairs:
            floor(texts)
            call()

    load = os.getloadavg()
    print(f"index {args.index_dir}, {len(queries)} searches and {len(tickets)} suggests from "
          f"{', '.join(str(s) for s in args.sets)}, {args.rounds} rounds, each call paired with its floor"
          f"{', the marking memo emptied before each' if args.cold else ''}; "
          f"query engine {encoder.active_query_engine}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    results = {}
    print("| call | floor p50 ms | service p50 ms | ratio p50 | floor p99 ms | service p99 ms | ratio p99 "
          "| per-call ratio (median) | service CPU p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, pairs in calls.items():
        base, service, cpu, ratios = [], [], [], []
        for round_no in range(args.rounds):
            for i, (texts, call) in enumerate(pairs):
                order = (0, 1) if (i + round_no) % 2 == 0 else (1, 0)
                took = [0.0, 0.0]
                for which in order:
                    if which == 1 and args.cold:
                        analysed.cache_clear()
                    started, used = time.perf_counter(), time.process_time()
                    floor(texts) if which == 0 else call()
                    took[which] = (time.perf_counter() - started) * 1000
                    if which == 1:
                        cpu.append((time.process_time() - used) * 1000)
                base.append(took[0])
                service.append(took[1])
                ratios.append(took[1] / took[0])
        row = {"floor_p50": statistics.median(base), "service_p50": statistics.median(service),
               "floor_p99": percentile(base, 0.99), "service_p99": percentile(service, 0.99),
               "paired_ratio": statistics.median(ratios), "service_cpu_p50": statistics.median(cpu)}
        row["ratio_p50"] = row["service_p50"] / row["floor_p50"]
        row["ratio_p99"] = row["service_p99"] / row["floor_p99"]
        results[kind] = {k: round(v, 3) for k, v in row.items()}
        print(f"| {kind} | {row['floor_p50']:.2f} | {row['service_p50']:.2f} | {row['ratio_p50']:.2f} | "
              f"{row['floor_p99']:.2f} | {row['service_p99']:.2f} | {row['ratio_p99']:.2f} | "
              f"{row['paired_ratio']:.2f} | {row['service_cpu_p50']:.2f} |")
    print(f"target: service p50 within {TARGET_RATIO}x its floor")

    if args.profile:
        stages = {}
        for kind, pairs in calls.items():
            # the query encoding and dense search run on the kb-dense thread beside the lexical arm
            # (search/signals.py): profiled there too, or they would read 0
            profile, dense = cProfile.Profile(), cProfile.Profile()
            with AHEAD.turn() as pool:
                pool.submit(dense.enable).result()
            profile.enable()
            for _texts, call in pairs:
                if args.cold:
                    analysed.cache_clear()
                call()
            profile.disable()
            with AHEAD.turn() as pool:
                pool.submit(dense.disable).result()
            stages[kind] = stage_table([profile, dense], len(pairs))
        print("\nwhere a call's time goes (cProfile of the calling and the kb-dense thread, which overlap; cumulative "
              "ms per call; stages may nest):")
        print("| stage | search ms | suggest ms |")
        print("|---|---|---|")
        for k, (stage, _) in enumerate(stages["search"]):
            print(f"| {stage} | {stages['search'][k][1]:.2f} | {stages['suggest'][k][1]:.2f} |")
        results["stages_ms"] = {kind: {s: round(v, 2) for s, v in rows} for kind, rows in stages.items()}
    results["load_average"] = [round(x, 2) for x in load]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
